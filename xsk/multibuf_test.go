//go:build linux

package xsk

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

func TestPacket(t *testing.T) {
	c := Desc{Options: PktContd}
	e := Desc{}
	for _, tc := range []struct {
		descs []Desc
		n     int
		whole bool
	}{
		{nil, 0, false},
		{[]Desc{e}, 1, true},
		{[]Desc{e, c, e}, 1, true},
		{[]Desc{c, c, e, e}, 3, true},
		{[]Desc{c, c}, 2, false},
	} {
		if n, whole := Packet(tc.descs); n != tc.n || whole != tc.whole {
			t.Errorf("Packet(%v) = %d, %v, want %d, %v", tc.descs, n, whole, tc.n, tc.whole)
		}
	}
	if !c.Continues() || e.Continues() {
		t.Error("Continues does not read XDP_PKT_CONTD")
	}
}

// fakeRX is a Socket whose RX ring is ordinary memory, with the test as the
// kernel producing descriptors.
func fakeRX(t *testing.T, n uint32) (*Socket, *ring[Desc]) {
	kernel, ours := ringPair[Desc](t, n, 0)
	s := &Socket{}
	s.rx = *ours
	return s, kernel
}

func produce(r *ring[Desc], descs ...Desc) {
	idx, got := r.reserve(uint32(len(descs)))
	r.put(idx, descs[:got])
	r.submit()
}

// A batch never ends inside a chain when it holds a whole packet before it:
// the cut chain stays on the ring, whole, for the next Receive. A chain
// longer than the batch comes alone and incomplete, its rest at the start of
// the next batch; RXConsumed keeps counting every descriptor.
func TestReceiveWholePackets(t *testing.T) {
	s, k := fakeRX(t, 16)
	c := func(a uint64) Desc { return Desc{Addr: a, Len: 1, Options: PktContd} }
	e := func(a uint64) Desc { return Desc{Addr: a, Len: 1} }
	produce(k, e(1), c(2), c(3), e(4), c(5), c(6), c(7), e(8))
	descs := make([]Desc, 5)
	if n := s.Receive(descs); n != 4 || descs[3].Addr != 4 {
		t.Fatalf("first batch: %d descriptors %v, want the single packet and the 3-chain", n, descs[:n])
	}
	if at := s.RXConsumed(); at != 4 {
		t.Fatalf("RXConsumed %d after 4 descriptors", at)
	}
	if n := s.Receive(descs); n != 4 || descs[0].Addr != 5 || descs[3].Addr != 8 {
		t.Fatalf("second batch: %d descriptors %v, want the 4-chain whole", n, descs[:n])
	}
	// Longer than the batch: returned incomplete, its rest comes next.
	produce(k, c(9), c(10), c(11), c(12), c(13), c(14), e(15), e(16))
	if n := s.Receive(descs); n != 5 || descs[0].Addr != 9 {
		t.Fatalf("long chain: %d descriptors %v", n, descs[:n])
	} else if _, whole := Packet(descs[:n]); whole {
		t.Fatal("a chain longer than the batch reported whole")
	}
	if n := s.Receive(descs); n != 3 || descs[0].Addr != 14 || descs[2].Addr != 16 {
		t.Fatalf("after the long chain: %d descriptors %v, want its rest and the next packet", n, descs[:n])
	}
	// A chain cut at the ring's end (a broken producer) is not held back
	// for ever: alone in its batch, it is returned incomplete.
	produce(k, e(17), c(18), c(19))
	if n := s.Receive(descs); n != 1 || descs[0].Addr != 17 {
		t.Fatalf("before a cut chain: %d descriptors %v", n, descs[:n])
	}
	if n := s.Receive(descs); n != 2 || descs[1].Addr != 19 {
		t.Fatalf("cut chain: %d descriptors %v", n, descs[:n])
	}
	if at := s.RXConsumed(); at != 19 {
		t.Fatalf("RXConsumed %d after 19 descriptors", at)
	}
}

