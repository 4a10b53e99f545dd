package virtif

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Link string limits (SIOCSLINKSTR). LinkStrMax counts the terminating NUL
// as if_virt.c's ifd_len does, so a link string has 1..LinkStrMax-1 bytes.
const LinkStrMax = 4096 // RUMP_VIF_LINKSTRMAX

// MTU limits. What is if_virt.c's: its virtif_clone sets if_mtu to
// ETHERMTU, and NetBSD's ether_ioctl (SIOCSIFMTU) allows ETHERMIN..ETHERMTU
// on an interface without ETHERCAP_JUMBO_MTU, which if_virt.c never sets.
// So DefaultMTU, MinMTU and MaxMTU are those three, and a backend that says
// nothing of its frame size gets exactly if_virt.c's range.
//
// What is ours: a backend that carries larger frames says so by
// implementing MTULimiter, as a NetBSD driver sets ETHERCAP_JUMBO_MTU, and
// its MaxMTU replaces MaxMTU as the ceiling, even beyond NetBSD's
// ETHERMTU_JUMBO (9000) when its buffers hold more (package mem: 65517).
//
// The floor is NetBSD's ETHERMIN (46), not Linux's ETH_MIN_MTU (68), on
// purpose: the interface is an Ethernet link, and 46 is the smallest
// payload an Ethernet frame has (60 bytes with the header), so any smaller
// MTU could not be met by any frame; 68 is IPv4's minimum (RFC 791), a
// rule of the IP layer above, which may refuse a link too small for it,
// while a link carrying other EtherTypes may run below it, as on NetBSD.
const (
	DefaultMTU = 1500 // ETHERMTU: virtif_clone's if_mtu
	MinMTU     = 46   // ETHERMIN: ether_ioctl's floor
	MaxMTU     = 1500 // ETHERMTU: ether_ioctl's ceiling without MTULimiter
)

// ethHeaderLen is sizeof(struct ether_header); an oversized-frame check on
// the send path allows MTU + header + one VLAN tag.
const (
	ethHeaderLen = 14
	vlanTagLen   = 4
)

// Input is the upper layer's receive handler (if_input). frame is valid only
// during the call: a handler that keeps a frame copies it. promisc marks a
// frame accepted only because the interface is promiscuous (M_PROMISC).
// Handlers are called concurrently when the backend delivers from several
// goroutines.
//
// A handler runs on a backend's receiving goroutine holding no lock of the
// interface or the cloner. It may call any method of any interface and
// cloner: the getters (which take no lock: Name, Unit, Flags, MTU,
// HardwareAddr, LinkStr, LinkStrLen, Backend, Stats), Output and
// OutputBatch to answer, the setters (with their usual errnos: EBUSY for
// SetHardwareAddr or SetLinkStr while up), Up, Down. Closing or destroying
// its own interface from the handler (Close, Cloner.Destroy after Down,
// Cloner.Close) is up to the backend's Close (see Backend), and both
// backends of this module complete it without waiting for the handler:
//
//   - package mem: Close completes and returns nil at once; the member's goroutine, the
//     handler's caller, ends when the handler returns, delivering nothing
//     more.
//   - package xdp: Close stops steering frames to the vif and returns at
//     once (with the errors of undoing the vif's registrations, if any); the wait for the RX batches in progress, freeing the vif's
//     slot and, for the NIC's last vif, the teardown of the NIC complete by
//     themselves when the batch ends. Until then the rest of the batch may
//     still be handed to the vif. Open and Close of other vifs work
//     meanwhile; an
//     Open of the same NIC from a handler while that teardown is still in
//     progress fails at once with EBUSY.
//
// Either way a frame delivered after Close, on this goroutine or another
// queue's, finds the interface down: it is dropped and counted in IDrops,
// never handed to the handler; a handler call already running on another
// goroutine may still be running when Close returns. Cloner.Destroy of an
// interface still up is EBUSY, as from anywhere. A backend that cannot complete a close from its
// own upcall must refuse it at once with a documented errno, never hang.
type Input func(frame []byte, promisc bool)

