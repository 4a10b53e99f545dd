//go:build linux

package main

import (
	"errors"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// Without privileges, bringing up vif0 fails with an error that says what
// to do once: the libraries name the operation, the command the remedy.
func TestIntegrationPrivilegeHintOnce(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	var openErr error
	if err := lab.Do(netlab.Host, func() error {
		// Capabilities are per thread; Do throws the thread away.
		if err := labtest.DropCaps(); err != nil {
			return err
		}
		v, err := openVif(vifSetup{link: "xdp:" + lab.Link[netlab.Host]})
		if err == nil {
			v.Close()
		}
		openErr = err
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(openErr, os.ErrPermission) {
		t.Fatalf("openVif without capabilities: %v, want os.ErrPermission", openErr)
	}
	msg := openErr.Error()
	if n := strings.Count(msg, "CAP_NET_ADMIN"); n != 1 || !strings.Contains(msg, "run as root") {
		t.Fatalf("the remedy appears %d times, want once with \"run as root\": %s", n, msg)
	}
	t.Log(msg)
}

// A kernel without AF_XDP gets the remedy from the command.
func TestRootHintAFXDP(t *testing.T) {
	err := withRootHint(os.NewSyscallError("socket AF_XDP", unix.EAFNOSUPPORT))
	if !errors.Is(err, unix.EAFNOSUPPORT) || !strings.Contains(err.Error(), "CONFIG_XDP_SOCKETS") {
		t.Fatalf("withRootHint(EAFNOSUPPORT) = %v", err)
	}
}
