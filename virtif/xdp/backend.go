// Package xdp is the AF_XDP backend of virtif: link strings "xdp:IFNAME,..."
// give an interface whose frames come from and go to a real NIC at
// kernel-bypass speed, while the host kernel keeps the NIC's other traffic.
//
// The steering program (package bpf) on the NIC redirects the frames that
// belong to a vif — its MAC, the multicast groups it joined, ARP requests for
// the IPv4 addresses it registered, everything when it is promiscuous — into
// an AF_XDP socket (package xsk) per NIC queue; one RX goroutine per queue,
// locked to its OS thread, hands them to the vif (VIF_DELIVERPKT). Send
// copies a frame's segments into one UMEM frame and stages it on the TX
// ring, refusing it (ENOBUFS) when there is no room: a frame Send accepted
// is never dropped by the backend. Flush (once per send batch) hands the
// staged frames to the kernel.
//
// Several vifs of one process may share a NIC; they then share its sockets
// (the kernel allows one UMEM per queue), and the program's metadata tag says
// whose each frame is (a lone vif's frames need none). On a driver without
// XDP metadata the program cannot tag: the frames it could not tag pass to
// the host (xdp_nometa), and within about a second (the RX goroutines look
// at that count every 100 ms while idle) the NIC switches, for good, to
// demultiplexing by MAC: the program stops tagging and the RX goroutine
// finds each frame's vif by the program's own rules in the same order
// (unicast MAC, ARP target, multicast MAC, promiscuous vif; a frame none
// names is counted in rx_untagged). Info().Demux says which; rx_demux_solo,
// rx_demux_tag and rx_demux_mac count how frames were demultiplexed. In MAC
// mode a frame steered just before its address moved to another vif of the
// NIC goes to the vif holding the address when the RX goroutine reads it.
// Another process cannot attach to a NIC in use (EBUSY).
//
// Open must run on a thread inside the NIC's network namespace: the NIC's
// name, the program's attachment and the sockets' binding are resolved there.
// Needs root, or CAP_NET_ADMIN + CAP_BPF + CAP_NET_RAW, and a kernel with
// CONFIG_XDP_SOCKETS and bpf_link for XDP (5.9+). Importing the package
// registers the scheme.
package xdp

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/virtif"
	"github.com/virtif-xdp/virtif-xdp/xsk"
)

func init() {
	// The only possible error is a second registration; the first stays.
	_ = virtif.RegisterBackend(Scheme, func(c virtif.BackendConfig) (virtif.Backend, error) { return Open(c) })
}

// xdpPacketHeadroom is XDP_PACKET_HEADROOM: the kernel places a received
// packet this far into its UMEM frame.
const xdpPacketHeadroom = 256

// txBatch is how many frames Send stages before it hands them to the kernel.
const txBatch = 64

// Backend is one vif's hold on a NIC.
type Backend struct {
	nic  *nic
	slot int
	name string
	mac  net.HardwareAddr
	// delivers[i] is the deliver function of the RX goroutine of the NIC's
	// i-th queue, with counters of its own (virtif's NewDeliver).
	delivers   []func([]byte)
	newDeliver func() func([]byte)
	deliver    func([]byte)
	dying      atomic.Bool
	closed     atomic.Bool

	// What this vif registered with the program, to undo at Close.
	regMu   sync.Mutex
	groups  map[string]net.HardwareAddr
	addrs   map[netip.Addr]bool
	promisc bool

	// The queue b sends on; its TX state is under txq.txMu.
	txq *queue

	rxq                   []paddedCounter // frames handed to delivers[i]
	txRingFull, txNoFrame atomic.Uint64   // frames Send refused (ENOBUFS)
	txTooBig              atomic.Uint64   // frames Send refused (EMSGSIZE)
	txKickErrors          atomic.Uint64   // kicks the kernel refused
	txUnsent              atomic.Uint64   // frames left on the TX ring at Close
}

