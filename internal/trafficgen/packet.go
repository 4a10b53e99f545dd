//go:build linux

package trafficgen

import (
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// packetBatch is how many frames one sendmmsg(2) call carries.
const packetBatch = 64

// Packet sends frames through an AF_PACKET SOCK_RAW socket bound to one
// interface, batched with sendmmsg(2). The frames travel as skbs, like
// ordinary host traffic, so on veth they reach the other end's XDP program
// (if any) and stack the usual way. Bypassing the qdisc
// (PACKET_QDISC_BYPASS) is requested when the kernel has it.
//
// The socket is bound with protocol 0, so it receives nothing.
type Packet struct {
	mu   sync.Mutex
	fd   int
	msgs [packetBatch]unix.Mmsghdr
	iovs [packetBatch]unix.Iovec
}

// NewPacket opens the generator on ifindex. Call it inside the interface's
// network namespace (netlab's Lab.Do); once bound, the socket works from any
// goroutine. Needs CAP_NET_RAW; without it the error wraps EPERM.
func NewPacket(ifindex int) (*Packet, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("trafficgen: AF_PACKET socket: %w", os.NewSyscallError("socket", err))
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("trafficgen: bind AF_PACKET to ifindex %d: %w", ifindex, os.NewSyscallError("bind", err))
	}
	// Only a speed-up; older kernels lack it.
	_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1)
	p := &Packet{fd: fd}
	for i := range p.msgs {
		p.msgs[i].Hdr.Iov = &p.iovs[i]
		p.msgs[i].Hdr.SetIovlen(1)
	}
	return p, nil
}

// Send transmits count copies of frame and returns how many the kernel took.
func (p *Packet) Send(frame []byte, count int) (int, error) {
	if len(frame) == 0 {
		return 0, fmt.Errorf("trafficgen: send empty frame: %w", unix.EINVAL)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd < 0 {
		return 0, fmt.Errorf("trafficgen: send: %w", os.ErrClosed)
	}
	for i := range p.iovs {
		p.iovs[i].Base = &frame[0]
		p.iovs[i].SetLen(len(frame))
	}
	sent := 0
	for sent < count {
		n, err := p.sendmmsg(min(count-sent, packetBatch))
		sent += n
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// SendFrames transmits each of frames once, in order, and returns how many
// the kernel took.
func (p *Packet) SendFrames(frames [][]byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd < 0 {
		return 0, fmt.Errorf("trafficgen: send: %w", os.ErrClosed)
	}
	sent := 0
	for sent < len(frames) {
		batch := frames[sent:min(len(frames), sent+packetBatch)]
		for i, f := range batch {
			if len(f) == 0 {
				return sent, fmt.Errorf("trafficgen: send empty frame %d: %w", sent+i, unix.EINVAL)
			}
			p.iovs[i].Base = &f[0]
			p.iovs[i].SetLen(len(f))
		}
		n, err := p.sendmmsg(len(batch))
		sent += n
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// sendmmsg sends the first n prepared messages, retrying the rest after a
// short count or EINTR.
func (p *Packet) sendmmsg(n int) (int, error) {
	done := 0
	for done < n {
		r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(p.fd),
			uintptr(unsafe.Pointer(&p.msgs[done])), uintptr(n-done), 0, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return done, fmt.Errorf("trafficgen: AF_PACKET send: %w", os.NewSyscallError("sendmmsg", errno))
		}
		done += int(r)
	}
	return done, nil
}

// Close closes the socket. It is safe to call more than once.
func (p *Packet) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd < 0 {
		return nil
	}
	err := unix.Close(p.fd)
	p.fd = -1
	if err != nil {
		return os.NewSyscallError("close", err)
	}
	return nil
}