// Interface is one virtual interface (struct virtif_sc with its ifnet).
// It is safe for concurrent use.
//
// Interfaces come from a Cloner; the zero value fails every operation that
// needs one with ENXIO rather than panicking.
type Interface struct {
	cloner        *Cloner
	name          string
	unit          int
	defaultScheme string // the cloner's DefaultScheme
	queueLen      int32  // the cloner's SendQueueLen

	// Read on the hot paths without locks.
	flags atomic.Uint32 // Flags
	mac   atomic.Uint64 // 48-bit MAC, big endian in the low bits
	mtu   atomic.Int32
	input atomic.Pointer[inputHandlers]
	taps  atomic.Pointer[[]Tap]
	ctr   counters

	// link is the link string and backend, written under mu, read
	// without it: the getters a callback may call (HardwareAddr, LinkStr,
	// Backend, Stats) take no lock, so they work from a tap or handler
	// whatever lock the goroutine that triggered it holds.
	link atomic.Pointer[linkState]

	// mu guards the control plane (the ioctl side). It is never held
	// while waiting for sendMu, under which taps run.
	mu        sync.Mutex
	destroyed bool
	multi     map[[6]byte]int
	addrs     map[netip.Addr]struct{}
	tapMu     sync.Mutex

	// sendMu is the send lock: virtif_start runs under it.
	sendMu  sync.Mutex
	tx      Backend // backend as the send path sees it
	flusher Flusher
	iov     [MaxSegments][]byte
	scratch []byte            // coalesced tails of frames with too many segments
	tapBuf  []byte            // flattened frames for taps
	txAcc   [nCounters]uint64 // counts of the batch being started
	pending atomic.Int32
	errs    sendErrors
}

// linkState is what SIOCSLINKSTR created; backend is nil once destroyed
// (the link string stays readable).
type linkState struct {
	str     string
	backend Backend
}

// backend is the backend, nil before the link string is set and after
// destroy.
func (i *Interface) backend() Backend {
	if l := i.link.Load(); l != nil {
		return l.backend
	}
	return nil
}

func newInterface(c *Cloner, cfg ClonerConfig, name string, unit int) *Interface {
	i := &Interface{
		cloner: c, name: name, unit: unit, errs: newSendErrors(name),
		defaultScheme: cfg.DefaultScheme, queueLen: int32(cfg.SendQueueLen),
	}
	i.flags.Store(uint32(FlagBroadcast | FlagSimplex | FlagMulticast))
	i.mtu.Store(DefaultMTU)
	i.ctr.init()
	return i
}

// Name is the interface name, e.g. "vif0".
func (i *Interface) Name() string { return i.name }

// Unit is the unit number.
func (i *Interface) Unit() int { return i.unit }

// Flags are the current flags. OACTIVE is set while frames are queued for
// or inside virtif_start (the send queue is not empty).
func (i *Interface) Flags() Flags {
	f := Flags(i.flags.Load())
	if i.pending.Load() > 0 {
		f |= FlagOActive
	}
	return f
}

// MTU is the current MTU.
func (i *Interface) MTU() int { return int(i.mtu.Load()) }

// HardwareAddr is the MAC; nil until the backend exists. It takes no lock.
func (i *Interface) HardwareAddr() net.HardwareAddr {
	if i.backend() == nil {
		return nil
	}
	return macBytes(i.mac.Load())
}

func macKey(b []byte) uint64 {
	return uint64(binary.BigEndian.Uint16(b[0:2]))<<32 | uint64(binary.BigEndian.Uint32(b[2:6]))
}

func macBytes(k uint64) net.HardwareAddr {
	b := make(net.HardwareAddr, 6)
	binary.BigEndian.PutUint16(b[0:2], uint16(k>>32))
	binary.BigEndian.PutUint32(b[2:6], uint32(k))
	return b
}