var (
	_ virtif.Backend            = (*Backend)(nil)
	_ virtif.Flusher            = (*Backend)(nil)
	_ virtif.HardwareAddrSetter = (*Backend)(nil)
	_ virtif.MulticastFilter    = (*Backend)(nil)
	_ virtif.Promiscuous        = (*Backend)(nil)
	_ virtif.AddrRegistrar      = (*Backend)(nil)
	_ virtif.MTULimiter         = (*Backend)(nil)
	_ virtif.StatsReporter      = (*Backend)(nil)
)

// Open is VIFHYPER_CREATE for "xdp:" link strings. Errors: unix.EINVAL for a
// malformed link string (naming the key) or a queue the NIC lacks,
// unix.ENODEV for a missing NIC, unix.ENETDOWN for a NIC that is down,
// os.ErrPermission without the privileges, unix.EBUSY when another program
// holds the NIC, unix.EOPNOTSUPP for mode=zerocopy on a driver without it,
// unix.EAFNOSUPPORT without AF_XDP; each says what to do. A failed Open
// leaves nothing behind: no program on the NIC, no socket, no goroutine.
func Open(bc virtif.BackendConfig) (*Backend, error) {
	c, err := ParseLinkStr(bc.Link)
	if err != nil {
		return nil, err
	}
	if bc.Deliver == nil {
		return nil, fmt.Errorf("xdp: %s: no deliver function: %w", bc.Name, unix.EINVAL)
	}
	b := &Backend{name: bc.Name, mac: append(net.HardwareAddr(nil), bc.MAC...), deliver: bc.Deliver, newDeliver: bc.NewDeliver}
	// The proposed MAC must be nobody's on the segment: refused with
	// virtif.ErrMACInUse, the interface proposes another.
	if ifc, err := net.InterfaceByName(c.Ifname); err == nil {
		if where, err := macSeenOn(ifc.Index, b.mac); err == nil && where != "" {
			return nil, fmt.Errorf("xdp: %s on %s: MAC %s: %s: %w", bc.Name, c.Ifname, b.mac, where, virtif.ErrMACInUse)
		}
	}
	n, slot, err := acquireNIC(c, b)
	if err != nil {
		return nil, withPrivilegeHint(err)
	}
	b.nic = n
	b.txq = n.queues[slot%len(n.queues)]
	for _, q := range n.queues {
		if err = faultAt("setsocket", q.id); err == nil {
			err = n.steer.SetSocket(slot, q.id, q.sock.FD())
		}
		if err != nil {
			break
		}
	}
	if err == nil {
		if err = faultAt("addmac", -1); err == nil {
			err = n.steer.AddMAC(b.mac, slot)
			if errors.Is(err, unix.EEXIST) {
				err = fmt.Errorf("MAC %s: another vif of this process has it: %w (%w)", b.mac, virtif.ErrMACInUse, err)
			}
		}
	}
	if err == nil {
		if err = n.addrs.add(b.mac); err != nil {
			_ = n.steer.DelMAC(b.mac, slot)
		}
	}
	if err != nil {
		// Close undoes exactly what was done: the sockets set for the
		// slot, the MAC if it was added, the slot, and the nic when b was
		// its only vif.
		err = fmt.Errorf("xdp: %s on %s: %w", bc.Name, c.Ifname, err)
		if cerr := b.Close(); cerr != nil {
			err = fmt.Errorf("%w; undoing it: %w", err, cerr)
		}
		return nil, withPrivilegeHint(err)
	}
	return b, nil
}

func withPrivilegeHint(err error) error {
	if (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)) && !strings.Contains(err.Error(), "CAP_") {
		return fmt.Errorf("%w (run as root, or grant CAP_NET_ADMIN, CAP_BPF and CAP_NET_RAW)", err)
	}
	return err
}