// Stage counts descriptors and stages only whole chains: one that does not
// fit stays with the caller, and nothing of it reaches the ring.
func TestStageWholePackets(t *testing.T) {
	ours, kernel := ringPair[Desc](t, 8, 0)
	s := &Socket{}
	s.tx = *ours
	c := Desc{Len: 1, Options: PktContd}
	e := Desc{Len: 1}
	if n := s.Stage([]Desc{e, c, c, e, c, e}); n != 6 {
		t.Fatalf("Stage of 6 descriptors on 8 free slots = %d", n)
	}
	if n := s.Stage([]Desc{c, c, e}); n != 0 {
		t.Fatalf("a 3-chain on 2 free slots: staged %d", n)
	}
	if n := s.Stage([]Desc{e, c, c}); n != 1 {
		t.Fatalf("a packet and an unfinished chain: staged %d, want the packet", n)
	}
	if s.InFlight() != 7 {
		t.Fatalf("InFlight %d, want 7 descriptors", s.InFlight())
	}
	s.tx.submit()
	if _, got := kernel.peek(8); got != 7 {
		t.Fatalf("the kernel sees %d descriptors, want 7", got)
	}
}

// A 9000-byte MTU on veth with a frags program: a jumbo frame from the peer
// arrives as a chain of descriptors, byte for byte, and a chain transmitted
// reaches the peer as one frame.
func TestIntegrationSGJumbo(t *testing.T) {
	labtest.RequireKernel(t, 6, 6, "multi-buffer AF_XDP, XDP_USE_SG")
	labtest.RequireVethLab(t, "a veth pair of MTU 9000")
	l := newXSKLabFlags(t, netlab.Options{MTU: 9000}, unix.BPF_F_XDP_HAS_FRAGS)
	s := l.open(t, 0, &Config{SG: SGOn})
	if !s.SG() || s.SGError() != nil {
		t.Fatalf("SG %v, SGError %v", s.SG(), s.SGError())
	}
	p := l.packet(t, netlab.Peer)
	descs := make([]Desc, 64)
	for i, size := range []int{60, 2048, 9014} {
		want := testFrame(l.MAC[netlab.Host], l.MAC[netlab.Peer], uint32(i), size)
		p.send(t, want)
		var got []byte
		for deadline := time.Now().Add(5 * time.Second); got == nil && time.Now().Before(deadline); {
			n := s.Receive(descs)
			if n == 0 {
				if _, err := s.Wait(100 * time.Millisecond); err != nil {
					t.Fatal(err)
				}
				continue
			}
			for j := 0; j < n; {
				k, whole := Packet(descs[j:n])
				var f []byte
				for _, d := range descs[j : j+k] {
					f = append(f, s.Frame(d)...)
				}
				if whole && len(f) >= 14 && f[12] == testEtherType>>8 && f[13] == testEtherType&0xff {
					got = f
					if want := (size + 1791) / 1792; k != want {
						t.Errorf("%d-byte frame in %d descriptors, want %d", size, k, want)
					}
				}
				j += k
			}
			s.Release(descs[:n])
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%d-byte frame: received %d bytes, not the frame sent", size, len(got))
		}
	}

	buf := make([]byte, 10000)
	want := testFrame(l.MAC[netlab.Peer], l.MAC[netlab.Host], 7, 9014)
	var chain []Desc
	for off := 0; off < len(want); {
		addr, frame, ok := s.NextFrame()
		if !ok {
			t.Fatal("NextFrame: no free frame")
		}
		n := copy(frame, want[off:])
		off += n
		d := Desc{Addr: addr, Len: uint32(n)}
		if off < len(want) {
			d.Options = PktContd
		}
		chain = append(chain, d)
	}
	if sent, err := s.Transmit(chain); err != nil || sent != len(chain) {
		t.Fatalf("Transmit of a %d-descriptor chain = %d, %v", len(chain), sent, err)
	}
	if got := p.recv(t, buf); !bytes.Equal(got, want) {
		t.Fatalf("peer received %d bytes, not the 9014-byte frame sent", len(got))
	}
	if st, err := s.Stats(); err != nil || st.TXInvalidDescs != 0 {
		t.Fatalf("stats %+v, %v", st, err)
	}
}

