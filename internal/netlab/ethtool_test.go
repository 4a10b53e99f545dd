//go:build linux

package netlab_test

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	. "github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// SetTxChecksum changes what the kernel reports for the veth, both ways, on
// the side asked for only.
func TestIntegrationSetTxChecksum(t *testing.T) {
	l := labtest.NewT(t, Options{})
	get := func(side int) bool {
		t.Helper()
		var on bool
		if err := l.Do(side, func() (err error) { on, err = TxChecksum(l.Link[side]); return err }); err != nil {
			t.Fatal(err)
		}
		return on
	}
	if !get(Peer) || !get(Host) {
		t.Fatal("a new veth has tx checksum offload off: the test shows nothing")
	}
	if err := l.SetTxChecksum(Peer, false); err != nil {
		t.Fatal(err)
	}
	if get(Peer) || !get(Host) {
		t.Fatalf("after SetTxChecksum(Peer, false): peer %v host %v, want false true", get(Peer), get(Host))
	}
	if err := l.SetTxChecksum(Peer, true); err != nil {
		t.Fatal(err)
	}
	if !get(Peer) {
		t.Fatal("SetTxChecksum(Peer, true) left it off")
	}
	// The interface lives in the lab's namespace, not the test's.
	if err := SetTxChecksum(l.Link[Peer], false); !errors.Is(err, unix.ENODEV) {
		t.Fatalf("outside the namespace: %v, want ENODEV", err)
	}
	if err := SetTxChecksum("a-name-far-too-long", false); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("long name: %v, want EINVAL", err)
	}
}
