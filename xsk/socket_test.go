//go:build linux

package xsk

import (
	"bytes"
	"errors"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

func TestIntegrationReceive(t *testing.T) {
	l := newXSKLab(t, netlab.Options{})
	s := l.open(t, 0, nil)
	if s.Mode() != ModeCopy {
		t.Errorf("veth with ModeAuto bound %v, want copy", s.Mode())
	}
	p := l.packet(t, netlab.Peer)
	for i, size := range []int{60, 61, 128, 1000, 1514} {
		want := testFrame(l.MAC[netlab.Host], l.MAC[netlab.Peer], uint32(i), size)
		p.send(t, want)
		got := receiveOne(t, s)
		if !bytes.Equal(got, want) {
			t.Fatalf("frame %d (%d bytes): received %d bytes, differ:\n got %x\nwant %x", i, size, len(got), got, want)
		}
	}
}

func TestIntegrationTransmit(t *testing.T) {
	l := newXSKLab(t, netlab.Options{})
	s := l.open(t, 0, nil)
	p := l.packet(t, netlab.Peer)
	buf := make([]byte, 2048)
	for i, size := range []int{60, 64, 512, 1514} {
		want := testFrame(l.MAC[netlab.Peer], l.MAC[netlab.Host], uint32(i), size)
		addr, frame, ok := s.NextFrame()
		if !ok {
			t.Fatal("NextFrame: no free frame")
		}
		n := copy(frame, want)
		sent, err := s.Transmit([]Desc{{Addr: addr, Len: uint32(n)}})
		if err != nil || sent != 1 {
			t.Fatalf("Transmit = %d, %v", sent, err)
		}
		got := p.recv(t, buf)
		if !bytes.Equal(got, want) {
			t.Fatalf("frame %d: peer received\n %x\nwant %x", i, got, want)
		}
	}
	for s.InFlight() > 0 {
		if s.Complete() == 0 {
			if err := s.Kick(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// ModeAuto binds on every NIC, zero-copy where the driver can and copy
// otherwise, whatever error the driver gives for zero-copy (virtio-net on
// 7.x answers EINVAL without iommu_platform), and says which: the kernel
// lab's matrix shows it per kernel and NIC.
func TestIntegrationAutoBind(t *testing.T) {
	l := newXSKLab(t, netlab.Options{})
	s := l.open(t, 0, &Config{Mode: ModeAuto})
	if m := s.Mode(); m != ModeCopy && m != ModeZeroCopy {
		t.Fatalf("ModeAuto bound as %v", m)
	}
	t.Logf("%s queue 0: ModeAuto bound %v", l.Link[netlab.Host], s.Mode())
}

func TestIntegrationZeroCopyRefused(t *testing.T) {
	l := newXSKLab(t, netlab.Options{})
	labtest.RequireVeth(t, l.Lab, "veth's refusal of zero-copy (EOPNOTSUPP)")
	err := l.Do(netlab.Host, func() error {
		s, err := Open(l.Index[netlab.Host], 0, &Config{Mode: ModeZeroCopy})
		if err == nil {
			s.Close()
		}
		return err
	})
	if !errors.Is(err, unix.EOPNOTSUPP) {
		t.Fatalf("ModeZeroCopy on veth: %v, want EOPNOTSUPP", err)
	}
	t.Logf("refused as expected: %v", err)
	// The queue must still be usable afterwards.
	s := l.open(t, 0, &Config{Mode: ModeCopy})
	if s.Mode() != ModeCopy {
		t.Fatalf("mode %v", s.Mode())
	}
}

func TestIntegrationCloseTwice(t *testing.T) {
	l := newXSKLab(t, netlab.Options{})
	s := l.open(t, 0, nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Stats(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Stats after Close: %v", err)
	}
	if _, err := s.Wait(0); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Wait after Close: %v", err)
	}
	if n := s.Receive(make([]Desc, 4)); n != 0 {
		t.Fatalf("Receive after Close: %d", n)
	}
	if _, _, ok := s.NextFrame(); ok {
		t.Fatal("NextFrame after Close")
	}
	if _, err := s.Transmit([]Desc{{}}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Transmit after Close: %v", err)
	}
}

// Stats and Wakeup may race with Close (run with -race).
func TestIntegrationStatsDuringClose(t *testing.T) {
	l := newXSKLab(t, netlab.Options{})
	for range 20 {
		s := l.open(t, 0, &Config{UMEM: UMEMConfig{NumFrames: 128, FillSize: 64, CompletionSize: 64}, RXSize: 64, TXSize: 64})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				_, err := s.Stats()
				_ = s.Wakeup()
				if errors.Is(err, net.ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		<-done
	}
}

// The kernel frees a closed socket's hold on its queue asynchronously; an
// immediate re-open must not fail with EBUSY.
func TestIntegrationReopenSameQueue(t *testing.T) {
	l := newXSKLab(t, netlab.Options{})
	retries := countBindRetries(t)
	for i := range 30 {
		var s *Socket
		err := l.Do(netlab.Host, func() (err error) {
			s, err = Open(l.Index[netlab.Host], 0, &Config{UMEM: UMEMConfig{NumFrames: 256, FillSize: 128, CompletionSize: 128}, RXSize: 128, TXSize: 128})
			return err
		})
		if err != nil {
			t.Fatalf("open %d right after close: %v", i, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("30 reopens, %d EBUSY retries", retries.Load())
	// And it still works.
	s := l.open(t, 0, nil)
	p := l.packet(t, netlab.Peer)
	want := testFrame(l.MAC[netlab.Host], l.MAC[netlab.Peer], 7, 100)
	p.send(t, want)
	if got := receiveOne(t, s); !bytes.Equal(got, want) {
		t.Fatalf("after reopen: got %x", got)
	}
}

// A second socket on a queue that is really in use fails with EBUSY once
// the retries are spent.
func TestIntegrationQueueBusy(t *testing.T) {
	l := newXSKLab(t, netlab.Options{})
	l.open(t, 0, nil)
	err := l.Do(netlab.Host, func() error {
		s, err := Open(l.Index[netlab.Host], 0, nil)
		if err == nil {
			s.Close()
		}
		return err
	})
	if !errors.Is(err, unix.EBUSY) {
		t.Fatalf("second socket on a busy queue: %v, want EBUSY", err)
	}
}

func TestIntegrationOpenErrors(t *testing.T) {
	l := newXSKLab(t, netlab.Options{})
	for _, tc := range []struct {
		name           string
		ifindex, queue int
		cfg            *Config
		want           error
	}{
		{"no such interface", 9999, 0, nil, unix.ENODEV},
		{"no such queue", l.Index[netlab.Host], 5, nil, unix.EINVAL},
		{"frame size not a power of two", l.Index[netlab.Host], 0, &Config{UMEM: UMEMConfig{FrameSize: 3000}}, unix.EINVAL},
		{"fewer frames than the fill ring", l.Index[netlab.Host], 0, &Config{UMEM: UMEMConfig{NumFrames: 16}}, unix.EINVAL},
		{"bad mode", l.Index[netlab.Host], 0, &Config{Mode: 7}, unix.EINVAL},
	} {
		err := l.Do(netlab.Host, func() error {
			s, err := Open(tc.ifindex, tc.queue, tc.cfg)
			if err == nil {
				s.Close()
			}
			return err
		})
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// The kernel counters move when provoked (five of the six; see below).
func TestIntegrationStats(t *testing.T) {
	l := newXSKLab(t, netlab.Options{})
	p := l.packet(t, netlab.Peer)
	frame := testFrame(l.MAC[netlab.Host], l.MAC[netlab.Peer], 1, 60)

	// Fill ring of 8 frames, never released: the ninth frame finds the
	// fill ring empty and is dropped.
	s := l.open(t, 0, &Config{UMEM: UMEMConfig{NumFrames: 64, FillSize: 8}, RXSize: 64})
	for range 20 {
		p.send(t, frame)
	}
	st := waitStats(t, s, func(st Stats) bool { return st.RXFillRingEmptyDescs > 0 && st.RXDropped > 0 })
	t.Logf("fill ring exhausted: %+v", st)
	s.Close()

	// RX ring of 4 with plenty of fill: the fifth frame finds it full.
	s = l.open(t, 0, &Config{UMEM: UMEMConfig{NumFrames: 64, FillSize: 32}, RXSize: 4})
	for range 20 {
		p.send(t, frame)
	}
	st = waitStats(t, s, func(st Stats) bool { return st.RXRingFull > 0 })
	t.Logf("RX ring full: %+v", st)

	// A kick on an empty TX ring; a descriptor past the frame's end.
	if _, err := s.Transmit(nil); err != nil {
		t.Fatal(err)
	}
	addr, _, _ := s.NextFrame()
	if _, err := s.Transmit([]Desc{{Addr: addr, Len: uint32(s.FrameSize()) + 1}}); err != nil {
		t.Fatal(err)
	}
	st = waitStats(t, s, func(st Stats) bool { return st.TXRingEmptyDescs > 0 && st.TXInvalidDescs > 0 })
	t.Logf("TX: %+v", st)
	s.Close()

	// RXInvalidDescs is not provoked: on 6.x it reads the RX ring's
	// invalid count, which only the kernel produces into; a bad address on
	// the fill ring is counted on the fill queue, which XDP_STATISTICS
	// does not report.
}

func waitStats(t *testing.T, s *Socket, ok func(Stats) bool) Stats {
	t.Helper()
	var st Stats
	for range 500 {
		var err error
		if st, err = s.Stats(); err != nil {
			t.Fatal(err)
		}
		if ok(st) {
			return st
		}
		s.Wait(10 * time.Millisecond)
	}
	t.Fatalf("counters did not move: %+v", st)
	return st
}

// Busy polling and binding without need_wakeup both still carry frames
// both ways.
func TestIntegrationOptions(t *testing.T) {
	for _, cfg := range []*Config{
		{BusyPoll: 20, BusyPollBudget: 16},
		{DisableNeedWakeup: true},
		{UMEM: UMEMConfig{FrameSize: 4096, NumFrames: 512, FillSize: 256, CompletionSize: 256, Headroom: 64}, RXSize: 256, TXSize: 256},
	} {
		l := newXSKLab(t, netlab.Options{})
		s := l.open(t, 0, cfg)
		p := l.packet(t, netlab.Peer)
		want := testFrame(l.MAC[netlab.Host], l.MAC[netlab.Peer], 1, 200)
		p.send(t, want)
		if got := receiveOne(t, s); !bytes.Equal(got, want) {
			t.Fatalf("%+v: received %x", cfg, got)
		}
		want = testFrame(l.MAC[netlab.Peer], l.MAC[netlab.Host], 2, 200)
		addr, buf, ok := s.NextFrame()
		if !ok || len(buf) != s.FrameSize() {
			t.Fatalf("%+v: NextFrame %v, %d bytes", cfg, ok, len(buf))
		}
		n := copy(buf, want)
		if sent, err := s.Transmit([]Desc{{Addr: addr, Len: uint32(n)}}); sent != 1 || err != nil {
			t.Fatalf("%+v: Transmit %d, %v", cfg, sent, err)
		}
		if got := p.recv(t, make([]byte, 4096)); !bytes.Equal(got, want) {
			t.Fatalf("%+v: peer received %x", cfg, got)
		}
	}
}

// Descriptors that do not belong to the UMEM are refused without a panic.
func TestIntegrationForeignDescriptors(t *testing.T) {
	l := newXSKLab(t, netlab.Options{})
	s := l.open(t, 0, &Config{UMEM: UMEMConfig{NumFrames: 64, FillSize: 32}})
	for _, d := range []Desc{{Addr: 1 << 40, Len: 10}, {Addr: 64*2048 - 5, Len: 10}, {Addr: 64*2048 + 5, Len: 1}, {Addr: ^uint64(0), Len: 2}} {
		if f := s.Frame(d); f != nil {
			t.Errorf("Frame(%+v) = %d bytes", d, len(f))
		}
		if d.Addr >= 64*2048 {
			s.FreeFrame(d.Addr)
		}
	}
	if s.FreeFrames() != 32 {
		t.Errorf("FreeFrame accepted foreign addresses: %d free", s.FreeFrames())
	}
}

// When the interface goes away the kernel unbinds the socket; Wait then
// reports the socket's error instead of blocking on a silent descriptor.
func TestIntegrationInterfaceDeleted(t *testing.T) {
	l := newXSKLab(t, netlab.Options{})
	s := l.open(t, 0, nil)
	// Frames the peer sent before it went (ours, and IPv6 router
	// solicitations or MLD reports of a freshly up veth) still sit on the RX
	// ring: Wait reports those first, so receive them as an RX loop would.
	l.packet(t, netlab.Peer).send(t, testFrame(l.MAC[netlab.Host], l.MAC[netlab.Peer], 1, 100))
	if ready, err := s.Wait(5 * time.Second); !ready || err != nil {
		t.Fatalf("Wait for the frame sent before the delete: %v, %v", ready, err)
	}
	if err := l.DeleteLink(netlab.Peer); err != nil {
		t.Fatal(err)
	}
	var err error
	var descs [16]Desc
	drained := 0
	for range 100 {
		var ready bool
		if ready, err = s.Wait(20 * time.Millisecond); err != nil {
			break
		}
		if ready {
			n := s.Receive(descs[:])
			s.Release(descs[:n])
			drained += n
		}
	}
	if !errors.Is(err, unix.ENETDOWN) {
		t.Fatalf("Wait after the interface was deleted: %v, want ENETDOWN (%d frames received before)", err, drained)
	}
	if drained == 0 {
		t.Error("the frame sent before the delete was not received")
	}
	if _, err := s.Transmit(nil); !errors.Is(err, unix.ENXIO) {
		t.Errorf("Transmit after the interface was deleted: %v, want ENXIO", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// Close gives back every descriptor and mapping Open took.
func TestIntegrationCloseReleasesEverything(t *testing.T) {
	l := newXSKLab(t, netlab.Options{})
	count := func() (fds, maps int) {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		m, err := os.ReadFile("/proc/self/maps")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents), bytes.Count(m, []byte("\n"))
	}
	openClose := func() {
		err := l.Do(netlab.Host, func() error {
			s, err := Open(l.Index[netlab.Host], 0, nil)
			if err != nil {
				return err
			}
			return s.Close()
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	openClose() // warm up whatever the runtime and netlab keep
	fds0, maps0 := count()
	for range 10 {
		openClose()
	}
	fds, maps := count()
	// A leak shows as growth that stays; fewer is a descriptor something
	// else (an earlier test's finalizer) closed meanwhile, and a transient
	// one (the runtime's, a finalizer's) goes within moments, as a leaked
	// socket's never does. CI saw both once.
	for deadline := time.Now().Add(time.Second); fds > fds0 && time.Now().Before(deadline); {
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
		fds, maps = count()
	}
	if fds > fds0 {
		t.Errorf("descriptors: %d before, %d after 10 open/close", fds0, fds)
	}
	// The Go heap may map a little more meanwhile; a leak of the five
	// mappings a socket makes (UMEM and four rings) would show as 50.
	if maps > maps0+10 {
		t.Errorf("mappings: %d before, %d after 10 open/close", maps0, maps)
	}
}
