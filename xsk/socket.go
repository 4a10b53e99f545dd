//go:build linux

package xsk

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// UMEMConfig sizes the UMEM. Zero fields take the defaults.
type UMEMConfig struct {
	// FrameSize is the size of one frame: 2048 (default) or 4096, a power
	// of two as the kernel's aligned chunk mode requires.
	FrameSize int
	// NumFrames is the number of frames (default 4096). The first FillSize
	// frames serve RX, the rest TX.
	NumFrames int
	// FillSize and CompletionSize are the ring sizes, powers of two
	// (default 2048 each).
	FillSize, CompletionSize int
	// Headroom is space the kernel leaves free before each received packet,
	// on top of XDP_PACKET_HEADROOM (default 0). It does not apply to TX:
	// a transmitted packet starts at the address given in its Desc.
	Headroom int
}

// Config configures a socket. A nil *Config means all defaults.
type Config struct {
	UMEM UMEMConfig
	// RXSize and TXSize are the ring sizes, powers of two (default 2048).
	RXSize, TXSize int
	// Mode selects zero-copy or copy; the zero value is ModeAuto.
	Mode Mode
	// DisableNeedWakeup binds without XDP_USE_NEED_WAKEUP (5.4): then every
	// Transmit kicks the kernel instead of only when it asks.
	DisableNeedWakeup bool
	// BusyPoll, when positive, turns on preferred busy polling
	// (SO_PREFER_BUSY_POLL, 5.11) for that many microseconds (SO_BUSY_POLL)
	// with BusyPollBudget packets per poll (SO_BUSY_POLL_BUDGET, default
	// 64). A kernel without them fails Open with unix.ENOPROTOOPT.
	BusyPoll, BusyPollBudget int
	// SG selects multi-buffer packets (XDP_USE_SG); the zero value is
	// SGOff.
	SG SGMode
}

// Desc describes one buffer in the UMEM: struct xdp_desc. Addr is the
// buffer's offset in the UMEM, Len its length. A packet is one descriptor,
// or on a socket bound with SG a chain of them: every descriptor but the
// last has PktContd in Options (Continues reports it).
type Desc struct {
	Addr    uint64
	Len     uint32
	Options uint32
}

// PktContd is XDP_PKT_CONTD: the packet continues in the next descriptor.
const PktContd = unix.XDP_PKT_CONTD

// Continues reports whether the packet goes on in the next descriptor.
func (d Desc) Continues() bool { return d.Options&PktContd != 0 }

// Packet returns how many descriptors, from descs[0] on, make up one packet:
// up to and including the first that does not continue. whole is false
// when every one of descs continues: the packet's chain goes on past descs
// (n is then len(descs)). For an empty descs it returns 0, false.
func Packet(descs []Desc) (n int, whole bool) {
	for i, d := range descs {
		if !d.Continues() {
			return i + 1, true
		}
	}
	return len(descs), false
}

// Stats are the kernel's XDP_STATISTICS counters for the socket.
type Stats struct {
	RXDropped            uint64 // dropped for reasons other than an invalid descriptor
	RXInvalidDescs       uint64 // invalid descriptors on the fill ring
	TXInvalidDescs       uint64 // invalid descriptors on the TX ring
	RXRingFull           uint64 // dropped because the RX ring was full (5.9)
	RXFillRingEmptyDescs uint64 // times the fill ring was found empty (5.9)
	TXRingEmptyDescs     uint64 // times the TX ring was found empty (5.9)
}

// Socket is an AF_XDP socket bound to one queue of one interface, with its
// own UMEM.
type Socket struct {
	fd, ifindex, queue int
	mode               Mode
	needWakeup         bool // bound with XDP_USE_NEED_WAKEUP
	busyPoll           bool

	sg    bool  // bound with XDP_USE_SG
	sgErr error // why a bind with XDP_USE_SG failed (SGAuto fell back)

	umem      []byte
	frameSize uint64
	frameMask uint64 // clears the offset inside a frame

	ringMem    [4][]byte // fill, completion, RX, TX mappings
	fill, comp ring[uint64]
	rx, tx     ring[Desc]

	// RX side (fill ring producer, RX ring consumer).
	spare []uint64 // frames Release could not put on a full fill ring

	// TX side (TX ring producer, completion ring consumer).
	free     []uint64 // free-list stack of frame addresses; never grows past cap
	inFlight int      // frames given to the kernel by Transmit, not completed yet

	wakeFd   int          // eventfd: Wakeup and Close interrupt Wait through it
	fdMu     sync.RWMutex // Stats and Wakeup read the descriptors under it; Close closes them under it
	waitMu   sync.Mutex   // held by Wait; Close takes it before unmapping
	drainBuf [8]byte
	closed   atomic.Bool
}

