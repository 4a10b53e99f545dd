//go:build linux

package xdp

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
)

// frameSource is what a test floods or paces the peer's frames with.
type frameSource interface {
	SendFor(frame []byte, d time.Duration) (int, error)
	SendPaced(frame []byte, count, pps int) (int, error)
	Close() error
}

// liveUnusable says why the live-frame generator cannot send from the peer
// of lab, or "" on veth. On the lab's existing NICs (virtio-net in
// internal/vmlab) the generator's XDP_TX goes out through the driver's
// ndo_xdp_xmit, which virtio-net refuses while the device has no XDP
// program of its own (nothing is sent), and which on Debian's 6.1 kernel
// (6.1.0-50) hands QEMU, after the first 64 frames, a descriptor with no
// bytes after the virtio-net header: QEMU reports "virtio-net nothing to
// send" and marks the device broken, after which every control command
// (an address list or promiscuous change) spins in virtnet_send_command
// for good (a soft lockup).
func liveUnusable(lab *netlab.Lab) string {
	if !lab.OnNICs() {
		return ""
	}
	return "the live-frame generator (BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES) cannot send from an existing NIC's peer: virtio-net transmits live frames only while the device has an XDP program, and on 6.1 they break QEMU's device (zero-length frames)"
}

// sourceIn opens a frame source on lab's peer side: the live-frame
// generator on veth, AF_PACKET on existing NICs (liveUnusable says why).
func sourceIn(t *testing.T, lab *netlab.Lab) frameSource {
	t.Helper()
	var s frameSource
	if liveUnusable(lab) == "" {
		gen, err := trafficgen.LiveIn(lab, netlab.Peer)
		if err != nil {
			t.Fatal(err)
		}
		s = gen
	} else {
		p, err := trafficgen.PacketIn(lab, netlab.Peer)
		if err != nil {
			t.Fatal(err)
		}
		s = packetSource{p}
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// packetSource drives AF_PACKET like the generator: a device queue that is
// full (ENOBUFS) is waited out, not counted as sent.
type packetSource struct{ p *trafficgen.Packet }

func (s packetSource) send(frame []byte, n int) (int, error) {
	sent, err := s.p.Send(frame, n)
	if errors.Is(err, unix.ENOBUFS) {
		time.Sleep(100 * time.Microsecond)
		err = nil
	}
	return sent, err
}

// sendAll sends n copies of frame, waiting out a full device queue (the
// peer's queue is shared with a flood or paced source).
func (s packetSource) sendAll(frame []byte, n int) error {
	for n > 0 {
		k, err := s.send(frame, n)
		if err != nil {
			return err
		}
		n -= k
	}
	return nil
}

func (s packetSource) SendFor(frame []byte, d time.Duration) (int, error) {
	total := 0
	for end := time.Now().Add(d); time.Now().Before(end); {
		n, err := s.send(frame, 32)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (s packetSource) SendPaced(frame []byte, count, pps int) (int, error) {
	start, total := time.Now(), 0
	for total < count {
		due := min(count, int(time.Since(start).Seconds()*float64(pps))+1)
		if due <= total {
			time.Sleep(time.Millisecond)
			continue
		}
		n, err := s.send(frame, due-total)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (s packetSource) Close() error { return s.p.Close() }
