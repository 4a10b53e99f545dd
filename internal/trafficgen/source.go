//go:build linux

package trafficgen

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
)

// Source is what a test or benchmark sends frames with from one end of a
// lab: the live-frame generator (Live) where the kernel runs it, AF_PACKET
// (Packet) elsewhere. Both count a frame as sent once the kernel took it.
type Source interface {
	// Send sends count copies of frame as fast as it can.
	Send(frame []byte, count int) (int, error)
	// SendFor sends copies of frame for d.
	SendFor(frame []byte, d time.Duration) (int, error)
	// SendPaced sends count copies of frame at pps frames a second.
	SendPaced(frame []byte, count, pps int) (int, error)
	Close() error
}

// SourceIn opens the lab side's best Source: Live if LiveAvailable, else
// Packet. why is "" for Live, or says why the frames travel as skbs.
func SourceIn(l *netlab.Lab, side int) (s Source, why string, err error) {
	if lerr := LiveAvailable(); lerr != nil {
		p, err := PacketIn(l, side)
		if err != nil {
			return nil, "", err
		}
		return p, lerr.Error(), nil
	}
	live, err := LiveIn(l, side)
	if err != nil {
		return nil, "", err
	}
	return live, "", nil
}

// SendAll is Send that waits out a full device queue (ENOBUFS: the frames
// it refused were not sent, and are sent again).
func (p *Packet) SendAll(frame []byte, n int) (int, error) {
	total := 0
	for total < n {
		k, err := p.Send(frame, n-total)
		total += k
		if errors.Is(err, unix.ENOBUFS) {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// SendFor sends copies of frame for d, in batches, waiting out a full
// device queue.
func (p *Packet) SendFor(frame []byte, d time.Duration) (int, error) {
	total := 0
	for end := time.Now().Add(d); time.Now().Before(end); {
		n, err := p.SendAll(frame, packetBatch)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// SendPaced sends count copies of frame at about pps a second: each
// millisecond, what is due by then. A full device queue is waited out.
func (p *Packet) SendPaced(frame []byte, count, pps int) (int, error) {
	if pps <= 0 {
		return 0, fmt.Errorf("trafficgen: pace %d frames/s: %w", pps, unix.EINVAL)
	}
	start, total := time.Now(), 0
	for total < count {
		due := min(count, int(time.Since(start).Seconds()*float64(pps))+1)
		if due <= total {
			time.Sleep(time.Millisecond)
			continue
		}
		n, err := p.SendAll(frame, due-total)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

var (
	_ Source = (*Live)(nil)
	_ Source = (*Packet)(nil)
)