// SetLinkStr sets the link string and creates the backend from it
// (SIOCSLINKSTR, then virtif_create). The link string is "scheme:rest";
// without a ':' the cloner's DefaultScheme is used. Errors: EBUSY if the
// interface is up or the link string already set; EINVAL if it is empty or
// holds a NUL byte, or its scheme is empty; E2BIG if it is longer than
// LinkStrMax-1 bytes (LinkStrMax with the NUL, as if_virt.c counts ifd_len);
// ENXIO if no backend is registered for the scheme; otherwise the backend's
// error. On failure nothing is kept and the link string stays unset.
func (i *Interface) SetLinkStr(s string) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	switch {
	case i.destroyed || i.cloner == nil:
		return opErr(i.name, "set link string", unix.ENXIO)
	case i.flags.Load()&uint32(FlagUp) != 0:
		return opErr(i.name, "set link string: interface up", unix.EBUSY)
	case i.link.Load() != nil:
		return opErr(i.name, "set link string: already set", unix.EBUSY)
	case len(s)+1 > LinkStrMax:
		return opErr(i.name, fmt.Sprintf("set link string: %d bytes", len(s)+1), unix.E2BIG)
	case len(s) < 1:
		return opErr(i.name, "set link string: empty", unix.EINVAL)
	case strings.IndexByte(s, 0) >= 0:
		return opErr(i.name, "set link string: NUL byte", unix.EINVAL)
	}
	return i.createLocked(s)
}

// UnsetLinkStr is IFLINKSTR_UNSET, which if_virt.c left as a panic: it is
// not supported (ENOTSUP) since the backend cannot be replaced in place;
// destroy and re-create the interface instead.
func (i *Interface) UnsetLinkStr() error {
	return opErr(i.name, "unset link string", unix.ENOTSUP)
}

// LinkStr returns the link string (SIOCGLINKSTR); ENOENT when unset. It
// takes no lock.
func (i *Interface) LinkStr() (string, error) {
	l := i.link.Load()
	if l == nil {
		return "", opErr(i.name, "get link string", unix.ENOENT)
	}
	return l.str, nil
}

// LinkStrLen is IFLINKSTR_QUERYLEN: the link string's length counting the
// NUL, as if_virt.c reports it; ENOENT when unset.
func (i *Interface) LinkStrLen() (int, error) {
	s, err := i.LinkStr()
	if err != nil {
		return 0, err
	}
	return len(s) + 1, nil
}

// splitLink returns the scheme and the normalized link string.
func (i *Interface) splitLink(s string) (scheme, link string, err error) {
	scheme, _, ok := strings.Cut(s, ":")
	if !ok {
		scheme = i.defaultScheme
		if scheme == "" {
			return "", "", opErr(i.name, fmt.Sprintf("set link string %q: no scheme and no default scheme", s), unix.ENXIO)
		}
		return scheme, scheme + ":" + s, nil
	}
	if scheme == "" {
		return "", "", opErr(i.name, "set link string: empty scheme", unix.EINVAL)
	}
	return scheme, s, nil
}

// createLocked mirrors virtif_create: propose b2:0a:RR:0b:0e:NN, open the
// backend, let it replace the MAC.
func (i *Interface) createLocked(s string) error {
	scheme, link, err := i.splitLink(s)
	if err != nil {
		return err
	}
	open := lookupBackend(scheme)
	if open == nil {
		return opErr(i.name, fmt.Sprintf("set link string: no backend for scheme %q", scheme), unix.ENXIO)
	}
	// if_virt.c's b2:0a:RR:0b:0e:NN: 8 random bits. A backend that finds the
	// MAC in use on its link refuses it (ErrMACInUse), and the next RR is
	// tried, each once, in a random order.
	var mac net.HardwareAddr
	var b Backend
	for _, rr := range rand.Perm(256) {
		mac = net.HardwareAddr{0xb2, 0x0a, byte(rr), 0x0b, 0x0e, byte(i.unit)}
		b, err = open(BackendConfig{Name: i.name, Link: link, MAC: mac, Deliver: i.deliver, NewDeliver: i.newDeliver, EndBatch: i.endBatch})
		if !errors.Is(err, ErrMACInUse) {
			break
		}
	}
	if err != nil {
		if errors.Is(err, ErrMACInUse) {
			return opErr(i.name, fmt.Sprintf("create %s backend: every b2:0a:RR:0b:0e:%02x is in use on the link (set a MAC of your own)", scheme, byte(i.unit)), err)
		}
		return opErr(i.name, fmt.Sprintf("create %s backend", scheme), err)
	}
	if b == nil {
		return opErr(i.name, fmt.Sprintf("create %s backend: no backend returned", scheme), unix.EINVAL)
	}
	if ha, ok := b.(HardwareAddrer); ok {
		if m := ha.HardwareAddr(); m != nil {
			if err := checkUnicast(m); err != nil {
				_ = b.Close()
				return opErr(i.name, fmt.Sprintf("create %s backend: backend MAC %v", scheme, m), err)
			}
			mac = m
		}
	}
	i.mac.Store(macKey(mac))
	i.link.Store(&linkState{str: s, backend: b})
	f, _ := b.(Flusher)
	i.sendMu.Lock()
	i.tx, i.flusher = b, f
	i.sendMu.Unlock()
	return nil
}

