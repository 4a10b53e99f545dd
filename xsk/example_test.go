//go:build linux

package xsk_test

import (
	"errors"
	"net"
	"time"

	"github.com/virtif-xdp/virtif-xdp/xsk"
)

// An RX loop for one queue: wait, take a batch, use the frames, give them
// back. An XDP program must redirect the queue's frames to s.FD() through an
// XSKMAP; Wakeup or Close from another goroutine ends the loop.
func Example_receive() {
	s, err := xsk.Open(2, 0, nil) // ifindex 2, queue 0, defaults
	if err != nil {
		return
	}
	defer s.Close()
	var descs [64]xsk.Desc
	for {
		n := s.Receive(descs[:])
		if n == 0 {
			if _, err := s.Wait(100 * time.Millisecond); errors.Is(err, net.ErrClosed) {
				return
			} else if err != nil {
				return // e.g. ENETDOWN: the interface went away
			}
			continue
		}
		for _, d := range descs[:n] {
			_ = s.Frame(d) // valid until Release
		}
		s.Release(descs[:n])
	}
}

// The TX path: copy a packet into a free frame, put it on the TX ring, and
// count what the full ring refused instead of losing it silently.
func Example_transmit() {
	s, err := xsk.Open(2, 0, &xsk.Config{Mode: xsk.ModeCopy})
	if err != nil {
		return
	}
	defer s.Close()
	packet := make([]byte, 60)
	var batch []xsk.Desc
	dropped := 0
	for range 32 {
		addr, buf, ok := s.NextFrame() // reaps completions when out of frames
		if !ok {
			dropped++ // every frame is in flight: back-pressure
			continue
		}
		batch = append(batch, xsk.Desc{Addr: addr, Len: uint32(copy(buf, packet))})
	}
	sent, err := s.Transmit(batch) // kicks the kernel if it asked
	for _, d := range batch[sent:] {
		s.FreeFrame(d.Addr) // the TX ring was full
		dropped++
	}
	_ = err // ENXIO, ENETDOWN: the device is gone
	// Before closing, let the kernel finish: it sends a budget per kick.
	for i := 0; s.InFlight() > 0 && i < 1e6; i++ {
		if s.Complete() == 0 && s.Kick() != nil {
			break
		}
	}
}
