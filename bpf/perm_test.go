//go:build linux

package bpf

import (
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"golang.org/x/sys/unix"
)

// Load on a thread without capabilities fails with os.ErrPermission and says
// what is missing. Capabilities are per thread, so the test drops them on a
// locked thread that is thrown away afterwards.
func TestIntegrationLoadWithoutPrivilege(t *testing.T) {
	labtest.RequireRoot(t)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		for i := range data {
			data[i].Effective = 0
		}
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		s, err := Load(nil)
		if err == nil {
			s.Close()
			errc <- errors.New("Load succeeded without capabilities")
			return
		}
		if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), "CAP_BPF") {
			errc <- err
			return
		}
		t.Log(err)
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