func checkUnicast(m net.HardwareAddr) error {
	if len(m) != 6 || m[0]&1 != 0 || macKey(m) == 0 {
		return unix.EINVAL
	}
	return nil
}

// Backend returns the backend, nil before the link string is set and
// after destroy. It takes no lock.
func (i *Interface) Backend() Backend { return i.backend() }

// needBackend is the default ioctl branch: ENXIO until the link string is
// set. Called with mu held.
func (i *Interface) needBackend(op string) error {
	if i.backend() == nil {
		return opErr(i.name, op, unix.ENXIO)
	}
	return nil
}

// Up sets UP and runs virtif_init, which sets RUNNING: ENXIO without a
// backend. Up on an up interface is fine.
func (i *Interface) Up() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if err := i.needBackend("up"); err != nil {
		return err
	}
	i.flags.Or(uint32(FlagUp | FlagRunning))
	return nil
}

// Down clears UP and runs virtif_stop, which clears RUNNING. When it
// returns, no frame is being sent; frames still arriving are dropped.
func (i *Interface) Down() error {
	i.mu.Lock()
	i.flags.And(^uint32(FlagUp))
	i.stopLocked()
	i.mu.Unlock()
	i.waitSend(nil)
	return nil
}

// waitSend waits for a virtif_start in progress (later ones see !RUNNING)
// and drops the references to the callers' last segments; detach, if
// given, runs under the send lock too. Called without mu: an Out tap runs
// under the send lock and may call back into the interface.
func (i *Interface) waitSend(detach func()) {
	i.sendMu.Lock()
	clear(i.iov[:])
	if detach != nil {
		detach()
	}
	i.sendMu.Unlock()
}

// stopLocked mirrors virtif_stop.
func (i *Interface) stopLocked() { i.flags.And(^uint32(FlagRunning)) }

// Close brings the interface down and destroys it (virtif_unclone). The
// backend's Close error is returned (errors.Is sees its cause); the
// interface is destroyed even then. Calling it twice, or after Destroy,
// returns nil.
func (i *Interface) Close() error {
	i.mu.Lock()
	gone := i.destroyed
	i.mu.Unlock()
	if gone {
		return nil
	}
	if i.cloner == nil {
		return opErr(i.name, "close: not from a cloner", unix.ENXIO)
	}
	_ = i.Down()
	if gone, err := i.cloner.destroy(i); !gone {
		return err
	}
	return nil
}

// SetHardwareAddr changes the MAC (SIOCSIFLLADDR): only while down (EBUSY),
// only a unicast, non-zero 6-byte address (EINVAL); ENXIO without a backend;
// a HardwareAddrSetter backend may refuse it.
func (i *Interface) SetHardwareAddr(mac net.HardwareAddr) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if err := i.needBackend("set MAC"); err != nil {
		return err
	}
	if i.flags.Load()&uint32(FlagUp) != 0 {
		return opErr(i.name, "set MAC: interface up", unix.EBUSY)
	}
	if err := checkUnicast(mac); err != nil {
		return opErr(i.name, fmt.Sprintf("set MAC %v", mac), err)
	}
	if s, ok := i.backend().(HardwareAddrSetter); ok {
		if err := s.SetHardwareAddr(append(net.HardwareAddr(nil), mac...)); err != nil {
			return opErr(i.name, "set MAC", err)
		}
	}
	i.mac.Store(macKey(mac))
	return nil
}

