//go:build linux

package xsk

import (
	"errors"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Receive moves up to len(descs) received descriptors from the RX ring into
// descs and returns how many. Each one's bytes are Frame(descs[i]); the
// frame belongs to the caller until it is passed to Release (or Transmit).
// It returns 0 when nothing is waiting, and then kicks the kernel if it asked
// for fill-ring wakeups (need_wakeup) or busy polling is on. After Close it
// returns 0.
//
// Without SG every descriptor is a packet. With SG a packet may be a chain
// of descriptors (walk them with Packet): Receive returns whole packets
// and leaves a chain the batch would cut on the ring for the next call, so
// a batch begins with a packet's first descriptor, except after a batch
// whose only packet did not end in it. That happens when a packet has more
// descriptors than len(descs), or when its chain ends at the ring's end
// (the kernel publishes whole packets, so only a broken one does that): then
// the batch is that one incomplete chain (Packet says not whole), and the
// next batch begins with the rest of it, up to and including its first
// descriptor that does not continue, which the caller must tell from a
// packet of its own.
func (s *Socket) Receive(descs []Desc) int {
	if s.closed.Load() {
		return 0
	}
	idx, n := s.rx.peek(uint32(len(descs)))
	if n == 0 {
		if s.busyPoll || (s.needWakeup && s.fill.needWakeup()) {
			kickRX(s.fd)
		}
		return 0
	}
	s.rx.get(idx, descs[:n])
	if descs[n-1].Options&PktContd != 0 {
		n = s.wholePackets(descs[:n])
	}
	// The descriptors are copied out; the frames stay ours until Release.
	s.rx.release()
	return int(n)
}

// wholePackets leaves on the ring the chain that descs (ending in a
// descriptor that continues) cut, unless it is all of descs, and returns
// how many descriptors remain in the batch.
func (s *Socket) wholePackets(descs []Desc) uint32 {
	n := len(descs) - 1
	for n > 0 && descs[n-1].Options&PktContd != 0 {
		n--
	}
	if n == 0 {
		return uint32(len(descs)) // one chain, longer than the batch or cut off
	}
	s.rx.cons -= uint32(len(descs) - n) // not released yet: peek them again
	return uint32(n)
}

// Frame returns the bytes of the buffer d describes (a whole packet, or one
// part of a chain): a slice into the UMEM, valid until the frame is
// released. It returns nil for a descriptor that does not lie inside the
// UMEM.
func (s *Socket) Frame(d Desc) []byte {
	end := d.Addr + uint64(d.Len)
	if end < d.Addr || end > uint64(len(s.umem)) {
		return nil
	}
	return s.umem[d.Addr:end:end]
}

// Release gives frames back to the kernel through the fill ring, to be
// received into again. Any frame of this socket's UMEM may be given, e.g. one
// from NextFrame that replaces a received frame that was forwarded by
// Transmit; only the frame of each descriptor counts, not Len.
func (s *Socket) Release(descs []Desc) {
	if s.closed.Load() || len(descs) == 0 {
		return
	}
	if len(s.spare) > 0 {
		s.flushSpare()
	}
	idx, n := s.fill.reserve(uint32(len(descs)))
	for i := range n {
		*s.fill.at(idx + i) = descs[i].Addr & s.frameMask
	}
	s.fill.submit()
	// More frames than the fill ring holds: keep them for the next call.
	for _, d := range descs[n:] {
		if len(s.spare) < cap(s.spare) {
			s.spare = append(s.spare, d.Addr&s.frameMask)
		}
	}
}

func (s *Socket) flushSpare() {
	idx, n := s.fill.reserve(uint32(len(s.spare)))
	for i := range n {
		*s.fill.at(idx + i) = s.spare[len(s.spare)-1-int(i)]
	}
	s.spare = s.spare[:len(s.spare)-int(n)]
	s.fill.submit()
}

// Wait blocks until packets are ready on the RX ring, the timeout passes
// (negative: none), Wakeup is called or the socket is closed. It reports
// whether packets are ready; after Close it returns net.ErrClosed.
//
// When the interface disappears the kernel unbinds the socket and poll(2)
// stops reporting anything on it, so an RX loop should use a finite timeout:
// on a timeout Wait checks the socket's pending error (SO_ERROR) and returns
// it, e.g. ENETDOWN. Frames already on the RX ring come first: while the
// ring is not empty Wait reports them and not the error, so a loop that
// receives what Wait announces sees the error once the ring is drained.
func (s *Socket) Wait(timeout time.Duration) (bool, error) {
	s.waitMu.Lock()
	defer s.waitMu.Unlock()
	if s.closed.Load() {
		return false, net.ErrClosed
	}
	if s.rx.available(1) > 0 {
		return true, nil
	}
	ms := -1
	if timeout >= 0 {
		ms = int((timeout + time.Millisecond - 1) / time.Millisecond)
	}
	fds := [2]unix.PollFd{
		{Fd: int32(s.fd), Events: unix.POLLIN},
		{Fd: int32(s.wakeFd), Events: unix.POLLIN},
	}
	for {
		n, err := unix.Poll(fds[:], ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, os.NewSyscallError("poll", err)
		}
		if fds[1].Revents != 0 {
			_, _ = unix.Read(s.wakeFd, s.drainBuf[:])
			if s.closed.Load() {
				return false, net.ErrClosed
			}
			return false, nil
		}
		if n == 0 {
			return false, s.pendingError()
		}
		if fds[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
			if err := s.pendingError(); err != nil {
				return false, err
			}
		}
		return s.rx.available(1) > 0, nil
	}
}

func (s *Socket) pendingError() error {
	e, err := unix.GetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return os.NewSyscallError("getsockopt SO_ERROR", err)
	}
	if e != 0 {
		return os.NewSyscallError("xsk", unix.Errno(e))
	}
	return nil
}

// Wakeup makes a Wait in progress (or the next one) return false, nil. It is
// safe to call from any goroutine.
func (s *Socket) Wakeup() error {
	s.fdMu.RLock()
	defer s.fdMu.RUnlock()
	if s.wakeFd < 0 {
		return net.ErrClosed
	}
	_, err := unix.Write(s.wakeFd, wakeOne[:])
	if err != nil && !errors.Is(err, unix.EAGAIN) {
		return os.NewSyscallError("write eventfd", err)
	}
	return nil
}

// RXConsumed is the RX ring index of the next descriptor Receive returns: a
// free-running count of the descriptors taken off the ring. descs[i] of a
// Receive that followed it sat at index RXConsumed()+i. Call it from the
// goroutine that receives.
func (s *Socket) RXConsumed() uint32 { return s.rx.cons }

// RXProduced is the RX ring index the kernel will put its next descriptor
// at (the ring's producer, free-running like RXConsumed): every packet the
// kernel has put on the ring so far lies below it. It may be called from any
// goroutine, but not concurrently with Close; 0 after Close.
func (s *Socket) RXProduced() uint32 {
	if s.closed.Load() {
		return 0
	}
	return s.rx.producer.Load() // acquire, like a consumer's peek
}