// Send is VIFHYPER_SEND: it copies the frame's segments into a free UMEM
// frame and stages it on the TX ring of the vif's queue; the kernel gets
// the staged frames every txBatch frames and at Flush. A nil error means
// the frame has its ring slot: the backend never drops it later (only the
// kernel can, and counts it). Errors, all before anything is staged:
// ENOBUFS when no UMEM frame or no TX ring slot is free even after kicking
// the kernel and reaping completions (back-pressure, counted in tx_no_frame
// or tx_ring_full; the caller counts the drop), EMSGSIZE for a frame larger
// than a UMEM frame, net.ErrClosed after Close. Safe for concurrent use,
// also with Close.
func (b *Backend) Send(segs [][]byte) error {
	q := b.txq
	q.txMu.Lock()
	var err error
	if b.closed.Load() {
		err = net.ErrClosed
	} else {
		err = b.sendLocked(segs)
	}
	q.txMu.Unlock()
	return err
}

func (b *Backend) sendLocked(segs [][]byte) error {
	q := b.txq
	addr, buf, ok := q.sock.NextFrame()
	if !ok {
		// Everything is in flight: push out what is staged and retry once.
		_ = b.pushLocked()
		if addr, buf, ok = q.sock.NextFrame(); !ok {
			b.txNoFrame.Add(1)
			return fmt.Errorf("xdp: %s: no free TX frame: %w", b.name, unix.ENOBUFS)
		}
	}
	n := 0
	for _, s := range segs {
		if n+len(s) > len(buf) {
			q.sock.FreeFrame(addr)
			b.txTooBig.Add(1)
			return fmt.Errorf("xdp: %s: frame longer than the %d-byte UMEM frame: %w", b.name, len(buf), unix.EMSGSIZE)
		}
		n += copy(buf[n:], s)
	}
	d := [1]xsk.Desc{{Addr: addr, Len: uint32(n)}}
	if q.sock.Stage(d[:]) == 0 {
		// The ring is full: let the kernel take some and retry once.
		_ = b.pushLocked()
		if q.sock.Stage(d[:]) == 0 {
			q.sock.FreeFrame(addr)
			b.txRingFull.Add(1)
			return fmt.Errorf("xdp: %s: TX ring full: %w", b.name, unix.ENOBUFS)
		}
	}
	if q.staged++; q.staged >= txBatch {
		_ = b.pushLocked() // the frame is staged: a kick error is only counted
	}
	return nil
}

// pushLocked hands the staged frames to the kernel, kicks it and reaps
// completions. A kick error is counted (tx_kick_errors) and returned; the
// frames stay on the ring.
func (b *Backend) pushLocked() error {
	q := b.txq
	b.nic.noteTX()
	q.sock.Complete()
	err := q.sock.Kick()
	q.staged = 0
	q.sock.Complete()
	if err != nil {
		b.txKickErrors.Add(1)
		return fmt.Errorf("xdp: %s: transmit: %w", b.name, err)
	}
	return nil
}

// Flush hands the staged frames to the kernel and kicks it until it has
// taken them all (or has taken none for drainStall: then they wait on the
// ring for the next Send or Flush). Every frame Send accepted is already on the TX ring, so
// an error here (a kick the kernel refused, e.g. ENXIO when the NIC went
// away; counted in tx_kick_errors) changes no frame's fate: the frames stay
// on the ring for the next kick. It is returned for direct users of the
// Backend; net.ErrClosed after Close.
//
// Called while an RX goroutine of the NIC is delivering a batch — typically
// from an input handler that answers or forwards — it returns at once and
// the RX goroutine flushes at the end of its batch: one kick per batch, not
// per frame. A failure there is counted, not returned.
func (b *Backend) Flush() error {
	if b.closed.Load() {
		return net.ErrClosed
	}
	n := b.nic
	if b.slot < 64 {
		n.flushBits.Or(1 << b.slot)
		if n.rxDepth.Load() > 0 {
			return nil
		}
		if n.flushBits.And(^(uint64(1)<<b.slot))&(1<<b.slot) == 0 {
			return nil // an RX goroutine took it meanwhile
		}
	}
	return b.flushNow()
}

