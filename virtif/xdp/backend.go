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
	"strconv"
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

// Send is VIFHYPER_SEND: it copies the frame's segments into a free UMEM
// frame and stages it on the TX ring of the vif's queue; the kernel gets
// the staged frames every txBatch frames and at Flush. A nil error means
// the frame has its ring slot: the backend never drops it later (only the
// kernel can, and counts it). Errors, all before anything is staged:
// ENOBUFS when no UMEM frame or no TX ring slot is free even after kicking
// the kernel and reaping completions (back-pressure, counted in tx_no_frame
// or tx_ring_full; the caller counts the drop), EMSGSIZE for a frame larger
// than a UMEM frame on a NIC bound without multi-buffer (or than maxChain
// frames with it), net.ErrClosed after Close. Safe for concurrent use,
// also with Close.
//
// On a NIC bound with multi-buffer (Info().SG) a frame longer than a UMEM
// frame goes out as a chain of descriptors, one UMEM frame each, staged
// whole or not at all.
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
			if b.nic.sg {
				return b.sendChainLocked(segs)
			}
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

// sendChainLocked is sendLocked for a frame longer than a UMEM frame on a
// NIC bound with multi-buffer: the frame is copied into as many UMEM frames
// as it needs (at most maxChain) and staged as one chain, PktContd on all
// descriptors but the last; the same back-pressure and errors as
// sendLocked, nothing staged on error.
func (b *Backend) sendChainLocked(segs [][]byte) error {
	q := b.txq
	fs := q.sock.FrameSize()
	total := 0
	for _, s := range segs {
		total += len(s)
	}
	k := (total + fs - 1) / fs
	if k > maxChain {
		b.txTooBig.Add(1)
		return fmt.Errorf("xdp: %s: frame of %d bytes longer than %d UMEM frames of %d: %w", b.name, total, maxChain, fs, unix.EMSGSIZE)
	}
	var descs [maxChain]xsk.Desc
	var bufs [maxChain][]byte
	free := func(n int) {
		for _, d := range descs[:n] {
			q.sock.FreeFrame(d.Addr)
		}
	}
	for got, pushed := 0, false; got < k; {
		addr, buf, ok := q.sock.NextFrame()
		if !ok {
			if pushed {
				free(got)
				b.txNoFrame.Add(1)
				return fmt.Errorf("xdp: %s: no %d free TX frames: %w", b.name, k, unix.ENOBUFS)
			}
			// Everything is in flight: push out what is staged and retry once.
			_ = b.pushLocked()
			pushed = true
			continue
		}
		descs[got], bufs[got] = xsk.Desc{Addr: addr, Options: xsk.PktContd}, buf
		got++
	}
	j, off := 0, 0
	for _, s := range segs {
		for len(s) > 0 {
			c := copy(bufs[j][off:], s)
			s, off = s[c:], off+c
			if off == fs {
				descs[j].Len = uint32(off)
				j, off = j+1, 0
			}
		}
	}
	if off > 0 {
		descs[j].Len = uint32(off)
	}
	descs[k-1].Options = 0
	if q.sock.Stage(descs[:k]) == 0 {
		// The ring is full: let the kernel take some and retry once.
		_ = b.pushLocked()
		if q.sock.Stage(descs[:k]) == 0 {
			free(k)
			b.txRingFull.Add(1)
			return fmt.Errorf("xdp: %s: TX ring full: %w", b.name, unix.ENOBUFS)
		}
	}
	b.txChains.Add(1)
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
// ring, and the NIC's idle RX goroutine kicks them on every checkEvery,
// counted in tx_idle_kicks, until the next Send or Flush). Every frame Send accepted is already on the TX ring, so
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
	if b.slot < flushBitsLen {
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
		} else if idle++; idle == drainSpins {
			since = time.Now()
		} else if idle > drainSpins && idle%drainClockEvery == 0 && time.Since(since) > drainStall {
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
// from before it returns (a variable for tests). It counts from the
// drainSpins-th kick without progress, and the clock is read every
// drainClockEvery kicks: a busy device usually takes frames again within a
// few kicks, so the common case reads no clock at all.
var drainStall = 100 * time.Millisecond

const (
	drainSpins      = 1024
	drainClockEvery = 256
)

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

// AppendStats adds the vif's program counters (xdp_*; xdp_nometa counts
// its frames that passed to the host because the driver could not tag
// them), the NIC's socket counters (shared by the vifs on it), how the NIC's
// RX goroutines found the vif of the frames they handed out (rx_demux_solo:
// a lone vif's untagged frames, rx_demux_tag: by the program's tag,
// rx_demux_mac: by MAC on a driver without XDP metadata; all vifs of the
// NIC together), the multi-buffer frames they gathered from descriptor
// chains (rx_chains) and dropped (rx_chain_too_long: more than 18
// descriptors; rx_chain_truncated: cut off at the RX ring's end), and this
// backend's drops and chains sent (tx_chains).
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
				add(pfx+"rx_frames", b.rxFrames[i].n.Load())
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
	for i := range b.rxFrames {
		rx += b.rxFrames[i].n.Load()
	}
	add("rx_frames", rx)
	// Counters of the NIC's RX goroutines, summed over its queues.
	sum := func(name string, c func(q *queue) *paddedCounter) {
		var v uint64
		for _, q := range n.queues {
			v += c(q).n.Load()
		}
		add(name, v)
	}
	sum("rx_demux_solo", func(q *queue) *paddedCounter { return &q.bySolo })
	sum("rx_demux_tag", func(q *queue) *paddedCounter { return &q.byTag })
	sum("rx_demux_mac", func(q *queue) *paddedCounter { return &q.byMAC })
	sum("rx_chains", func(q *queue) *paddedCounter { return &q.chains })
	sum("rx_chain_too_long", func(q *queue) *paddedCounter { return &q.tooLong })
	sum("rx_chain_truncated", func(q *queue) *paddedCounter { return &q.truncated })
	sum("tx_idle_kicks", func(q *queue) *paddedCounter { return &q.idleKicks })
	add("rx_untagged", n.untagged.Load())
	add("rx_unclaimed", n.unclaimed.Load())
	add("tx_ring_full", b.txRingFull.Load())
	add("tx_no_frame", b.txNoFrame.Load())
	add("tx_too_big", b.txTooBig.Load())
	add("tx_chains", b.txChains.Load())
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
	b.rxFrames = make([]paddedCounter, nq)
}
