//go:build linux

package bpf

import (
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// Load on a thread without capabilities fails with os.ErrPermission and
// names the operation. Capabilities are per thread, so the test drops them on a
// locked thread that is thrown away afterwards.
func TestIntegrationLoadWithoutPrivilege(t *testing.T) {
	labtest.RequireRoot(t)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := labtest.DropCaps(); err != nil {
			errc <- err
			return
		}
		s, err := Load(nil)
		if err == nil {
			s.Close()
			errc <- errors.New("Load succeeded without capabilities")
			return
		}
		// The error names the operation; the remedy is the caller's.
		if !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), "load steering program") || strings.Contains(err.Error(), "CAP_") {
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
