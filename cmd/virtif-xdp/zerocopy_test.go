//go:build linux

package main

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// Issue 8 item 0 as a user meets it: `rxdrop --link xdp:NIC,mode=zerocopy`
// on a veth made the plain way (`ip link add A type veth peer name B`: a
// queue per CPU allocated, one in use; not the lab's one-queue veth), which
// cannot bind zero-copy, ends with exit 1 and an error naming zero-copy and
// what to use instead — no panic (it used to die with a nil pointer
// dereference in nic.shutdown) — and leaves no XDP program on the NIC.
func TestIntegrationZeroCopyRefusedOnVeth(t *testing.T) {
	labtest.RequireRoot(t)
	bin := commandBinary(t)
	lab := labtest.NewT(t, netlab.Options{})
	a, b := lab.Name+"a", lab.Name+"b"
	if err := lab.PlainVeth(netlab.Host, a, b); err != nil {
		t.Fatal(err)
	}
	attrs := func() *netlink.LinkAttrs {
		t.Helper()
		var la *netlink.LinkAttrs
		if err := lab.Do(netlab.Host, func() error {
			l, err := netlink.LinkByName(a)
			if err == nil {
				la = l.Attrs()
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return la
	}
	t.Logf("%s: %d RX queues allocated", a, attrs().NumRxQueues)
	cmd := exec.Command(bin, "rxdrop", "--netns", lab.NS[netlab.Host], "--link", "xdp:"+a+",mode=zerocopy", "--duration", "2s")
	var out, errb syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("rxdrop: %v, want exit 1\nstdout:\n%s\nstderr:\n%s", err, out.String(), errb.String())
	}
	stderr := errb.String()
	t.Logf("exit %d: %s", ee.ExitCode(), stderr)
	if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
		t.Fatalf("rxdrop panicked:\n%s", stderr)
	}
	if ee.ExitCode() != 1 {
		t.Errorf("exit %d, want 1", ee.ExitCode())
	}
	if !strings.Contains(stderr, "zero-copy") || !strings.Contains(stderr, "mode=copy") || !strings.Contains(stderr, a) {
		t.Errorf("stderr does not say that %s cannot bind zero-copy and what to use:\n%s", a, stderr)
	}
	if x := attrs().Xdp; x != nil && x.Attached {
		t.Errorf("XDP program %d left on %s", x.ProgId, a)
	}
}