func (b *Backend) flushNow() error {
	b.txq.txMu.Lock()
	defer b.txq.txMu.Unlock()
	if b.closed.Load() {
		return net.ErrClosed // Close flushed what b staged
	}
	return b.drainLocked()
}

// drainLocked pushes the staged frames and kicks until the kernel has
// taken every descriptor: in copy mode one kick sends only a budget of
// frames, and frames left on the ring would wait for the next send. While
// the device is busy (a slow receiver behind a veth) it keeps kicking as
// long as the kernel takes frames; after drainStall without progress it
// gives up, and the frames wait on the ring for the next Send or Flush.
func (b *Backend) drainLocked() error {
	q := b.txq
	err := b.pushLocked()
	last, idle := -1, 0
	var since time.Time
	for err == nil {
		left := q.sock.TXPending()
		if left == 0 {
			break
		}
		if left != last {
			last, idle = left, 0
		} else if idle++; idle == 1024 {
			since = time.Now()
		} else if idle > 1024 && idle%256 == 0 && time.Since(since) > drainStall {
			break
		}
		if err = q.sock.Kick(); err != nil {
			b.txKickErrors.Add(1)
			err = fmt.Errorf("xdp: %s: transmit: %w", b.name, err)
		}
		q.sock.Complete()
	}
	return err
}

// drainStall is how long Flush kicks a TX ring the kernel takes nothing
// from before it returns.
const drainStall = 100 * time.Millisecond

// Dying is VIFHYPER_DYING: the vif receives nothing from now on (its frames
// pass to the host kernel again).
func (b *Backend) Dying() error {
	if b.dying.Swap(true) {
		return nil
	}
	n := b.nic
	var errs []error
	for _, q := range n.queues {
		if err := n.steer.ClearSocket(b.slot, q.id); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close is VIFHYPER_DESTROY: it waits until no RX goroutine is handing this
// vif a frame, and the last vif on a NIC takes the program off it and closes
// the sockets. It never waits while holding the lock that Open and Close of
// other vifs take.
//
// Called from an input handler (on the RX goroutine of one of the NIC's
// queues, or of another NIC's), Close cannot wait for the batch it is part
// of: it stops steering frames to the vif and returns, and the rest — the
// wait for the RX batches in progress, freeing the vif's slot, and for the
// last vif the teardown of the NIC (Done is closed when its RX goroutines
// have ended) — completes by itself when those batches end. Until then the
// rest of a batch in progress may still hand the vif frames (a
// virtif.Interface counts them as dropped: it is down). Open and Close of
// other vifs, from a handler or elsewhere, work meanwhile; only an Open of
// the same NIC from a handler while its last vif's teardown is in progress
// fails, with EBUSY.
func (b *Backend) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	// No Send of b is past its closed check once txMu is ours: what b
	// staged goes out now, and nothing touches the socket for b after.
	q := b.txq
	q.txMu.Lock()
	_ = b.drainLocked() // counted in tx_kick_errors
	if left := q.sock.TXPending(); left > 0 {
		b.txUnsent.Add(uint64(left)) // the kernel would not take them
	}
	q.txMu.Unlock()
	dyErr := b.Dying()
	n := b.nic
	// Undo what this vif registered, so the next vif in the slot starts clean.
	errs := []error{dyErr}
	b.regMu.Lock()
	errs = append(errs, ignoreGone(n.steer.DelMAC(b.mac, b.slot)), n.addrs.del(b.mac))
	for _, g := range b.groups {
		errs = append(errs, ignoreGone(n.steer.DelMAC(g, b.slot)), n.addrs.del(g))
	}
	for a := range b.addrs {
		errs = append(errs, ignoreGone(n.steer.DelIPv4(a, b.slot)))
	}
	if b.promisc {
		errs = append(errs, ignoreGone(n.steer.SetPromisc(b.slot, false)), n.addrs.promisc(false))
	}
	b.regMu.Unlock()
	errs = append(errs, n.release(b.slot))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("xdp: %s: close: %w", b.name, err)
	}
	return nil
}

