//go:build linux

package xdp

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/virtif"
)

// within runs fn and fails the test if it does not return within a
// generous bound (it must not hang; nothing is asserted about speed).
func within(t *testing.T, what string, fn func() error) error {
	t.Helper()
	ch := make(chan error, 1)
	go func() { ch <- fn() }()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s hangs", what)
		return nil
	}
}

// handlerResult is what an input handler reports from its call.
type handlerResult struct{ err error }

// A vif closed from its own input handler, on the first frame: Close
// returns, the NIC is torn down once the batch ends (Done, no program, no
// goroutine or descriptor left), and Open and Close elsewhere in the process
// keep working — through the bare Backend and through a virtif.Interface.
func TestIntegrationCloseFromOwnHandler(t *testing.T) {
	for _, api := range []string{"backend", "interface"} {
		t.Run(api, func(t *testing.T) {
			lab := labtest.NewT(t, netlab.Options{})
			// A second NIC: of existing NICs (VIRTIF_LAB_NICS) a second
			// lab like the first would take lab's pair away from it, so
			// there it asks for the multi-queue pair.
			otherOpts := netlab.Options{}
			if lab.OnNICs() {
				otherOpts.Queues = 2
			}
			other := labtest.NewT(t, otherOpts)
			check := leakCheck(t)
			closed := make(chan handlerResult, 1)
			var b *Backend
			var c *virtif.Cloner
			mac := net6(testMAC())
			switch api {
			case "backend":
				var err error
				first := true
				var self atomic.Pointer[Backend]
				b, err = openIn(t, lab.NS[netlab.Host], "xdp:"+lab.Link[netlab.Host], func([]byte) {
					if first {
						first = false
						closed <- handlerResult{self.Load().Close()}
					}
				})
				if err != nil {
					t.Fatal(err)
				}
				self.Store(b)
			case "interface":
				c = newCloner(t)
				v := newVif(t, lab, c, "")
				onFirstFrame(v.ifc, func() { closed <- handlerResult{v.ifc.Close()} })
				b, mac = v.b, v.ifc.HardwareAddr()
			}
			peer := openRaw(t, lab, netlab.Peer)
			for range 3 {
				peer.send(t, frame(lab, mac, "SELFCLOSE", 100))
			}
			select {
			case r := <-closed:
				if r.err != nil {
					t.Fatalf("Close from the handler: %v", r.err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Close from the vif's own input handler hangs")
			}
			select {
			case <-b.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("the NIC's RX goroutines still run after its last vif closed itself")
			}
			if b.Err() != nil {
				t.Fatalf("Err() = %v after a Close, want nil", b.Err())
			}
			if !waitFor(func() bool { return !xdpAttached(t, lab) }) {
				t.Fatal("XDP program left on the NIC")
			}
			// Open and Close in the process still work, on this NIC and on
			// another one.
			for _, l := range []*netlab.Lab{lab, other} {
				be, err := openIn(t, l.NS[netlab.Host], "xdp:"+l.Link[netlab.Host], nil)
				if err != nil {
					t.Fatalf("Open after a Close from a handler: %v", err)
				}
				if err := within(t, "Close", be.Close); err != nil {
					t.Fatal(err)
				}
			}
			if c != nil {
				if err := c.Close(); err != nil {
					t.Fatal(err)
				}
			}
			unix.Close(peer.fd)
			peer.fd = -1
			check()
		})
	}
}

func net6(b []byte) []byte { return b }

// Handlers that open and close other vifs of their NIC: vif A's handler
// closes vif B and opens vif C on the same NIC, then closes itself and
// re-opens a vif in its place; nothing hangs, the vifs that remain receive,
// and the last Close takes everything down.
func TestIntegrationHandlerOpensAndClosesVifs(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	c := newCloner(t)
	check := leakCheck(t)
	a := newVif(t, lab, c, "")
	bv := newVif(t, lab, c, "")
	done := make(chan error, 1)
	var cv *testVif
	var dv *testVif
	step := 0
	a.ifc.SetInput(func([]byte, bool) {
		step++
		var err error
		switch step {
		case 1:
			// Close of another vif, Open of a third on the same NIC.
			cv, err = closeThenOpen(t, lab, c, bv.ifc)
			done <- err
		case 2:
			// Close of itself while another vif (C) remains, then Open
			// in its place: the slot comes free only after the batch.
			dv, err = closeThenOpen(t, lab, c, a.ifc)
			done <- err
		}
	})
	peer := openRaw(t, lab, netlab.Peer)
	for i := 1; i <= 2; i++ {
		peer.send(t, frame(lab, a.ifc.HardwareAddr(), "STEP", 100))
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("step %d in the handler: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("step %d in the handler hangs", i)
		}
	}
	for _, v := range []*testVif{cv, dv} {
		if !receives(t, lab, v, peer, "ALIVE"+v.ifc.Name()) {
			t.Fatalf("%s, opened from a handler, receives nothing", v.ifc.Name())
		}
	}
	closeAll(t, lab, c, peer, check)
}

// The last vif on a NIC closes itself from its handler and opens a new vif
// on the same NIC before returning: the new vif keeps the NIC (the teardown
// the Close would have done is called off) and receives.
func TestIntegrationHandlerReplacesLastVif(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	c := newCloner(t)
	check := leakCheck(t)
	a := newVif(t, lab, c, "")
	done := make(chan error, 1)
	var nv *testVif
	onFirstFrame(a.ifc, func() {
		var err error
		nv, err = closeThenOpen(t, lab, c, a.ifc)
		done <- err
	})
	peer := openRaw(t, lab, netlab.Peer)
	peer.send(t, frame(lab, a.ifc.HardwareAddr(), "REPLACE", 100))
	if err := within(t, "the handler", func() error { return <-done }); err != nil {
		t.Fatalf("in the handler: %v", err)
	}
	if !receives(t, lab, nv, peer, "REPLACED") {
		t.Fatal("the vif opened in place of the last one receives nothing")
	}
	select {
	case <-nv.b.Done():
		t.Fatalf("the NIC was torn down under the new vif: %v", nv.b.Err())
	default:
	}
	if err := nv.b.Err(); err != nil {
		t.Fatalf("the NIC failed: %v", err)
	}
	closeAll(t, lab, c, peer, check)
}

// A Close from outside waits for the batch in progress; that batch's handler
// opening another vif on the NIC meanwhile must not deadlock with it (the
// Close waits without holding the process's NIC lock).
func TestIntegrationCloseWhileHandlerOpens(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	c := newCloner(t)
	a := newVif(t, lab, c, "")
	bv := newVif(t, lab, c, "")
	inHandler, proceed, opened := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	var nv *testVif
	onFirstFrame(a.ifc, func() {
		close(inHandler)
		<-proceed
		nv = newVifNoUp(t, lab, c)
		opened <- nv.ifc.Up()
	})
	peer := openRaw(t, lab, netlab.Peer)
	peer.send(t, frame(lab, a.ifc.HardwareAddr(), "HOLD", 100))
	select {
	case <-inHandler:
	case <-time.After(10 * time.Second):
		t.Fatal("no frame reached the handler")
	}
	closed := make(chan error, 1)
	go func() { closed <- bv.ifc.Close() }()
	time.Sleep(200 * time.Millisecond) // let the Close reach its wait for the batch
	close(proceed)
	if err := within(t, "Open from a handler while a Close waits for its batch", func() error { return <-opened }); err != nil {
		t.Fatal(err)
	}
	if err := within(t, "the Close", func() error { return <-closed }); err != nil {
		t.Fatal(err)
	}
	if !receives(t, lab, nv, peer, "OPENED") {
		t.Fatal("the vif opened from the handler receives nothing")
	}
}

// closeAll closes the cloner and the raw socket, and checks that nothing is
// left: no program on the NIC, no goroutine, descriptor or NIC entry.
func closeAll(t *testing.T, lab *netlab.Lab, c *virtif.Cloner, peer *rawSock, check func()) {
	t.Helper()
	if err := within(t, "Cloner.Close", c.Close); err != nil {
		t.Fatal(err)
	}
	if !waitFor(func() bool { return !xdpAttached(t, lab) }) {
		t.Fatal("XDP program left on the NIC")
	}
	unix.Close(peer.fd)
	peer.fd = -1
	check()
}

// closeThenOpen closes ifc and opens a new vif on the lab's NIC, up.
func closeThenOpen(t *testing.T, lab *netlab.Lab, c *virtif.Cloner, ifc *virtif.Interface) (*testVif, error) {
	if err := ifc.Close(); err != nil {
		return nil, err
	}
	v := newVifNoUp(t, lab, c)
	if v.ifc == nil {
		return v, errors.New("no vif")
	}
	return v, v.ifc.Up()
}

// onFirstFrame makes fn ifc's input handler for the first frame; later
// frames are ignored. One RX queue: the handler runs on one goroutine.
func onFirstFrame(ifc *virtif.Interface, fn func()) {
	first := true
	ifc.SetInput(func([]byte, bool) {
		if first {
			first = false
			fn()
		}
	})
}
