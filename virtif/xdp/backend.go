//go:build linux

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
// Jumbo frames (link-string key sg, default auto): where the kernel and the
// driver allow multi-buffer AF_XDP (XDP_USE_SG, 6.6; the program loaded as
// xdp.frags, 5.18) a frame longer than a UMEM frame travels as a chain of
// descriptors, gathered on RX into a buffer of the queue and staged whole
// on TX, and the vif's MTU may go up to the NIC's (MaxMTU; Info says what
// sets it and why multi-buffer is off when it is).
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
//
// With switch=PATH in the link string, the NIC is shared by processes
// through a `virtif-xdp switch` listening at PATH (internal/switchd): the
// vif gets a tenant port, a veth end moved into the namespace of the thread
// calling Open, registers its MAC, groups and IPv4 addresses with the switch
// as well, and serves that veth end as its NIC. When the switch goes away the
// veth end is deleted and the vif fails as for a vanished NIC, Err naming
// the switch.
package xdp

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/virtif"
)

func init() {
	// The only possible error is a second registration; the first stays.
	_ = virtif.RegisterBackend(Scheme, func(c virtif.BackendConfig) (virtif.Backend, error) { return Open(c) })
}

// txBatch is how many frames Send stages before it hands them to the kernel.
const txBatch = 64

// Backend is one vif's hold on a NIC.
type Backend struct {
	nic  *nic
	slot int
	name string
	sw   *switchPort // nil unless the link string has switch=
	mac  net.HardwareAddr
	// delivers[i] is the deliver function of the RX goroutine of the NIC's
	// i-th queue, with counters of its own (virtif's NewDeliver).
	delivers   []func([]byte)
	newDeliver func() func([]byte)
	deliver    func([]byte)
	endBatch   func() // virtif's EndBatch, after each RX batch (endBatches)
	dying      atomic.Bool
	closed     atomic.Bool

	// What this vif registered with the program, to undo at Close.
	regMu   sync.Mutex
	groups  map[string]net.HardwareAddr
	addrs   map[netip.Addr]bool
	promisc bool

	// The queue b sends on; its TX state is under txq.txMu.
	txq *queue

	rxFrames              []paddedCounter // frames handed to delivers[i]
	txRingFull, txNoFrame atomic.Uint64   // frames Send refused (ENOBUFS)
	txTooBig              atomic.Uint64   // frames Send refused (EMSGSIZE)
	txChains              atomic.Uint64   // frames Send staged as a chain of descriptors
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
	_ virtif.MTUReasoner        = (*Backend)(nil)
	_ virtif.StatsReporter      = (*Backend)(nil)
	_ virtif.BatchEnder         = (*Backend)(nil)
)

// EndsBatches is true when the interface gave an EndBatch: each RX
// goroutine calls it for every vif of the NIC after each batch.
func (b *Backend) EndsBatches() bool { return b.endBatch != nil }

// Open is VIFHYPER_CREATE for "xdp:" link strings. Errors: unix.EINVAL for a
// malformed link string (naming the key) or a queue the NIC lacks,
// unix.ENODEV for a missing NIC, unix.ENETDOWN for a NIC that is down,
// os.ErrPermission without the privileges, unix.EBUSY when another program
// holds the NIC, unix.EOPNOTSUPP for mode=zerocopy on a driver without it,
// unix.EAFNOSUPPORT without AF_XDP. Each names the operation refused; the
// errors about the link string or the NIC also say what to do, while
// privileges and kernel features are the caller's to explain. A failed Open
// leaves nothing behind: no program on the NIC, no socket, no goroutine.
func Open(bc virtif.BackendConfig) (*Backend, error) {
	c, err := ParseLinkStr(bc.Link)
	if err != nil {
		return nil, err
	}
	if bc.Deliver == nil {
		return nil, fmt.Errorf("xdp: %s: no deliver function: %w", bc.Name, unix.EINVAL)
	}
	b := &Backend{name: bc.Name, mac: append(net.HardwareAddr(nil), bc.MAC...), deliver: bc.Deliver, newDeliver: bc.NewDeliver, endBatch: bc.EndBatch}
	if c.Switch != "" {
		if err := b.joinSwitch(c); err != nil { // c.Ifname is now the tenant port
			return nil, err
		}
	}
	// The proposed MAC must be nobody's on the segment: refused with
	// virtif.ErrMACInUse, the interface proposes another.
	if ifc, err := net.InterfaceByName(c.Ifname); err == nil {
		if where, err := macSeenOn(ifc.Index, b.mac); err == nil && where != "" {
			_ = b.sw.close()
			return nil, fmt.Errorf("xdp: %s on %s: MAC %s: %s: %w", bc.Name, c.Ifname, b.mac, where, virtif.ErrMACInUse)
		}
	}
	n, slot, err := acquireNIC(c, b)
	if err != nil {
		_ = b.sw.close()
		return nil, err
	}
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
	if err == nil {
		err = b.sw.register("mac", b.mac.String(), true)
	}
	if err != nil {
		// Close undoes exactly what was done: the sockets set for the
		// slot, the MAC if it was added, the slot, and the nic when b was
		// its only vif.
		err = fmt.Errorf("xdp: %s on %s: %w", bc.Name, c.Ifname, err)
		if cerr := b.Close(); cerr != nil {
			err = fmt.Errorf("%w; undoing it: %w", err, cerr)
		}
		return nil, err
	}
	return b, nil
}

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
	errs = append(errs, n.release(b.slot), b.sw.close())
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
func (b *Backend) Err() error {
	err := b.nic.Err()
	if sw := b.sw.gone(); sw != nil && err != nil {
		return fmt.Errorf("the switch's port is gone with the switch: %w; %w", sw, err)
	}
	return err
}

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
	// SG says the NIC is bound for multi-buffer frames (sg=): frames
	// longer than a UMEM frame travel as descriptor chains both ways.
	SG bool
	// MaxMTU is the largest MTU the vif may take (Backend.MaxMTU), and
	// MTULimit what sets it, with why multi-buffer is off when it is.
	MaxMTU   int
	MTULimit string
	// BusyPoll says whether busy polling is in effect: "off", "on, ..."
	// with the NAPI ids polled, or a no-op while no socket has a NAPI id
	// (nothing received yet, or a driver without NAPI); and whether the
	// NIC's NAPI settings were set (napi=on).
	BusyPoll string
}

