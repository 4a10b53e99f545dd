//go:build linux

package trafficgen

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
)

// sniffPoll bounds how long a Sniffer's receive call blocks, so Close is
// seen that soon.
const sniffPoll = 50 * time.Millisecond

// maxSniffFrame is the receive buffer: a full Ethernet frame and more (a
// longer one is cut to it).
const maxSniffFrame = 4096

// Sniffer hands every frame arriving at one interface to a function, read
// from an AF_PACKET socket: the frames as the kernel's stack there sees
// them, after XDP. Frames the interface sends are left out.
type Sniffer struct {
	fd    int
	fn    func(frame []byte)
	stop  atomic.Bool
	wg    sync.WaitGroup
	close sync.Once
	err   error
}

// NewSniffer opens a sniffer on ifindex that calls fn, from its own
// goroutine, with each frame (valid during the call only). Call it inside
// the interface's network namespace (netlab's Lab.Do). Needs CAP_NET_RAW;
// without it the error wraps EPERM.
func NewSniffer(ifindex int, fn func(frame []byte)) (*Sniffer, error) {
	proto := htons(unix.ETH_P_ALL)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return nil, fmt.Errorf("trafficgen: sniffer: %w", os.NewSyscallError("socket", err))
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("trafficgen: sniffer on ifindex %d: %w", ifindex, os.NewSyscallError("bind", err))
	}
	tv := unix.NsecToTimeval(int64(sniffPoll))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("trafficgen: sniffer: %w", os.NewSyscallError("setsockopt SO_RCVTIMEO", err))
	}
	s := &Sniffer{fd: fd, fn: fn}
	s.wg.Add(1)
	go s.loop()
	return s, nil
}

// SniffIn opens a Sniffer on the lab's side.
func SniffIn(l *netlab.Lab, side int, fn func(frame []byte)) (*Sniffer, error) {
	return in(l, side, func(ifindex int) (*Sniffer, error) { return NewSniffer(ifindex, fn) })
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Recvfrom is unix.Recvfrom on a blocking socket, tried again when a signal
// interrupts it. A socket with SO_RCVTIMEO is not restarted by SA_RESTART
// (signal(7)), and Go's runtime signals its threads (SIGURG for preemption),
// so a plain Recvfrom can fail with EINTR long before its timeout.
func Recvfrom(fd int, buf []byte) (int, unix.Sockaddr, error) {
	for {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err != unix.EINTR {
			return n, from, err
		}
	}
}

func (s *Sniffer) loop() {
	defer s.wg.Done()
	buf := make([]byte, maxSniffFrame)
	for !s.stop.Load() {
		n, from, err := Recvfrom(s.fd, buf)
		if err != nil {
			continue // the poll timeout, or a frame lost: nothing to count
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		s.fn(buf[:n])
	}
}

// Close stops the sniffer; fn is not called after it returns. It is safe
// to call more than once, and on nil.
func (s *Sniffer) Close() error {
	if s == nil {
		return nil
	}
	s.close.Do(func() {
		s.stop.Store(true)
		s.wg.Wait()
		s.err = os.NewSyscallError("close", unix.Close(s.fd))
	})
	return s.err
}