const defaultBudget = 64 // SO_BUSY_POLL_BUDGET when BusyPoll is set without one

// onBindBusy is called each time bind answers EBUSY and is retried; a test
// hook (export_test.go counts the retries).
var onBindBusy = func() {}

func withDefaults(cfg *Config) (Config, error) {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.UMEM.FrameSize, DefaultFrameSize)
	def(&c.UMEM.NumFrames, DefaultNumFrames)
	def(&c.UMEM.FillSize, DefaultRingSize)
	def(&c.UMEM.CompletionSize, DefaultRingSize)
	def(&c.RXSize, DefaultRingSize)
	def(&c.TXSize, DefaultRingSize)
	def(&c.BusyPollBudget, defaultBudget)
	pow2 := func(name string, v int) error {
		if v <= 0 || v&(v-1) != 0 || v > 1<<30 {
			return fmt.Errorf("xsk: %s %d is not a power of two: %w", name, v, unix.EINVAL)
		}
		return nil
	}
	for _, p := range []struct {
		name string
		v    int
	}{
		{"frame size", c.UMEM.FrameSize}, {"fill ring size", c.UMEM.FillSize},
		{"completion ring size", c.UMEM.CompletionSize}, {"RX ring size", c.RXSize},
		{"TX ring size", c.TXSize},
	} {
		if err := pow2(p.name, p.v); err != nil {
			return c, err
		}
	}
	switch {
	case c.UMEM.FrameSize < 2048 || c.UMEM.FrameSize > os.Getpagesize():
		return c, fmt.Errorf("xsk: frame size %d outside 2048..%d: %w", c.UMEM.FrameSize, os.Getpagesize(), unix.EINVAL)
	case c.UMEM.NumFrames < c.UMEM.FillSize || c.UMEM.NumFrames > 1<<24:
		return c, fmt.Errorf("xsk: %d frames, need at least the fill ring size %d: %w", c.UMEM.NumFrames, c.UMEM.FillSize, unix.EINVAL)
	case c.UMEM.Headroom < 0 || c.UMEM.Headroom > c.UMEM.FrameSize-unix.XDP_PACKET_HEADROOM-128:
		return c, fmt.Errorf("xsk: headroom %d does not fit a %d-byte frame: %w", c.UMEM.Headroom, c.UMEM.FrameSize, unix.EINVAL)
	case c.Mode < ModeAuto || c.Mode > ModeZeroCopy:
		return c, fmt.Errorf("xsk: unknown mode %d: %w", int(c.Mode), unix.EINVAL)
	case c.BusyPoll < 0 || c.BusyPollBudget < 0:
		return c, fmt.Errorf("xsk: negative busy poll setting: %w", unix.EINVAL)
	case c.SG < SGOff || c.SG > SGOn:
		return c, fmt.Errorf("xsk: unknown SG mode %d: %w", int(c.SG), unix.EINVAL)
	}
	return c, nil
}

// Open creates an AF_XDP socket with its own UMEM and binds it to queue of
// the interface ifindex, in the calling thread's network namespace. A nil
// cfg means defaults.
//
// It needs CAP_NET_RAW (os.ErrPermission otherwise) and a kernel with
// CONFIG_XDP_SOCKETS (unix.EAFNOSUPPORT otherwise). A missing interface or
// queue gives unix.ENODEV or unix.EINVAL. While an earlier socket on the same
// queue is still being torn down by the kernel, bind answers EBUSY; Open
// retries for about a second before returning that error.
func Open(ifindex, queue int, cfg *Config) (*Socket, error) {
	c, err := withDefaults(cfg)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("xsk: %w", os.NewSyscallError("socket AF_XDP", err))
	}
	s := &Socket{fd: fd, ifindex: ifindex, queue: queue, wakeFd: -1}
	if err := s.setup(&c); err != nil {
		s.Close()
		return nil, fmt.Errorf("xsk: ifindex %d queue %d: %w", ifindex, queue, err)
	}
	return s, nil
}

