//go:build linux

package xsk

import (
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// NextFrame takes a frame from the free list for a packet to transmit and
// returns its UMEM address and its bytes (FrameSize long). Write the packet
// at the start of buf and pass Desc{Addr: addr, Len: n} to Transmit, or give
// an unused frame back with FreeFrame. When the free list is empty it reaps
// completions first; ok is false when no frame is free even then (all are in
// flight: back-pressure).
func (s *Socket) NextFrame() (addr uint64, buf []byte, ok bool) {
	if s.closed.Load() {
		return 0, nil, false
	}
	if len(s.free) == 0 {
		if s.Complete() == 0 {
			return 0, nil, false
		}
	}
	addr = s.free[len(s.free)-1]
	s.free = s.free[:len(s.free)-1]
	end := addr + s.frameSize
	return addr, s.umem[addr:end:end], true
}

// FreeFrame returns a frame taken by NextFrame but not transmitted. An
// address outside the UMEM is ignored; a frame that is already free, or
// still on a ring, must not be given (it would be handed out twice).
func (s *Socket) FreeFrame(addr uint64) {
	if len(s.free) < cap(s.free) && addr < uint64(len(s.umem)) {
		s.free = append(s.free, addr&s.frameMask)
	}
}

// Transmit puts as many of descs on the TX ring as fit (whole packets: see
// Stage for chains) and returns how many descriptors; those frames belong
// to the kernel until Complete takes them back.
// The rest (n < len(descs)) did not fit: the ring is full, the caller keeps
// them and may retry later or count them as dropped and FreeFrame them.
// Frames staged before (Stage) are handed to the kernel with them.
//
// It then kicks the kernel when the kernel asked for it (need_wakeup, or
// always without it). In copy mode a kick sends at most a budget of frames
// (32 by default), so frames may stay on the ring until a later Transmit or
// Kick. The error is non-nil only when the kick fails for a lasting reason
// (e.g. ENETDOWN, ENXIO when the device went away); the frames counted in n
// are on the ring nevertheless.
func (s *Socket) Transmit(descs []Desc) (n int, err error) {
	if s.closed.Load() {
		return 0, net.ErrClosed
	}
	n = s.Stage(descs)
	// Kick even when nothing fit: a full ring only drains when kicked.
	return n, s.Kick()
}

// Stage puts as many of descs on the TX ring as fit and returns how many,
// like Transmit, but does not hand them to the kernel yet: the next Kick
// or Transmit publishes them, in order. A staged frame has its ring slot,
// so a sender can accept a frame only once it is certain to go out, and
// kick once per batch. The frames belong to the kernel from now on (they
// count in InFlight and TXPending).
//
// It counts descriptors, not packets, and never splits a packet: on a
// socket bound with SG a packet longer than a frame is a chain of
// descriptors, PktContd in the Options of all but the last (each at most
// FrameSize long), and a chain that does not fit whole is not staged (nor
// anything after it). A chain may have at most 18 descriptors in copy mode
// (the kernel's MAX_SKB_FRAGS + 1 at its smallest); the kernel drops a
// longer one and counts it in Stats.TXInvalidDescs.
func (s *Socket) Stage(descs []Desc) int {
	if s.closed.Load() {
		return 0
	}
	idx, got := s.tx.reserve(uint32(len(descs)))
	if got > 0 && descs[got-1].Options&PktContd != 0 {
		k := got - 1
		for k > 0 && descs[k-1].Options&PktContd != 0 {
			k--
		}
		s.tx.prod -= got - k // reserved, not published: give them back
		got = k
	}
	s.tx.put(idx, descs[:got])
	s.inFlight += int(got)
	return int(got)
}

// Kick publishes the staged frames and asks the kernel to send what is on
// the TX ring, if it asked to be kicked (or always without need_wakeup).
// EAGAIN (more is pending than one kick sends), EBUSY and ENOBUFS are
// transient and return nil.
func (s *Socket) Kick() error {
	if s.closed.Load() {
		return net.ErrClosed
	}
	s.tx.submit()
	return s.kick()
}

func (s *Socket) kick() error {
	if s.needWakeup && !s.tx.needWakeup() {
		return nil
	}
	switch e := txKick(s.fd); e {
	case 0, unix.EAGAIN, unix.EBUSY, unix.ENOBUFS:
		return nil
	default:
		return os.NewSyscallError("sendto", e)
	}
}

// Complete takes the frames the kernel has finished sending off the
// completion ring, puts them on the free list and returns how many.
func (s *Socket) Complete() int {
	if s.closed.Load() {
		return 0
	}
	idx, n := s.comp.peek(s.comp.size())
	for i := range n {
		if len(s.free) < cap(s.free) {
			s.free = append(s.free, *s.comp.at(idx + i)&s.frameMask)
		}
	}
	s.comp.release()
	s.inFlight -= int(n)
	return int(n)
}

// InFlight is the number of frames handed to the kernel by Transmit whose
// completion Complete has not seen yet.
func (s *Socket) InFlight() int { return s.inFlight }

// FreeFrames is the number of frames on the free list.
func (s *Socket) FreeFrames() int { return len(s.free) }