// ignoreGone: undoing a registration that is already gone (the program was
// closed with its NIC) is not an error.
func ignoreGone(err error) error {
	if errors.Is(err, unix.ENOENT) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Err says why the vif stopped receiving before it was closed: ENETDOWN when
// the NIC was deleted or set down (a NIC that only lost its carrier is not
// an error: frames arrive again when it is back); nil while it works. It is
// noticed within about a second in every rxwait and busypoll mode. A failed
// NIC is torn down at once (program off, sockets closed): the vif's sends
// fail, and Close is all that is left to call; the next Open of the NIC
// sets it up afresh.
func (b *Backend) Err() error { return b.nic.Err() }

// Done is closed when the NIC's RX goroutines have ended: after Close of the
// last vif on the NIC, or when the NIC failed (see Err).
func (b *Backend) Done() <-chan struct{} { return b.nic.done }

// Info describes how the NIC is served.
type Info struct {
	Ifindex int
	Attach  string // "native" or "generic"
	Mode    string // "copy" or "zerocopy"
	Queues  []int
	Slot    int // this vif's number in the steering program
	// AddrFilter says whether the NIC filters by address (and was given
	// the vifs' MACs) or went promiscuous for them.
	AddrFilter AddrFilter
	// LeftoversRemoved counts the address-list entries of dead processes
	// that opening the NIC removed.
	LeftoversRemoved int
	// Demux is how the RX goroutine tells the frames of several vifs on
	// the NIC apart: "tag" (the program's XDP metadata tag) or, once the
	// driver was found to have no XDP metadata, "mac" (the program's rules,
	// applied by the RX goroutine). A lone vif's frames need neither.
	Demux string
}

// Info reports the attach and bind modes chosen.
func (b *Backend) Info() Info {
	i := Info{Ifindex: b.nic.ifindex, Attach: b.nic.attach.String(), Mode: b.nic.mode.String(), Slot: b.slot, Demux: "tag"}
	if b.nic.demuxMAC.Load() {
		i.Demux = "mac"
	}
	i.AddrFilter, i.LeftoversRemoved = b.nic.addrs.info()
	for _, q := range b.nic.queues {
		i.Queues = append(i.Queues, q.id)
	}
	return i
}

// SetHardwareAddr moves the steering of unicast frames to the new MAC
// (the MAC the vif has already: nothing to do). After Close: net.ErrClosed.
func (b *Backend) SetHardwareAddr(mac net.HardwareAddr) error {
	b.regMu.Lock()
	defer b.regMu.Unlock()
	if b.closed.Load() {
		return fmt.Errorf("xdp: %s: set MAC: %w", b.name, net.ErrClosed)
	}
	if bytes.Equal(mac, b.mac) {
		return nil // adding it again and deleting the old would delete it
	}
	if err := b.nic.addrs.add(mac); err != nil {
		return fmt.Errorf("xdp: %s: %w", b.name, err)
	}
	if err := b.nic.steer.AddMAC(mac, b.slot); err != nil {
		_ = b.nic.addrs.del(mac)
		return fmt.Errorf("xdp: %s: %w", b.name, err)
	}
	if err := b.nic.steer.DelMAC(b.mac, b.slot); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("xdp: %s: %w", b.name, err)
	}
	if err := b.nic.addrs.del(b.mac); err != nil {
		return fmt.Errorf("xdp: %s: %w", b.name, err)
	}
	b.mac = append(b.mac[:0], mac...)
	return nil
}