// MTUReasoner is an MTULimiter that says what sets its MaxMTU (the AF_XDP
// backend: one UMEM frame, or with multi-buffer the NIC's MTU); SetMTU's
// error for an MTU above the ceiling says it.
type MTUReasoner interface {
	MTULimiter
	MaxMTUReason() string
}

// SetMTU sets the MTU (SIOCSIFMTU, ether_ioctl): MinMTU up to MaxMTU, or
// up to the backend's MaxMTU if it is an MTULimiter (see MinMTU for which
// bound is if_virt.c's, and MTUReasoner); EINVAL otherwise, ENXIO without a backend. The
// send path then refuses frames longer than the MTU plus the Ethernet
// header and one VLAN tag (EMSGSIZE).
func (i *Interface) SetMTU(mtu int) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if err := i.needBackend("set MTU"); err != nil {
		return err
	}
	hi := MaxMTU
	if l, ok := i.backend().(MTULimiter); ok {
		hi = l.MaxMTU()
	}
	if mtu < MinMTU || mtu > hi {
		msg := fmt.Sprintf("set MTU %d: outside %d..%d", mtu, MinMTU, hi)
		if r, ok := i.backend().(MTUReasoner); ok && mtu > hi {
			msg += " (the backend's ceiling: " + r.MaxMTUReason() + ")"
		}
		return opErr(i.name, msg, unix.EINVAL)
	}
	i.mtu.Store(int32(mtu))
	return nil
}

// SetPromisc turns promiscuous mode on or off (ifpromisc). The backend is
// told (Promiscuous) on a change; if it refuses, nothing changes. ENXIO
// without a backend.
func (i *Interface) SetPromisc(on bool) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if err := i.needBackend("set promiscuous"); err != nil {
		return err
	}
	if (i.flags.Load()&uint32(FlagPromisc) != 0) == on {
		return nil
	}
	if p, ok := i.backend().(Promiscuous); ok {
		if err := p.SetPromisc(on); err != nil {
			return opErr(i.name, "set promiscuous", err)
		}
	}
	if on {
		i.flags.Or(uint32(FlagPromisc))
	} else {
		i.flags.And(^uint32(FlagPromisc))
	}
	return nil
}

// JoinMulticast joins a multicast group (SIOCADDMULTI, ether_addmulti):
// reference counted, the first join reaches the backend's MulticastFilter.
// EINVAL if group is not a multicast MAC, ENXIO without a backend.
func (i *Interface) JoinMulticast(group net.HardwareAddr) error {
	return i.multicast(group, true)
}

// LeaveMulticast leaves a group (SIOCDELMULTI, ether_delmulti): the last
// leave reaches the backend. ENXIO if the group was not joined, as
// ether_delmulti answers when it finds no entry (the message says "not
// joined"); EINVAL if group is not a multicast MAC, ENXIO without a backend.
func (i *Interface) LeaveMulticast(group net.HardwareAddr) error {
	return i.multicast(group, false)
}

