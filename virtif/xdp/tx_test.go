//go:build linux

package xdp

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
)

// txFrames is how many TX frames a queue of the vif's NIC has: the UMEM's
// frames less those the fill ring holds.
func txFrames(b *Backend) int { return b.nic.cfg.Frames - b.nic.cfg.Ring }

// txIdle waits until the kernel has completed every frame given on b's
// queue and reports the queue's free and in-flight TX frames.
func txIdle(b *Backend) (free, inFlight int) {
	q := b.txq
	get := func() (int, int) {
		q.txMu.Lock()
		defer q.txMu.Unlock()
		q.sock.Complete()
		return q.sock.FreeFrames(), q.sock.InFlight()
	}
	waitFor(func() bool { _, f := get(); return f == 0 })
	return get()
}

// 8. Send, Flush and the setters race Close on the exported *Backend: each
// returns nil, ENOBUFS or net.ErrClosed, and nothing writes into a socket
// that Close has unmapped (this used to crash: Send checked closed before
// it took the TX lock).
//
// First deterministically: a Send held just before it takes the TX lock
// (sendLocking) while Close runs to the end — the NIC torn down, its UMEM
// unmapped — must return net.ErrClosed when it goes on. Then 20 rounds of
// Sends, Flushes and setters in six goroutines racing Close.
func TestIntegrationSendRacesClose(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	f := frame(lab, lab.MAC[netlab.Peer], "RACE", 200)
	t.Run("held", func(t *testing.T) {
		v := newVif(t, lab, nil, "")
		b := v.b
		waiting, resume := make(chan struct{}), make(chan struct{})
		var once sync.Once
		setSendLocking(t, func(sb *Backend) {
			if sb != b {
				return
			}
			once.Do(func() {
				close(waiting)
				<-resume
			})
		})
		errc := make(chan error, 1)
		go func() { errc <- b.Send([][]byte{f}) }()
		<-waiting
		// The Send is past where an unlocked closed check would be.
		if err := v.ifc.Close(); err != nil {
			t.Fatal(err)
		}
		if nicsOpen() != 0 {
			t.Fatal("the NIC is still served after its last vif closed")
		}
		close(resume)
		if err := <-errc; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Send held across Close: %v, want net.ErrClosed", err)
		}
	})
	for round := range 20 {
		v := newVif(t, lab, nil, ",ring=64,frames=256")
		b := v.b
		var wg sync.WaitGroup
		var bad atomic.Pointer[error]
		var sent atomic.Int64
		start := make(chan struct{})
		for g := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				group := net.HardwareAddr{0x01, 0, 0x5e, 0, byte(round), byte(g)}
				for i := 0; ; i++ {
					err := b.Send([][]byte{f})
					if err == nil {
						sent.Add(1)
					}
					if i%16 == 0 {
						if ferr := b.Flush(); ferr != nil && !errors.Is(ferr, net.ErrClosed) {
							bad.Store(&ferr)
						}
						_ = b.SetMulticast(group, i%32 == 0)
					}
					if errors.Is(err, net.ErrClosed) {
						return
					}
					if err != nil && !errors.Is(err, unix.ENOBUFS) {
						bad.Store(&err)
						return
					}
				}
			}()
		}
		close(start)
		for sent.Load() < 100 {
			time.Sleep(time.Millisecond)
		}
		if err := b.Close(); err != nil {
			t.Fatalf("round %d: close: %v", round, err)
		}
		wg.Wait()
		if p := bad.Load(); p != nil {
			t.Fatalf("round %d: %v", round, *p)
		}
		for _, err := range []error{b.Send([][]byte{f}), b.Flush(), b.SetHardwareAddr(net.HardwareAddr{2, 0, 0, 0, 0, 9}),
			b.SetPromisc(true), b.SetMulticast(net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}, true)} {
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("round %d: after Close: %v, want net.ErrClosed", round, err)
			}
		}
		_ = b.AppendStats(nil)
		if err := v.ifc.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// 3. Frames a vif sends from inside an RX batch (its Flush deferred to the
// batch end) while another goroutine closes it are sent, not lost with
// their UMEM frames: after many cycles on a NIC shared with a vif A, A's
// queue has every TX frame back and A sends a full UMEM's worth without
// ENOBUFS.
func TestIntegrationCloseDuringBatchFreesTX(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	const opts = ",ring=256,frames=512"
	a := newVif(t, lab, nil, opts)
	peer := openRaw(t, lab, netlab.Peer)
	total := txFrames(a.b)
	for cycle := range 20 {
		bv := newVif(t, lab, a.c, opts)
		b, ifc := bv.b, bv.ifc
		trigger := make(chan struct{})
		var once sync.Once
		ifc.SetInput(func(in []byte, _ bool) {
			out := append([]byte(nil), in...)
			copy(out[0:6], in[6:12])
			copy(out[6:12], in[0:6])
			_ = ifc.Output([][]byte{out}) // Flush deferred: we are in the batch
			once.Do(func() {
				close(trigger)
				// Hold the batch until the vif is out of the NIC's table:
				// the batch's end then finds nobody to flush for.
				for b.nic.vifs[b.slot].Load() == b {
					time.Sleep(time.Millisecond)
				}
			})
		})
		closed := make(chan error, 1)
		go func() { <-trigger; closed <- b.Close() }()
		for i := range 8 {
			peer.send(t, frame(lab, ifc.HardwareAddr(), fmt.Sprintf("CYC%02d-%d", cycle, i), 100))
		}
		select {
		case err := <-closed:
			if err != nil {
				t.Fatalf("cycle %d: close: %v", cycle, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("cycle %d: no frame reached vif B, or its close hung", cycle)
		}
		if err := ifc.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if free, inFlight := txIdle(a.b); free != total || inFlight != 0 {
		t.Fatalf("vif A's queue: %d of %d TX frames free, %d in flight", free, total, inFlight)
	}
	sink, err := trafficgen.SinkIn(lab, netlab.Peer, trafficgen.SinkDrop)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	f := frame(lab, lab.MAC[netlab.Peer], "AFTER", 100)
	for i := range 2 * total {
		if err := a.b.Send([][]byte{f}); err != nil {
			t.Fatalf("vif A, frame %d of %d: %v", i, 2*total, err)
		}
		if i%32 == 31 {
			if err := a.b.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
}
