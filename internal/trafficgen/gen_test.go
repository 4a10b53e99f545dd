//go:build linux

package trafficgen

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// liveLab is a lab with a counting sink on the host end and a live
// generator on the peer end.
func liveLab(tb testing.TB, action SinkAction) (*netlab.Lab, *Sink, *Live, []byte) {
	tb.Helper()
	lab := labtest.NewT(tb, netlab.Options{})
	sink, err := SinkIn(lab, netlab.Host, action)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sink.Close() })
	live, err := LiveIn(lab, netlab.Peer)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { live.Close() })
	frame := UDPFrame(lab.MAC[netlab.Host], lab.MAC[netlab.Peer],
		lab.Addr[netlab.Peer].Addr(), lab.Addr[netlab.Host].Addr(), 9, 9, 64)
	return lab, sink, live, frame
}

// waitCount polls the sink until it has seen want frames or stops moving;
// the caller compares the result.
func waitCount(t *testing.T, s *Sink, want uint64) uint64 {
	t.Helper()
	var last uint64
	for range 200 {
		n, err := s.Count()
		if err != nil {
			t.Fatal(err)
		}
		if n >= want || (n == last && n > 0) {
			return n
		}
		last = n
		time.Sleep(10 * time.Millisecond)
	}
	return last
}

// rxDropped reads the host end's rx_dropped: frames its peer's XDP_TX
// could not queue.
func rxDropped(t *testing.T, lab *netlab.Lab) uint64 {
	t.Helper()
	a, err := lab.LinkAttrs(netlab.Host)
	if err != nil {
		t.Fatal(err)
	}
	return a.Statistics.RxDropped
}

// Every frame sent is counted by the sink or, should the machine be too
// busy for the receiving NAPI to keep up, by veth as dropped.
func TestIntegrationLiveArrives(t *testing.T) {
	requireLive(t)
	lab, sink, live, frame := liveLab(t, SinkDrop)
	const n = 3_000_000 // more than one chunk
	dropped0 := rxDropped(t, lab)
	sent, err := live.Send(frame, n)
	if err != nil {
		t.Fatal(err)
	}
	if sent != n {
		t.Fatalf("sent %d, want %d", sent, n)
	}
	got := waitCount(t, sink, n)
	dropped := rxDropped(t, lab) - dropped0
	if got+dropped != n || got < n/2 {
		t.Fatalf("sink counted %d frames and veth dropped %d; generator sent %d", got, dropped, n)
	}
	if total, err := live.Sent(); err != nil || total != n {
		t.Fatalf("Sent() = %d, %v; want %d", total, err, n)
	}
}

// At a sustainable rate nothing is lost, and the pace is kept.
func TestIntegrationLivePaced(t *testing.T) {
	requireLive(t)
	_, sink, live, frame := liveLab(t, SinkDrop)
	for _, tc := range []struct{ n, pps int }{{20_000, 200_000}, {100, 1_000}} {
		before, err := sink.Count()
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		sent, err := live.SendPaced(frame, tc.n, tc.pps)
		took := time.Since(start)
		if err != nil || sent != tc.n {
			t.Fatalf("SendPaced(%d at %d/s) = %d, %v", tc.n, tc.pps, sent, err)
		}
		if got := waitCount(t, sink, before+uint64(tc.n)) - before; got != uint64(tc.n) {
			t.Fatalf("sink counted %d frames, generator sent %d", got, tc.n)
		}
		// Not a speed check: a pacer that ignored the rate would be done
		// in microseconds.
		if min := time.Duration(tc.n-64) * time.Second / time.Duration(tc.pps); took < min {
			t.Errorf("%d frames at %d/s took %v, less than %v", tc.n, tc.pps, took, min)
		}
	}
}

func TestIntegrationLiveSendFor(t *testing.T) {
	requireLive(t)
	_, sink, live, frame := liveLab(t, SinkDrop)
	start := time.Now()
	sent, err := live.SendFor(frame, 300*time.Millisecond)
	took := time.Since(start)
	if err != nil || sent == 0 {
		t.Fatalf("SendFor = %d, %v", sent, err)
	}
	if took < 300*time.Millisecond {
		t.Errorf("SendFor(300ms) returned after %v", took)
	}
	if got := waitCount(t, sink, uint64(sent)); got != uint64(sent) {
		t.Errorf("sink counted %d, generator sent %d", got, sent)
	}
	t.Logf("%d frames in %v", sent, took)
}