// Info reports the attach and bind modes chosen.
func (b *Backend) Info() Info {
	i := Info{Ifindex: b.nic.ifindex, Attach: b.nic.attach.String(), Mode: b.nic.mode.String(), Slot: b.slot, Demux: "tag",
		BusyPoll: b.nic.busyPollState()}
	if b.nic.demuxMAC.Load() {
		i.Demux = "mac"
	}
	i.SG = b.nic.sg
	i.MaxMTU, i.MTULimit = b.nic.maxMTU()
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
	if err := b.sw.register("mac", mac.String(), true); err != nil {
		return fmt.Errorf("xdp: %s: %w", b.name, err)
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
	if err := b.sw.register("mac", b.mac.String(), false); err != nil {
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
	// With a switch, the switch steers the group from the NIC to the port
	// first (a group another tenant holds: EEXIST).
	if err := b.sw.register("group", group.String(), join); err != nil {
		return fmt.Errorf("xdp: %s: multicast %s: %w", b.name, group, err)
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
	if err := b.sw.register("ipv4", addr.String(), add); err != nil {
		return fmt.Errorf("xdp: %s: IPv4 %s: %w", b.name, addr, err)
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

// MaxMTU is the largest MTU the vif may take. Single-buffer (sg=off, or
// multi-buffer refused: see Info().MTULimit) it is what fits a UMEM frame
// behind the kernel's headroom, less the Ethernet header and a VLAN tag.
// With multi-buffer it is the NIC's MTU (as the RX goroutines last saw it
// in their idle checks, at most about a second ago), up to what a
// chain of maxChain UMEM frames holds, never less than the single-buffer
// ceiling.
func (b *Backend) MaxMTU() int {
	m, _ := b.nic.maxMTU()
	return m
}

// MaxMTUReason says what sets MaxMTU (virtif.MTUReasoner).
func (b *Backend) MaxMTUReason() string {
	_, why := b.nic.maxMTU()
	return why
}

// maxMTU is MaxMTU and what sets it.
func (n *nic) maxMTU() (int, string) {
	rx := n.cfg.FrameSize - unix.XDP_PACKET_HEADROOM
	single := rx - virtif.EtherVLANHeaderLen
	if !n.sg {
		return single, fmt.Sprintf("one %d-byte UMEM frame less %d bytes of kernel headroom and 18 of Ethernet and VLAN headers; multi-buffer is off: %s",
			n.cfg.FrameSize, unix.XDP_PACKET_HEADROOM, n.sgWhy)
	}
	chain := maxChain*rx - virtif.EtherVLANHeaderLen
	link := int(n.linkMTU.Load())
	switch {
	case link <= single:
		return single, fmt.Sprintf("one %d-byte UMEM frame (the NIC's MTU, %d, is lower)", n.cfg.FrameSize, link)
	case link <= chain:
		return link, fmt.Sprintf("the NIC's MTU (multi-buffer: frames in up to %d UMEM frames)", maxChain)
	}
	return chain, fmt.Sprintf("a chain of %d UMEM frames of %d bytes each for a received frame, less 18 bytes of Ethernet and VLAN headers (the NIC's MTU is %d)",
		maxChain, rx, link)
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
	b.rxFrames = make([]paddedCounter, nq)
}