// SetMulticast steers a group's frames to this vif. Only one vif per NIC can
// receive a group (XDP cannot copy a frame into two sockets): joining one
// another vif holds fails with EEXIST.
func (b *Backend) SetMulticast(group net.HardwareAddr, join bool) error {
	b.regMu.Lock()
	defer b.regMu.Unlock()
	if b.closed.Load() {
		return fmt.Errorf("xdp: %s: multicast: %w", b.name, net.ErrClosed)
	}
	var err error
	if join {
		if err = b.nic.addrs.add(group); err == nil {
			if err = b.nic.steer.AddMAC(group, b.slot); err != nil {
				_ = b.nic.addrs.del(group)
			}
		}
	} else if err = b.nic.steer.DelMAC(group, b.slot); err == nil {
		err = b.nic.addrs.del(group)
	}
	if err != nil {
		return fmt.Errorf("xdp: %s: multicast %s: %w", b.name, group, err)
	}
	if b.groups == nil {
		b.groups = map[string]net.HardwareAddr{}
	}
	if join {
		b.groups[string(group)] = append(net.HardwareAddr(nil), group...)
	} else {
		delete(b.groups, string(group))
	}
	return nil
}

// SetPromisc makes the program hand this vif every frame no other rule
// claims, and while any vif of the NIC is promiscuous the NIC is too (a
// membership the kernel counts in its promiscuity, as tcpdump's).
func (b *Backend) SetPromisc(on bool) error {
	b.regMu.Lock()
	defer b.regMu.Unlock()
	if b.closed.Load() {
		return fmt.Errorf("xdp: %s: promiscuous: %w", b.name, net.ErrClosed)
	}
	if on != b.promisc {
		// The NIC too: one that filters by address would drop the
		// frames for other MACs before the program runs.
		if err := b.nic.addrs.promisc(on); err != nil {
			return fmt.Errorf("xdp: %s: promiscuous: %w", b.name, err)
		}
	}
	if err := b.nic.steer.SetPromisc(b.slot, on); err != nil {
		if on != b.promisc {
			_ = b.nic.addrs.promisc(!on)
		}
		return fmt.Errorf("xdp: %s: promiscuous: %w", b.name, err)
	}
	b.promisc = on
	return nil
}

// SetIPv4 steers ARP requests for addr to this vif.
func (b *Backend) SetIPv4(addr netip.Addr, add bool) error {
	b.regMu.Lock()
	defer b.regMu.Unlock()
	if b.closed.Load() {
		return fmt.Errorf("xdp: %s: IPv4: %w", b.name, net.ErrClosed)
	}
	var err error
	if add {
		err = b.nic.steer.AddIPv4(addr, b.slot)
	} else {
		err = b.nic.steer.DelIPv4(addr, b.slot)
	}
	if err != nil {
		return fmt.Errorf("xdp: %s: IPv4 %s: %w", b.name, addr, err)
	}
	if b.addrs == nil {
		b.addrs = map[netip.Addr]bool{}
	}
	if add {
		b.addrs[addr] = true
	} else {
		delete(b.addrs, addr)
	}
	return nil
}

// MaxMTU is what fits a UMEM frame behind the kernel's headroom, less the
// Ethernet header and a VLAN tag.
func (b *Backend) MaxMTU() int { return b.nic.cfg.FrameSize - xdpPacketHeadroom - 18 }