func TestIntegrationLiveErrors(t *testing.T) {
	_, _, live, frame := liveLab(t, SinkDrop)
	if _, err := live.Send(frame[:10], 1); !errors.Is(err, unix.EINVAL) {
		t.Errorf("10-byte frame: %v, want EINVAL", err)
	}
	if _, err := live.SendPaced(frame, 1, 0); !errors.Is(err, unix.EINVAL) {
		t.Errorf("0 pps: %v, want EINVAL", err)
	}
	if err := live.Pin(-1); !errors.Is(err, unix.EINVAL) {
		t.Errorf("Pin(-1): %v, want EINVAL", err)
	}
	if err := live.Pin(1 << 20); !errors.Is(err, unix.EINVAL) {
		t.Errorf("Pin(1<<20): %v, want EINVAL", err)
	}
	if err := live.Pin(0); err != nil {
		t.Errorf("Pin(0): %v", err)
	}
	if err := live.Close(); err != nil {
		t.Fatal(err)
	}
	if err := live.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := live.Send(frame, 1); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Send after Close: %v, want os.ErrClosed", err)
	}
	if err := live.Pin(0); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Pin after Close: %v, want os.ErrClosed", err)
	}
}

// requireLive skips a test that sends live frames on a kernel that refuses
// them (LiveAvailable says why); TestIntegrationLiveAvailableAgrees checks
// that the probe tells the truth.
func requireLive(tb testing.TB) {
	tb.Helper()
	if err := LiveAvailable(); err != nil {
		tb.Skip(err)
	}
}

// LiveAvailable's probe agrees with a real send: where it says live frames
// work, a frame sent arrives at the sink; where it says the kernel refuses
// them, Send fails and nothing arrives.
func TestIntegrationLiveAvailableAgrees(t *testing.T) {
	_, sink, live, frame := liveLab(t, SinkDrop)
	avail := LiveAvailable()
	if avail != nil && !errors.Is(avail, ErrLiveRefused) {
		t.Fatalf("LiveAvailable: %v, neither nil nor ErrLiveRefused", avail)
	}
	sent, err := live.Send(frame, 10)
	if avail == nil {
		if err != nil || sent != 10 {
			t.Fatalf("live frames available, but Send = %d, %v", sent, err)
		}
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if n, _ := sink.Count(); n >= 10 {
				return
			}
		}
		n, _ := sink.Count()
		t.Fatalf("live frames available, but the sink counted %d of 10", n)
	}
	if err == nil || sent != 0 {
		t.Fatalf("LiveAvailable says %v, but Send = %d, %v", avail, sent, err)
	}
	t.Logf("live frames refused here: %v", avail)
}

func TestIntegrationLiveNoSuchInterface(t *testing.T) {
	requireLive(t)
	lab := labtest.NewT(t, netlab.Options{})
	var live *Live
	if err := lab.Do(netlab.Peer, func() (err error) {
		live, err = NewLive(999_999)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	frame := UDPFrame(lab.MAC[netlab.Host], lab.MAC[netlab.Peer],
		lab.Addr[netlab.Peer].Addr(), lab.Addr[netlab.Host].Addr(), 9, 9, 64)
	if _, err := live.Send(frame, 1); !errors.Is(err, unix.ENODEV) {
		t.Errorf("missing ifindex: %v, want ENODEV", err)
	}
}

func TestIntegrationPacketByteForByte(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{NoAddr: true})
	var rx int
	if err := lab.Do(netlab.Host, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		rx = fd
		// Room for every frame, so none is lost before we read it.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: lab.Index[netlab.Host]})
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rx)
	tv := unix.NsecToTimeval(int64(2 * time.Second))
	if err := unix.SetsockoptTimeval(rx, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}

	gen, err := PacketIn(lab, netlab.Peer)
	if err != nil {
		t.Fatal(err)
	}
	defer gen.Close()

	const n = 200 // several sendmmsg batches, well under the backlog
	frames := make([][]byte, n)
	for i := range frames {
		frames[i] = UDPFrame(lab.MAC[netlab.Host], lab.MAC[netlab.Peer],
			lab.Addr[netlab.Peer].Addr(), lab.Addr[netlab.Host].Addr(), 4000, 4001, 60+i*7)
		SetSeq(frames[i], uint64(i))
	}
	sent, err := gen.SendFrames(frames)
	if err != nil || sent != n {
		t.Fatalf("SendFrames = %d, %v; want %d", sent, err, n)
	}
	// Same frame repeated through Send.
	if sent, err := gen.Send(frames[0], 3); err != nil || sent != 3 {
		t.Fatalf("Send = %d, %v; want 3", sent, err)
	}

	buf := make([]byte, 2048)
	next := 0
	repeats := 0
	for next < n || repeats < 3 {
		m, _, err := Recvfrom(rx, buf)
		if err != nil {
			t.Fatalf("after %d frames and %d repeats: recv: %v", next, repeats, err)
		}
		got := buf[:m]
		if _, ok := Seq(got); !ok || got[SeqOffset-6] != 4000>>8 {
			continue // the kernel's own traffic (IPv6 ND and such)
		}
		if next < n {
			if !bytes.Equal(got, frames[next]) {
				t.Fatalf("frame %d differs:\n got %x\nwant %x", next, got, frames[next])
			}
			next++
			continue
		}
		if !bytes.Equal(got, frames[0]) {
			t.Fatalf("repeat %d differs", repeats)
		}
		repeats++
	}
	if err := gen.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gen.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := gen.Send(frames[0], 1); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Send after Close: %v, want os.ErrClosed", err)
	}
}