func (s *Socket) setup(c *Config) error {
	var err error
	s.frameSize = uint64(c.UMEM.FrameSize)
	s.frameMask = ^(s.frameSize - 1)
	size := c.UMEM.NumFrames * c.UMEM.FrameSize
	s.umem, err = unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("UMEM of %d bytes: %w", size, os.NewSyscallError("mmap", err))
	}
	reg := unix.XDPUmemReg{
		Addr:     uint64(uintptrOf(s.umem)),
		Len:      uint64(size),
		Size:     uint32(c.UMEM.FrameSize),
		Headroom: uint32(c.UMEM.Headroom),
	}
	if err := registerUMEM(s.fd, &reg); err != nil {
		return err
	}
	for _, o := range []struct {
		name string
		opt  int
		v    int
	}{
		{"XDP_UMEM_FILL_RING", unix.XDP_UMEM_FILL_RING, c.UMEM.FillSize},
		{"XDP_UMEM_COMPLETION_RING", unix.XDP_UMEM_COMPLETION_RING, c.UMEM.CompletionSize},
		{"XDP_RX_RING", unix.XDP_RX_RING, c.RXSize},
		{"XDP_TX_RING", unix.XDP_TX_RING, c.TXSize},
	} {
		if err := unix.SetsockoptInt(s.fd, unix.SOL_XDP, o.opt, o.v); err != nil {
			return os.NewSyscallError("setsockopt "+o.name, err)
		}
	}
	off, err := mmapOffsets(s.fd)
	if err != nil {
		return err
	}
	if err := s.mapRings(&off, c); err != nil {
		return err
	}
	if c.BusyPoll > 0 {
		for _, o := range []struct {
			name string
			opt  int
			v    int
		}{
			{"SO_PREFER_BUSY_POLL", unix.SO_PREFER_BUSY_POLL, 1},
			{"SO_BUSY_POLL", unix.SO_BUSY_POLL, c.BusyPoll},
			{"SO_BUSY_POLL_BUDGET", unix.SO_BUSY_POLL_BUDGET, c.BusyPollBudget},
		} {
			if err := unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, o.opt, o.v); err != nil {
				return fmt.Errorf("busy polling: %w", os.NewSyscallError("setsockopt "+o.name, err))
			}
		}
		s.busyPoll = true
	}
	if err := s.bind(c); err != nil {
		return err
	}

	// RX gets the first FillSize frames, all on the fill ring; TX the rest.
	rxFrames := uint64(c.UMEM.FillSize)
	idx, n := s.fill.reserve(uint32(rxFrames))
	for i := range n {
		*s.fill.at(idx + i) = uint64(i) * s.frameSize
	}
	s.fill.submit()
	s.spare = make([]uint64, 0, c.UMEM.NumFrames)
	s.free = make([]uint64, 0, c.UMEM.NumFrames)
	for i := uint64(c.UMEM.NumFrames) - 1; i >= rxFrames && i < uint64(c.UMEM.NumFrames); i-- {
		s.free = append(s.free, i*s.frameSize) // lowest address on top
	}

	s.wakeFd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		s.wakeFd = -1
		return os.NewSyscallError("eventfd", err)
	}
	return nil
}

func (s *Socket) mapRings(off *unix.XDPMmapOffsets, c *Config) error {
	type spec struct {
		pgoff  int64
		length int
	}
	specs := [4]spec{
		{unix.XDP_UMEM_PGOFF_FILL_RING, ringBytes[uint64](off.Fr, uint32(c.UMEM.FillSize))},
		{unix.XDP_UMEM_PGOFF_COMPLETION_RING, ringBytes[uint64](off.Cr, uint32(c.UMEM.CompletionSize))},
		{unix.XDP_PGOFF_RX_RING, ringBytes[Desc](off.Rx, uint32(c.RXSize))},
		{unix.XDP_PGOFF_TX_RING, ringBytes[Desc](off.Tx, uint32(c.TXSize))},
	}
	for i, sp := range specs {
		m, err := unix.Mmap(s.fd, sp.pgoff, sp.length, unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return fmt.Errorf("ring %d: %w", i, os.NewSyscallError("mmap", err))
		}
		s.ringMem[i] = m
	}
	return errors.Join(
		ringOn(&s.fill, s.ringMem[0], off.Fr, uint32(c.UMEM.FillSize), true),
		ringOn(&s.comp, s.ringMem[1], off.Cr, uint32(c.UMEM.CompletionSize), false),
		ringOn(&s.rx, s.ringMem[2], off.Rx, uint32(c.RXSize), false),
		ringOn(&s.tx, s.ringMem[3], off.Tx, uint32(c.TXSize), true),
	)
}

