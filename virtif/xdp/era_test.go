//go:build linux

package xdp

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
	"github.com/virtif-xdp/virtif-xdp/virtif"
)

// eraLab is a NIC whose vifs' handlers can be held on marked frames, so
// that frames pile up on the RX ring while vifs join and leave.
type eraLab struct {
	t     *testing.T
	lab   *netlab.Lab
	c     *virtif.Cloner
	peer  *rawSock
	holds [4]atomic.Bool // a frame marked HOLDk stops its RX goroutine while holds[k]
	mu    sync.Mutex
	wrong []string // frames a vif got that were not for its MAC
	got   map[string]int
	vifs  map[string]*testVif
}

// release lets every held handler go on. A test registers it to run before
// its vifs close: a test that fails while a handler is held must end, not
// wait for the held batch in Close for ever.
func (l *eraLab) release() {
	for k := range l.holds {
		l.holds[k].Store(false)
	}
}

// join creates a vif whose handler checks each frame is for its own MAC,
// and waits on a held marked frame.
func (l *eraLab) join(name string) *testVif {
	v := newVif(l.t, l.lab, l.c, "")
	l.vifs[name] = v
	mac := append([]byte(nil), v.ifc.HardwareAddr()...)
	v.ifc.SetInput(func(f []byte, _ bool) {
		l.mu.Lock()
		if !bytes.Equal(f[:6], mac) {
			l.wrong = append(l.wrong, fmt.Sprintf("%s (%x) got a frame for %x", name, mac, f[:6]))
		}
		l.got[name]++
		l.mu.Unlock()
		for k := range l.holds {
			for bytes.Contains(f, []byte(fmt.Sprint("HOLD", k))) && l.holds[k].Load() {
				time.Sleep(time.Millisecond)
			}
		}
	})
	return v
}

func (l *eraLab) count(name string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.got[name]
}

// leave closes v's backend in the background (its Close waits for the held
// batch) and returns once v is out of the NIC's table.
func (l *eraLab) leave(v *testVif) chan error {
	done := make(chan error, 1)
	go func() { done <- v.b.Close() }()
	if !waitFor(func() bool { return v.b.nic.vifs[v.b.slot].Load() != v.b }) {
		l.t.Fatal("vif still in the NIC's table")
	}
	time.Sleep(50 * time.Millisecond) // let updateSolo finish
	return done
}

func (l *eraLab) send(v *testVif, n int, marker string) {
	for range n {
		l.peer.send(l.t, frame(l.lab, v.ifc.HardwareAddr(), marker, 100))
	}
}

// hold sends v a frame that stops its RX goroutine until holds[k] is
// cleared, and waits until it is stopped: the frames sent after stay on
// the ring.
func (l *eraLab) hold(v *testVif, name string, k int) {
	before := l.count(name)
	l.holds[k].Store(true)
	l.send(v, 1, fmt.Sprint("HOLD", k))
	if !waitFor(func() bool { return l.count(name) > before }) {
		l.t.Fatalf("%s received nothing to hold on", name)
	}
}