func TestIntegrationSinkCountsIPv4Only(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{NoAddr: true})
	sink, err := SinkIn(lab, netlab.Host, SinkDrop)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	gen, err := PacketIn(lab, netlab.Peer)
	if err != nil {
		t.Fatal(err)
	}
	defer gen.Close()
	v4 := UDPFrame(lab.MAC[netlab.Host], lab.MAC[netlab.Peer], testSIP, testDIP, 1, 2, 60)
	other := bytes.Clone(v4)
	other[12], other[13] = 0x86, 0xdd
	if _, err := gen.Send(other, 5); err != nil {
		t.Fatal(err)
	}
	if _, err := gen.Send(v4, 10); err != nil {
		t.Fatal(err)
	}
	if got := waitCount(t, sink, 10); got != 10 {
		t.Fatalf("sink counted %d, want the 10 IPv4 frames only", got)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// Packet paces and floods as Live does (it stands in for Live where the
// kernel refuses live frames): every frame it counts as sent arrives, and
// a paced run takes at least the time its rate gives.
func TestIntegrationPacketPacedAndFor(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	sink, err := SinkIn(lab, netlab.Host, SinkDrop)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	p, err := PacketIn(lab, netlab.Peer)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	frame := UDPFrame(lab.MAC[netlab.Host], lab.MAC[netlab.Peer],
		lab.Addr[netlab.Peer].Addr(), lab.Addr[netlab.Host].Addr(), 9, 9, 64)
	arrived := func(want uint64) uint64 {
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if n, _ := sink.Count(); n >= want {
				return n
			}
		}
		n, _ := sink.Count()
		return n
	}
	start := time.Now()
	const n, pps = 2000, 20000
	if sent, err := p.SendPaced(frame, n, pps); err != nil || sent != n {
		t.Fatalf("SendPaced = %d, %v; want %d", sent, err, n)
	}
	if d := time.Since(start); d < 90*time.Millisecond {
		t.Errorf("%d frames at %d/s took %v, want at least 90ms", n, pps, d)
	}
	if got := arrived(n); got != n {
		t.Fatalf("sink counted %d of %d paced frames", got, n)
	}
	sent, err := p.SendFor(frame, 50*time.Millisecond)
	if err != nil || sent == 0 {
		t.Fatalf("SendFor = %d, %v", sent, err)
	}
	// A flood may overrun the receiving veth's ring (dropped there, in its
	// rx_dropped): arrivals are bounded by what was sent, not equal to it.
	if got := arrived(uint64(n + sent)); got <= n || got > uint64(n+sent) {
		t.Fatalf("sink counted %d after %d paced and %d flooded frames", got, n, sent)
	}
	if _, err := p.SendPaced(frame, 1, 0); !errors.Is(err, unix.EINVAL) {
		t.Errorf("0 pps: %v, want EINVAL", err)
	}
}