// bind binds in the configured mode and retries EBUSY left by a socket on
// the same queue that the kernel has not finished freeing. ModeAuto leaves
// the choice to the kernel (see ModeAuto), whose fallback to copy mode
// takes any driver error, where ours could only recognise EOPNOTSUPP.
//
// With SG it tries the binds of bindAttempts in turn until one succeeds; the
// last is always the bind without XDP_USE_SG (except for SGOn), so its
// error is what a socket without SG would have got.
func (s *Socket) bind(c *Config) error {
	flags := uint16(0)
	if !c.DisableNeedWakeup {
		flags |= unix.XDP_USE_NEED_WAKEUP
	}
	var err error
	for _, f := range bindAttempts(c.Mode, c.SG) {
		if err = s.bindOnce(flags | f); err == nil {
			s.sg = f&unix.XDP_USE_SG != 0
			break
		}
		if f&unix.XDP_USE_SG != 0 && s.sgErr == nil {
			s.sgErr = err
		}
		// Another bind cannot help with a busy queue, a missing device or
		// a missing privilege.
		if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EPERM) {
			break
		}
	}
	if err != nil {
		switch {
		case c.SG == SGOn && s.sgErr != nil:
			return fmt.Errorf("multi-buffer bind (XDP_USE_SG, Linux 6.6+; in zero-copy mode also the driver's multi-buffer zero-copy) refused: %w", err)
		case c.Mode == ModeZeroCopy && errors.Is(err, unix.EOPNOTSUPP):
			return fmt.Errorf("driver has no AF_XDP zero-copy: %w", err)
		}
		return err
	}
	s.needWakeup = flags&unix.XDP_USE_NEED_WAKEUP != 0
	// Report what the kernel says rather than what was asked (5.3).
	opts, err := unix.GetsockoptInt(s.fd, unix.SOL_XDP, unix.XDP_OPTIONS)
	if err != nil {
		return os.NewSyscallError("getsockopt XDP_OPTIONS", err)
	}
	s.mode = ModeCopy
	if opts&unix.XDP_OPTIONS_ZEROCOPY != 0 {
		s.mode = ModeZeroCopy
	}
	return nil
}

// bindAttempts lists the mode and SG flags to bind with, best first. SGOff
// is the one bind of the mode. With SG the multi-buffer bind comes first;
// ModeAuto tries zero-copy with multi-buffer, then zero-copy without it (a
// driver whose zero-copy has no multi-buffer would otherwise be bound in
// copy mode by the kernel's fallback: zero-copy is kept rather than traded
// for multi-buffer), then the kernel's choice with and without it.
func bindAttempts(m Mode, sg SGMode) []uint16 {
	mode := uint16(0)
	switch m {
	case ModeCopy:
		mode = unix.XDP_COPY
	case ModeZeroCopy:
		mode = unix.XDP_ZEROCOPY
	}
	const use = unix.XDP_USE_SG
	switch {
	case sg == SGOff:
		return []uint16{mode}
	case m == ModeAuto && sg == SGOn:
		return []uint16{unix.XDP_ZEROCOPY | use, use}
	case m == ModeAuto:
		return []uint16{unix.XDP_ZEROCOPY | use, unix.XDP_ZEROCOPY, use, 0}
	case sg == SGOn:
		return []uint16{mode | use}
	}
	return []uint16{mode | use, mode}
}

// bindOnce binds with flags, retrying EBUSY for about a second.
func (s *Socket) bindOnce(flags uint16) error {
	sa := &unix.SockaddrXDP{Flags: flags, Ifindex: uint32(s.ifindex), QueueID: uint32(s.queue)}
	delay := time.Millisecond
	deadline := time.Now().Add(time.Second)
	for {
		err := bindHook(s.fd, sa)
		if err == nil {
			return nil
		}
		if err != unix.EBUSY || time.Now().After(deadline) {
			return os.NewSyscallError("bind", err)
		}
		onBindBusy()
		time.Sleep(delay)
		delay = min(2*delay, 64*time.Millisecond)
	}
}