// Without SG (the default) a frame longer than a UMEM frame is dropped by
// the kernel and counted, as before multi-buffer.
func TestIntegrationSGOffDropsJumbo(t *testing.T) {
	labtest.RequireKernel(t, 5, 18, "XDP programs for multi-buffer frames, BPF_F_XDP_HAS_FRAGS")
	labtest.RequireVethLab(t, "a veth pair of MTU 9000")
	l := newXSKLabFlags(t, netlab.Options{MTU: 9000}, unix.BPF_F_XDP_HAS_FRAGS)
	s := l.open(t, 0, nil)
	if s.SG() || s.SGError() != nil {
		t.Fatalf("SGOff: SG %v, SGError %v", s.SG(), s.SGError())
	}
	p := l.packet(t, netlab.Peer)
	p.send(t, testFrame(l.MAC[netlab.Host], l.MAC[netlab.Peer], 1, 9014))
	waitStats(t, s, func(st Stats) bool { return st.RXDropped == 1 })
	want := testFrame(l.MAC[netlab.Host], l.MAC[netlab.Peer], 2, 1500)
	p.send(t, want)
	if got := receiveOne(t, s); !bytes.Equal(got, want) {
		t.Fatal("the frame after the dropped jumbo frame differs")
	}
}

// A kernel without XDP_USE_SG (before 6.6: bind answers EINVAL to the
// unknown flag): SGAuto binds single-buffer and says why, SGOn fails with
// the kernel's error.
func TestIntegrationSGRefused(t *testing.T) {
	labtest.RequireKernel(t, 5, 18, "XDP programs for multi-buffer frames, BPF_F_XDP_HAS_FRAGS")
	labtest.RequireVethLab(t, "a veth pair of MTU 9000")
	l := newXSKLabFlags(t, netlab.Options{MTU: 9000}, unix.BPF_F_XDP_HAS_FRAGS)
	bindHook = func(fd int, sa unix.Sockaddr) error {
		if sa.(*unix.SockaddrXDP).Flags&unix.XDP_USE_SG != 0 {
			return unix.EINVAL
		}
		return unix.Bind(fd, sa)
	}
	t.Cleanup(func() { bindHook = unix.Bind })
	s := l.open(t, 0, &Config{SG: SGAuto})
	if s.SG() || !errors.Is(s.SGError(), unix.EINVAL) {
		t.Fatalf("SGAuto on a kernel without SG: SG %v, SGError %v", s.SG(), s.SGError())
	}
	if s.Mode() != ModeCopy {
		t.Errorf("mode %v", s.Mode())
	}
	s.Close()
	err := l.Do(netlab.Host, func() error {
		s, err := Open(l.Index[netlab.Host], 0, &Config{SG: SGOn})
		if err == nil {
			s.Close()
		}
		return err
	})
	if !errors.Is(err, unix.EINVAL) {
		t.Fatalf("SGOn on a kernel without SG: %v, want EINVAL", err)
	}
}

// The binds SG tries, best first: zero-copy is never traded for
// multi-buffer (ModeAuto tries zero-copy without it before the kernel's
// choice, which would fall back to copy on a driver whose zero-copy has no
// multi-buffer), and the last is the bind without SG, except for SGOn.
func TestBindAttempts(t *testing.T) {
	const zc, cp, sg = unix.XDP_ZEROCOPY, unix.XDP_COPY, unix.XDP_USE_SG
	for _, tc := range []struct {
		m    Mode
		sg   SGMode
		want []uint16
	}{
		{ModeAuto, SGOff, []uint16{0}},
		{ModeCopy, SGOff, []uint16{cp}},
		{ModeAuto, SGAuto, []uint16{zc | sg, zc, sg, 0}},
		{ModeCopy, SGAuto, []uint16{cp | sg, cp}},
		{ModeZeroCopy, SGAuto, []uint16{zc | sg, zc}},
		{ModeAuto, SGOn, []uint16{zc | sg, sg}},
		{ModeZeroCopy, SGOn, []uint16{zc | sg}},
	} {
		if got := bindAttempts(tc.m, tc.sg); !slices.Equal(got, tc.want) {
			t.Errorf("%v, SG %v: binds %#x, want %#x", tc.m, tc.sg, got, tc.want)
		}
	}
}
