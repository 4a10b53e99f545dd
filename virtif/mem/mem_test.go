package mem_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/virtif-xdp/virtif-xdp/virtif"
	"github.com/virtif-xdp/virtif-xdp/virtif/internal/testutil"
	"github.com/virtif-xdp/virtif-xdp/virtif/mem"
	"golang.org/x/sys/unix"
)

var bcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

type member struct {
	ifp *virtif.Interface
	got chan []byte
}

// attach creates an up interface on link with a handler feeding m.got.
func attach(t testing.TB, c *virtif.Cloner, link string) *member {
	t.Helper()
	ifp, err := c.Create()
	if err != nil {
		t.Fatal(err)
	}
	if err := ifp.SetLinkStr(link); err != nil {
		t.Fatal(err)
	}
	m := &member{ifp: ifp, got: make(chan []byte, 64)}
	ifp.SetInput(func(f []byte, _ bool) { m.got <- bytes.Clone(f) })
	if err := ifp.Up(); err != nil {
		t.Fatal(err)
	}
	return m
}

func newCloner(t testing.TB) *virtif.Cloner {
	c, err := virtif.NewCloner(virtif.ClonerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

func frame(dst, src net.HardwareAddr, payload string) [][]byte {
	return [][]byte{dst, src, {0x88, 0xb5}, []byte(payload)}
}

func (m *member) send(t testing.TB, dst net.HardwareAddr, payload string) {
	t.Helper()
	if err := m.ifp.Output(frame(dst, m.ifp.HardwareAddr(), payload)); err != nil {
		t.Fatal(err)
	}
}

// expect waits for the next frame and checks its payload. Each member's
// queue is FIFO, so receiving a later frame also proves no earlier one is
// pending.
func (m *member) expect(t testing.TB, payload string) {
	t.Helper()
	f := <-m.got
	if got := string(f[14:]); got != payload {
		t.Fatalf("%s got %q, want %q", m.ifp.Name(), got, payload)
	}
}

// A frame reaches every other member of its segment, not the sender
// (SIMPLEX) and not other segments.
func TestHub(t *testing.T) {
	c := newCloner(t)
	a, b, d := attach(t, c, "mem:hub-a"), attach(t, c, "mem:hub-a"), attach(t, c, "mem:hub-a")
	x, y := attach(t, c, "mem:hub-b"), attach(t, c, "mem:hub-b")
	if n := mem.Members("hub-a"); n != 3 {
		t.Errorf("hub-a has %d members", n)
	}
	a.send(t, bcast, "one")
	b.expect(t, "one")
	d.expect(t, "one")
	a.send(t, b.ifp.HardwareAddr(), "two") // unicast: d's interface filters it
	b.expect(t, "two")
	b.send(t, a.ifp.HardwareAddr(), "barrier a")
	a.expect(t, "barrier a") // a did not hear itself
	d.send(t, bcast, "barrier d")
	a.expect(t, "barrier d")
	b.expect(t, "barrier d")
	y.send(t, bcast, "barrier x")
	x.expect(t, "barrier x") // nothing crossed from hub-a
	b.send(t, bcast, "barrier 2")
	d.expect(t, "barrier 2") // d has seen everything sent before it
	a.expect(t, "barrier 2")
	st := d.ifp.Stats()
	if st.IFiltered != 2 || st.IPackets != 2 {
		t.Errorf("d stats %+v: want 2 broadcasts and the unicasts to b and a filtered", st)
	}
	// a sent "one" and "two"; d's queue got four frames (the unicasts to b
	// and a included: a hub repeats everything, the interface filters).
	if tx, rx := stat(a.ifp, "mem_tx"), stat(d.ifp, "mem_rx"); tx != 2 || rx != 4 {
		t.Errorf("a mem_tx = %d, d mem_rx = %d; want 2 and 4", tx, rx)
	}
}

// A member's full receive queue drops and counts, never blocks the sender.
func TestQueueFull(t *testing.T) {
	c := newCloner(t)
	a := attach(t, c, "mem:qf,queue=1")
	b := attach(t, c, "mem:qf,queue=1")
	entered, release := make(chan bool), make(chan bool)
	b.ifp.SetInput(func([]byte, bool) { entered <- true; <-release })
	a.send(t, bcast, "1")
	<-entered // b's only buffer is inside its handler
	a.send(t, bcast, "2")
	a.send(t, bcast, "3")
	if full := stat(b.ifp, "mem_rx_queue_full"); full != 2 {
		t.Errorf("mem_rx_queue_full = %d, want 2", full)
	}
	b.ifp.SetInput(func(f []byte, _ bool) { b.got <- bytes.Clone(f) })
	release <- true
	// The queue recovers: every frame sent is delivered or counted.
	for done := false; !done; {
		a.send(t, bcast, "4")
		for stat(a.ifp, "mem_tx") != stat(b.ifp, "mem_rx")+stat(b.ifp, "mem_rx_queue_full") {
			runtime.Gosched() // a frame is in flight; it must land or be counted
		}
		select {
		case <-b.got:
			done = true
		default:
		}
	}
}

func stat(ifp *virtif.Interface, name string) uint64 {
	return findStat(ifp.Stats().Backend, name)
}

// backendStat reads a backend's counter directly, also after its
// interface is destroyed.
func backendStat(r virtif.StatsReporter, name string) uint64 {
	return findStat(r.AppendStats(nil), name)
}

func findStat(l []virtif.Stat, name string) uint64 {
	v, _ := virtif.LookupStat(l, name)
	return v
}

// Destroy (Dying then Close) waits for the member's goroutine, and nothing
// is delivered afterwards. Every check is made where a late delivery would
// already show: Close has returned, so b's goroutine has ended and its
// counts are final; the frame queued behind the blocked one must be counted
// as dropped, not delivered; and once the witness d has a frame sent after
// Close, the hub has handed it to every member it still has.
func TestCloseWaits(t *testing.T) {
	c := newCloner(t)
	a, b, d := attach(t, c, "mem:cw"), attach(t, c, "mem:cw"), attach(t, c, "mem:cw")
	bb := b.ifp.Backend().(virtif.StatsReporter) // b's counters outlive its interface
	var inHandler atomic.Bool
	entered, release := make(chan bool), make(chan bool)
	b.ifp.SetInput(func([]byte, bool) {
		inHandler.Store(true)
		entered <- true
		<-release
		inHandler.Store(false)
	})
	a.send(t, bcast, "1")
	<-entered
	a.send(t, bcast, "2") // queued at b behind "1"
	closed := make(chan error, 1)
	go func() { closed <- b.ifp.Close() }()
	// A Close that does not wait returns within this window; one that
	// waits cannot until the handler is released.
	select {
	case err := <-closed:
		t.Errorf("Close returned (%v) while b's handler was still running", err)
		release <- true
	case <-time.After(200 * time.Millisecond):
		release <- true
		if err := <-closed; err != nil {
			t.Error(err)
		}
	}
	if inHandler.Load() {
		t.Error("Close returned before the receive goroutine finished")
	}
	rx, dying := backendStat(bb, "mem_rx"), backendStat(bb, "mem_rx_dying")
	if rx != 1 || dying != 1 {
		t.Errorf("b's queue: %d delivered, %d counted dropped when Close returned; want 1 and 1", rx, dying)
	}
	seen := func() uint64 { st := b.ifp.Stats(); return st.IPackets + st.IErrors + st.IDrops }
	if n := seen(); n != 1 {
		t.Errorf("b's interface saw %d frames, want 1", n)
	}
	if n := mem.Members("cw"); n != 2 {
		t.Errorf("cw has %d members after close, want 2", n)
	}
	a.send(t, bcast, "3")
	d.expect(t, "1")
	d.expect(t, "2")
	d.expect(t, "3") // the hub is done with "3"
	if n, r, dy := seen(), backendStat(bb, "mem_rx"), backendStat(bb, "mem_rx_dying"); n != 1 || r != rx || dy != dying {
		t.Errorf("after Close b saw %d frames (%d delivered, %d dropped), want no change", n, r, dy)
	}
	if err := b.ifp.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestLinkStrings(t *testing.T) {
	c := newCloner(t)
	for _, tc := range []struct {
		link string
		want unix.Errno
		key  string
	}{
		{"mem:", unix.EINVAL, "empty segment"},
		{"mem:x,queue=0", unix.EINVAL, "queue"},
		{"mem:x,queue=70000", unix.EINVAL, "queue"},
		{"mem:x,queue=abc", unix.EINVAL, "queue"},
		{"mem:x,colour=red", unix.EINVAL, "colour"},
		{"mem:x,queue=8", 0, ""},
	} {
		ifp, err := c.Create()
		if err != nil {
			t.Fatal(err)
		}
		err = ifp.SetLinkStr(tc.link)
		if tc.want == 0 {
			if err != nil {
				t.Errorf("%s: %v", tc.link, err)
			}
			continue
		}
		if !errors.Is(err, tc.want) || !strings.Contains(fmt.Sprint(err), tc.key) {
			t.Errorf("%s: error %v, want %v naming %q", tc.link, err, tc.want, tc.key)
		}
	}
}

// Unit-number mode with mem as the default scheme: vifN on segment "N".
func TestUnitMode(t *testing.T) {
	c, err := virtif.NewCloner(virtif.ClonerConfig{UnitMode: true, DefaultScheme: mem.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ifp, err := c.CreateUnit(4)
	if err != nil {
		t.Fatal(err)
	}
	if mem.Members("4") != 1 {
		t.Errorf("segment 4 has %d members", mem.Members("4"))
	}
	if err := c.Destroy(ifp.Name()); err != nil {
		t.Fatal(err)
	}
	if mem.Members("4") != 0 {
		t.Error("member left behind")
	}
}

// The relay allocates nothing in steady state.
func TestSendZeroAllocs(t *testing.T) {
	c := newCloner(t)
	a := attach(t, c, "mem:za")
	b := attach(t, c, "mem:za")
	b.ifp.SetInput(func([]byte, bool) {})
	segs := frame(bcast, a.ifp.HardwareAddr(), strings.Repeat("x", 1000))
	for range 2000 { // grow every buffer of b's queue
		_ = a.ifp.Output(segs)
	}
	if n := testing.AllocsPerRun(1000, func() { _ = a.ifp.Output(segs) }); n != 0 {
		t.Errorf("%v allocs per frame", n)
	}
}

func BenchmarkHub(b *testing.B) {
	c := newCloner(b)
	x := attach(b, c, "mem:bench")
	y := attach(b, c, "mem:bench")
	y.ifp.SetInput(func([]byte, bool) {})
	segs := frame(y.ifp.HardwareAddr(), x.ifp.HardwareAddr(), strings.Repeat("x", 50))
	b.ReportAllocs()
	for b.Loop() {
		if err := x.ifp.Output(segs); err != nil {
			b.Fatal(err)
		}
	}
}

// Members come and go while others send: no race, no panic, no frame
// delivered to a destroyed interface, and the segment ends empty.
func TestChurn(t *testing.T) {
	c := newCloner(t)
	a, b := attach(t, c, "mem:churn"), attach(t, c, "mem:churn")
	for _, m := range []*member{a, b} {
		m.ifp.SetInput(func([]byte, bool) {})
	}
	stop := make(chan struct{})
	done := make(chan error, 2)
	for _, m := range []*member{a, b} {
		go func() {
			segs := frame(bcast, m.ifp.HardwareAddr(), "churn")
			for {
				select {
				case <-stop:
					done <- nil
					return
				default:
				}
				if err := m.ifp.Output(segs); err != nil {
					done <- err
					return
				}
			}
		}()
	}
	for range 50 {
		ifp, err := c.Create()
		if err != nil {
			t.Fatal(err)
		}
		var closed atomic.Bool
		ifp.SetInput(func([]byte, bool) {
			if closed.Load() {
				t.Error("frame delivered after Close")
			}
		})
		if err := ifp.SetLinkStr("mem:churn"); err != nil {
			t.Fatal(err)
		}
		_ = ifp.Up()
		if err := ifp.Close(); err != nil {
			t.Fatal(err)
		}
		closed.Store(true)
	}
	close(stop)
	for range 2 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	_ = a.ifp.Close()
	_ = b.ifp.Close()
	if n := mem.Members("churn"); n != 0 {
		t.Errorf("%d members left", n)
	}
}

// An input handler that closes its own interface: Close completes (it does
// not wait for the receive goroutine it runs on), returns nil, nothing is
// delivered after it, and the goroutine ends once the handler returns.
func TestCloseFromHandler(t *testing.T) {
	c, err := virtif.NewCloner(virtif.ClonerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	a, b := attach(t, c, "mem:cfh"), attach(t, c, "mem:cfh")
	bb := b.ifp.Backend().(virtif.StatsReporter)
	goroutines := runtime.NumGoroutine()
	closed := make(chan error, 1)
	b.ifp.SetInput(func([]byte, bool) { closed <- b.ifp.Close() })
	ok := testutil.Within(t, "Close from b's own handler", func() {
		a.send(t, bcast, "1")
		a.send(t, bcast, "2") // may be queued at b: dropped, not delivered
		if err := <-closed; err != nil {
			t.Errorf("Close from the handler: %v", err)
		}
		for runtime.NumGoroutine() > goroutines { // b's receive goroutine ends (within's own replaces it in the count)
			time.Sleep(time.Millisecond)
		}
	})
	if !ok {
		return
	}
	if _, still := c.Interface(b.ifp.Name()); still || mem.Members("cfh") != 1 {
		t.Errorf("b still the cloner's (%v) or on the segment (%d members)", still, mem.Members("cfh"))
	}
	if rx := backendStat(bb, "mem_rx"); rx != 1 {
		t.Errorf("b delivered %d frames, want 1 (the one whose handler closed it)", rx)
	}
	if len(closed) != 0 {
		t.Error("handler called again after Close")
	}
	a.send(t, bcast, "3")
	if err := c.Close(); err != nil {
		t.Error(err)
	}
}

// A tap on a mem interface that calls the getters while the interface is
// closed under traffic in both directions: Close finishes.
func TestTapGettersDuringClose(t *testing.T) {
	c, err := virtif.NewCloner(virtif.ClonerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for round := range 10 {
		seg := fmt.Sprintf("mem:tgc%d", round)
		a, b := attach(t, c, seg), attach(t, c, seg)
		a.ifp.SetInput(func([]byte, bool) {})
		b.ifp.SetInput(func([]byte, bool) {})
		var calls atomic.Uint64
		tap := tapFunc(func([]byte, virtif.Direction) {
			_ = b.ifp.HardwareAddr()
			_, _ = b.ifp.LinkStr()
			_ = b.ifp.Stats()
			_, _ = c.Interface(b.ifp.Name())
			calls.Add(1)
		})
		if err := b.ifp.AddTap(tap); err != nil {
			t.Fatal(err)
		}
		var stop atomic.Bool
		var wg sync.WaitGroup
		for _, m := range []*member{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				segs := frame(bcast, m.ifp.HardwareAddr(), "tap")
				for !stop.Load() {
					if err := m.ifp.Output(segs); errors.Is(err, unix.ENXIO) {
						return // destroyed
					}
				}
			}()
		}
		ok := testutil.Within(t, "Close under traffic with a tap calling getters", func() {
			for calls.Load() < 100 {
				runtime.Gosched()
			}
			if err := b.ifp.Close(); err != nil {
				t.Error(err)
			}
			stop.Store(true)
			wg.Wait()
		})
		if !ok {
			return
		}
	}
	if err := c.Close(); err != nil {
		t.Error(err)
	}
}

type tapFunc func([]byte, virtif.Direction)

func (f tapFunc) Tap(b []byte, d virtif.Direction) { f(b, d) }