// bindHook is unix.Bind; tests replace it to play a kernel that refuses
// XDP_USE_SG.
var bindHook = unix.Bind

// SG reports whether the socket is bound for multi-buffer packets
// (XDP_USE_SG): then a received packet longer than a frame comes as a
// chain of descriptors, and Transmit takes chains.
func (s *Socket) SG() bool { return s.sg }

// SGError is why the socket is not bound for multi-buffer packets although
// Config.SG asked for them (SGAuto fell back): the kernel's answer to the
// bind with XDP_USE_SG (EINVAL before Linux 6.6; EOPNOTSUPP from a driver
// whose zero-copy has no multi-buffer, then the socket is zero-copy). It is
// nil when SG is on, and when it was not asked for.
func (s *Socket) SGError() error {
	if s.sg {
		return nil
	}
	return s.sgErr
}

// Mode reports how the socket is bound: ModeCopy or ModeZeroCopy.
func (s *Socket) Mode() Mode { return s.mode }

// FD is the socket's descriptor, e.g. for an XSKMAP entry. It stays owned by
// the Socket; after Close it is -1.
func (s *Socket) FD() int { return s.fd }

// Queue is the queue the socket is bound to.
func (s *Socket) Queue() int { return s.queue }

// Ifindex is the interface the socket is bound to.
func (s *Socket) Ifindex() int { return s.ifindex }

// FrameSize is the size of every UMEM frame, the largest packet NextFrame's
// buffer can hold.
func (s *Socket) FrameSize() int { return int(s.frameSize) }

// Stats reads the kernel's counters for the socket (XDP_STATISTICS; the
// last three need 5.9 and read 0 before). It is safe to call from any
// goroutine, also concurrently with Close (then it returns net.ErrClosed).
func (s *Socket) Stats() (Stats, error) {
	s.fdMu.RLock()
	defer s.fdMu.RUnlock()
	if s.fd < 0 {
		return Stats{}, net.ErrClosed
	}
	st, err := statistics(s.fd)
	if err != nil {
		return Stats{}, fmt.Errorf("xsk: %w", err)
	}
	return Stats{
		RXDropped:            st.Rx_dropped,
		RXInvalidDescs:       st.Rx_invalid_descs,
		TXInvalidDescs:       st.Tx_invalid_descs,
		RXRingFull:           st.Rx_ring_full,
		RXFillRingEmptyDescs: st.Rx_fill_ring_empty_descs,
		TXRingEmptyDescs:     st.Tx_ring_empty_descs,
	}, nil
}

// Close unbinds the socket and releases its rings, UMEM and descriptors. It
// interrupts a Wait in progress and waits for it to return; no other method
// may run concurrently with Close. Calling it again returns nil.
func (s *Socket) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	_ = s.Wakeup()
	s.waitMu.Lock()
	defer s.waitMu.Unlock()
	var errs []error
	for i, m := range s.ringMem {
		if m != nil {
			if err := unix.Munmap(m); err != nil {
				errs = append(errs, os.NewSyscallError("munmap ring", err))
			}
			s.ringMem[i] = nil
		}
	}
	s.fill, s.comp = ring[uint64]{}, ring[uint64]{}
	s.rx, s.tx = ring[Desc]{}, ring[Desc]{}
	s.fdMu.Lock()
	if s.fd >= 0 {
		if err := unix.Close(s.fd); err != nil {
			errs = append(errs, os.NewSyscallError("close", err))
		}
		s.fd = -1
	}
	s.fdMu.Unlock()
	// The kernel pinned the UMEM pages at registration, so unmapping after
	// close cannot pull them from under a socket still being torn down.
	if s.umem != nil {
		if err := unix.Munmap(s.umem); err != nil {
			errs = append(errs, os.NewSyscallError("munmap UMEM", err))
		}
		s.umem = nil
	}
	s.fdMu.Lock()
	if s.wakeFd >= 0 {
		if err := unix.Close(s.wakeFd); err != nil {
			errs = append(errs, os.NewSyscallError("close eventfd", err))
		}
		s.wakeFd = -1
	}
	s.fdMu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("xsk: close: %w", err)
	}
	return nil
}

var wakeOne = [8]byte{1}