// 6. Vifs join and leave while frames wait on the RX ring: every frame goes
// to the vif it was steered to or is counted, never to another vif — the
// lone vif's untagged frames after it left and another became alone, a
// departed vif's tagged frames after tagging stopped, and after a new vif
// took its slot.
func TestIntegrationTaggingTransitions(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	c, err := virtif.NewCloner(virtif.ClonerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l := &eraLab{t: t, lab: lab, c: c, peer: openRaw(t, lab, netlab.Peer), got: map[string]int{}, vifs: map[string]*testVif{}}
	defer l.release()
	wait := func(done chan error) {
		t.Helper()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("close hung")
		}
	}
	check := func(step string) {
		t.Helper()
		settle()
		l.mu.Lock()
		defer l.mu.Unlock()
		if len(l.wrong) > 0 {
			t.Fatalf("%s: %d frames reached the wrong vif, e.g. %s", step, len(l.wrong), l.wrong[0])
		}
		// The interface drops frames for another MAC before the handler
		// (IFiltered): a frame steered to the wrong vif shows there.
		for name, v := range l.vifs {
			if st := v.ifc.Stats(); st.IFiltered != 0 {
				t.Fatalf("%s: %s got %d frames for another MAC (rx_frames %d, handler saw %d)", step, name, st.IFiltered, stat(st, "rx_frames"), l.got[name])
			}
		}
	}

	// A alone: its frames go untagged. B joins, A leaves with its frames
	// still on the ring: B, now alone, must not get them.
	a := l.join("A")
	l.hold(a, "A", 0)
	l.send(a, 40, "ERA-A")
	b := l.join("B")
	doneA := l.leave(a)
	l.holds[0].Store(false)
	wait(doneA)
	check("A alone, then B alone")

	// B alone, C joins. Behind a held frame of B: a second held frame and a
	// full batch of B's, then C's frames (tagged). C leaves: B is alone
	// again (tagging stops); D joins once C's close is through, while C's
	// frames still wait; D must not get them by C's old slot.
	cv := l.join("C")
	l.hold(b, "B", 1)
	l.holds[2].Store(true)
	l.send(b, 1, "HOLD2")
	l.send(b, 63, "ERA-B")
	l.send(cv, 40, "ERA-C")
	doneC := l.leave(cv)
	l.holds[1].Store(false)
	wait(doneC)
	d := l.join("D")
	l.holds[2].Store(false)
	check("C left with tagged frames waiting, D joined")

	// D leaves with tagged frames waiting: B alone again.
	l.hold(d, "D", 3)
	l.send(d, 40, "ERA-D")
	doneD := l.leave(d)
	l.holds[3].Store(false)
	wait(doneD)
	check("D left, B alone")

	// B still receives its own frames, and the frames that had nowhere to
	// go were counted.
	before := l.count("B")
	l.send(b, 10, "ERA-B2")
	if !waitFor(func() bool { return l.count("B") >= before+10 }) {
		t.Fatal("B stopped receiving its frames")
	}
	st := b.ifc.Stats()
	t.Logf("rx_unclaimed %d, rx_untagged %d, received %v; %v", stat(st, "rx_unclaimed"), stat(st, "rx_untagged"), l.got, st.Backend)
	if stat(st, "rx_unclaimed")+stat(st, "rx_untagged") == 0 {
		t.Fatal("frames of departed vifs were neither delivered nor counted")
	}
	for _, v := range []*testVif{a, cv, d} {
		_ = v.ifc.Close()
	}
}

// 6, under traffic: while the peer floods vif A, vifs join, receive and
// answer from their handlers, and leave, many times. No vif ever gets a
// frame for another MAC (the interface would count it in IFiltered), and
// afterwards A's queue has all its TX frames back.
func TestIntegrationJoinLeaveUnderTraffic(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	a := newVif(t, lab, nil, "")
	peer := openRaw(t, lab, netlab.Peer)
	gen := sourceIn(t, lab)
	flood := trafficgen.UDPFrame(a.ifc.HardwareAddr(), lab.MAC[netlab.Peer], peerIP, vifIP, 9, 9, 64)
	stop := make(chan struct{})
	floodDone := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				floodDone <- nil
				return
			default:
			}
			if _, err := gen.SendFor(flood, 50*time.Millisecond); err != nil {
				floodDone <- err
				return
			}
		}
	}()
	var all []*testVif
	check := func(when string) {
		t.Helper()
		for _, v := range append(all, a) {
			if st := v.ifc.Stats(); st.IFiltered != 0 {
				t.Fatalf("%s: %s got %d frames for another MAC", when, v.ifc.Name(), st.IFiltered)
			}
		}
	}
	for cycle := range 30 {
		var vs []*testVif
		for range 1 + cycle%3 { // one to three vifs beside A
			v := newVif(t, lab, a.c, "")
			ifc := v.ifc
			ifc.SetInput(func(in []byte, _ bool) {
				out := append([]byte(nil), in...)
				copy(out[0:6], in[6:12])
				copy(out[6:12], in[0:6])
				_ = ifc.Output([][]byte{out})
			})
			vs = append(vs, v)
			all = append(all, v)
		}
		for _, v := range vs {
			for i := range 20 {
				f := frame(lab, v.ifc.HardwareAddr(), fmt.Sprintf("JL%02d-%02d", cycle, i), 100)
				for tries := 0; ; tries++ { // the flood fills the peer's queue: retry
					_, err := unix.Write(peer.fd, f)
					if err == nil {
						break
					}
					if !errors.Is(err, unix.ENOBUFS) || tries > 1000 {
						t.Fatal(err)
					}
					time.Sleep(100 * time.Microsecond)
				}
			}
		}
		for _, v := range vs {
			if err := v.ifc.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	if err := <-floodDone; err != nil {
		t.Fatalf("the flood stopped early: %v", err)
	}
	settle()
	check("after the churn")
	if free, inFlight := txIdle(a.b); free != txFrames(a.b) || inFlight != 0 {
		t.Fatalf("vif A's queue: %d of %d TX frames free, %d in flight", free, txFrames(a.b), inFlight)
	}
	st := a.ifc.Stats()
	t.Logf("A received %d frames; rx_unclaimed %d, rx_untagged %d", st.IPackets, stat(st, "rx_unclaimed"), stat(st, "rx_untagged"))
	if st.IPackets == 0 {
		t.Fatal("A received nothing of the flood")
	}
}