// AppendStats adds the vif's program counters (xdp_*; xdp_nometa counts
// its frames that passed to the host because the driver could not tag
// them), the NIC's socket counters (shared by the vifs on it), how the NIC's
// RX goroutines found the vif of the frames they handed out (rx_demux_solo:
// a lone vif's untagged frames, rx_demux_tag: by the program's tag,
// rx_demux_mac: by MAC on a driver without XDP metadata; all vifs of the
// NIC together) and this backend's drops.
func (b *Backend) AppendStats(dst []virtif.Stat) []virtif.Stat {
	n := b.nic
	add := func(name string, v uint64) { dst = append(dst, virtif.Stat{Name: name, Value: v}) }
	// After Close the slot may be another vif's: its counters are not ours.
	if c, err := n.steer.Counters(b.slot); err == nil && !b.closed.Load() {
		add("xdp_unicast", c.Unicast)
		add("xdp_multicast", c.Multicast)
		add("xdp_arp", c.ARP)
		add("xdp_promisc", c.Promisc)
		add("xdp_nosocket", c.NoSocket)
		add("xdp_nometa", c.NoMeta)
	}
	if c, err := n.steer.HostCounters(); err == nil {
		add("xdp_host_pass", c.Pass)
		add("xdp_host_nosocket", c.NoSocket)
		add("xdp_host_runt", c.Runt)
		add("xdp_host_nometa", c.NoMeta)
	}
	var ks xsk.Stats
	for i, q := range n.queues {
		if s, err := q.sock.Stats(); err == nil {
			if len(n.queues) > 1 {
				pfx := "q" + strconv.Itoa(q.id) + "_"
				add(pfx+"rx_frames", b.rxq[i].n.Load())
				add(pfx+"xsk_rx_dropped", s.RXDropped)
				add(pfx+"xsk_rx_ring_full", s.RXRingFull)
				add(pfx+"xsk_rx_fill_ring_empty", s.RXFillRingEmptyDescs)
			}
			ks.RXDropped += s.RXDropped
			ks.RXInvalidDescs += s.RXInvalidDescs
			ks.TXInvalidDescs += s.TXInvalidDescs
			ks.RXRingFull += s.RXRingFull
			ks.RXFillRingEmptyDescs += s.RXFillRingEmptyDescs
			ks.TXRingEmptyDescs += s.TXRingEmptyDescs
		}
	}
	add("xsk_rx_dropped", ks.RXDropped)
	add("xsk_rx_invalid_descs", ks.RXInvalidDescs)
	add("xsk_tx_invalid_descs", ks.TXInvalidDescs)
	add("xsk_rx_ring_full", ks.RXRingFull)
	add("xsk_rx_fill_ring_empty", ks.RXFillRingEmptyDescs)
	add("xsk_tx_ring_empty", ks.TXRingEmptyDescs)
	var rx uint64
	for i := range b.rxq {
		rx += b.rxq[i].n.Load()
	}
	add("rx_frames", rx)
	var solo, byTag, byMAC uint64
	for _, q := range n.queues {
		solo += q.bySolo.n.Load()
		byTag += q.byTag.n.Load()
		byMAC += q.byMAC.n.Load()
	}
	add("rx_demux_solo", solo)
	add("rx_demux_tag", byTag)
	add("rx_demux_mac", byMAC)
	add("rx_untagged", n.untagged.Load())
	add("rx_unclaimed", n.unclaimed.Load())
	add("tx_ring_full", b.txRingFull.Load())
	add("tx_no_frame", b.txNoFrame.Load())
	add("tx_too_big", b.txTooBig.Load())
	add("tx_kick_errors", b.txKickErrors.Load())
	add("tx_unsent_at_close", b.txUnsent.Load())
	return dst
}

// paddedCounter is a counter alone on its cache line: each RX goroutine
// bumps its own.
type paddedCounter struct {
	n atomic.Uint64
	_ [56]byte
}

// add adds v; only the counter's one writer may call it.
func (c *paddedCounter) add(v uint64) {
	if v != 0 {
		c.n.Store(c.n.Load() + v)
	}
}

// bindQueues gives b a deliver function and a counter per NIC queue, before
// any RX goroutine can see b.
func (b *Backend) bindQueues(nq int) {
	b.delivers = make([]func([]byte), nq)
	for i := range b.delivers {
		if b.newDeliver != nil {
			b.delivers[i] = b.newDeliver()
		} else {
			b.delivers[i] = b.deliver
		}
	}
	b.rxq = make([]paddedCounter, nq)
}