func (i *Interface) multicast(group net.HardwareAddr, join bool) error {
	op := "leave multicast"
	if join {
		op = "join multicast"
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if err := i.needBackend(op); err != nil {
		return err
	}
	if len(group) != 6 || group[0]&1 == 0 {
		return opErr(i.name, fmt.Sprintf("%s %v: not a multicast address", op, group), unix.EINVAL)
	}
	k := [6]byte(group)
	n := i.multi[k]
	if !join && n == 0 {
		return opErr(i.name, fmt.Sprintf("%s %v: not joined", op, group), unix.ENXIO)
	}
	if (join && n == 0) || (!join && n == 1) {
		if f, ok := i.backend().(MulticastFilter); ok {
			if err := f.SetMulticast(append(net.HardwareAddr(nil), group...), join); err != nil {
				return opErr(i.name, fmt.Sprintf("%s %v", op, group), err)
			}
		}
	}
	if i.multi == nil {
		i.multi = make(map[[6]byte]int)
	}
	if join {
		i.multi[k] = n + 1
	} else if n == 1 {
		delete(i.multi, k)
	} else {
		i.multi[k] = n - 1
	}
	return nil
}

// Multicast lists the joined groups with their reference counts.
func (i *Interface) Multicast() map[string]int {
	i.mu.Lock()
	defer i.mu.Unlock()
	m := make(map[string]int, len(i.multi))
	for k, n := range i.multi {
		m[net.HardwareAddr(k[:]).String()] = n
	}
	return m
}

// AddIPv4 records an IPv4 address of the interface (SIOCAIFADDR) and tells
// an AddrRegistrar backend (so it can steer ARP requests for it); backends
// without it just get nothing. EINVAL if addr is not IPv4, EEXIST if
// already added, ENXIO without a backend.
func (i *Interface) AddIPv4(addr netip.Addr) error { return i.ipv4(addr, true) }

// DelIPv4 removes an address (SIOCDIFADDR): EADDRNOTAVAIL if not added.
func (i *Interface) DelIPv4(addr netip.Addr) error { return i.ipv4(addr, false) }

func (i *Interface) ipv4(addr netip.Addr, add bool) error {
	op := "delete address"
	if add {
		op = "add address"
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if err := i.needBackend(op); err != nil {
		return err
	}
	addr = addr.Unmap()
	if !addr.Is4() {
		return opErr(i.name, fmt.Sprintf("%s %v: not IPv4", op, addr), unix.EINVAL)
	}
	_, have := i.addrs[addr]
	switch {
	case add && have:
		return opErr(i.name, fmt.Sprintf("%s %v", op, addr), unix.EEXIST)
	case !add && !have:
		return opErr(i.name, fmt.Sprintf("%s %v", op, addr), unix.EADDRNOTAVAIL)
	}
	if r, ok := i.backend().(AddrRegistrar); ok {
		if err := r.SetIPv4(addr, add); err != nil {
			return opErr(i.name, fmt.Sprintf("%s %v", op, addr), err)
		}
	}
	if i.addrs == nil {
		i.addrs = make(map[netip.Addr]struct{})
	}
	if add {
		i.addrs[addr] = struct{}{}
	} else {
		delete(i.addrs, addr)
	}
	return nil
}

// IPv4 lists the interface's IPv4 addresses, sorted.
func (i *Interface) IPv4() []netip.Addr {
	i.mu.Lock()
	l := make([]netip.Addr, 0, len(i.addrs))
	for a := range i.addrs {
		l = append(l, a)
	}
	i.mu.Unlock()
	sort.Slice(l, func(a, b int) bool { return l[a].Less(l[b]) })
	return l
}

// SetInput sets the upper layer's receive handler; nil removes it (frames
// then count as IDrops / INoHandler).
func (i *Interface) SetInput(fn Input) { i.SetInputBatch(fn, nil) }

// SetInputBatch is SetInput with an end-of-batch handler: end (if not nil)
// is called on a receiving goroutine after the fn calls for the frames of
// one batch, when the backend ends its batches (EndsBatches); it is called
// concurrently when several goroutines receive, each after its own batch.
// An upper layer may hold frames back (copied: fn's frame is the
// backend's) and hand them up in end, as GRO does; on a backend that does
// not end its batches it must not hold frames back, since end would never
// come. A nil fn removes both handlers.
func (i *Interface) SetInputBatch(fn Input, end func()) {
	if fn == nil {
		i.input.Store(nil)
		return
	}
	i.input.Store(&inputHandlers{fn: fn, end: end})
}

// EndsBatches reports whether the backend calls the end handler of
// SetInputBatch after every batch of frames it delivers (BatchEnder).
// False before the link string is set and after destroy.
func (i *Interface) EndsBatches() bool {
	be, ok := i.backend().(BatchEnder)
	return ok && be.EndsBatches()
}

// inputHandlers are SetInputBatch's handlers, swapped together.
type inputHandlers struct {
	fn  Input
	end func()
}
