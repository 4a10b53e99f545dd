//go:build linux

package xdp

import (
	"errors"
	"fmt"
	"math/bits"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/bpf"
	"github.com/virtif-xdp/virtif-xdp/xsk"
)

// A NIC is shared by every vif of this process that names it: the kernel
// binds one UMEM per NIC queue, and one XDP program per NIC. So a nic owns
// the steering program, one socket per served queue and one RX goroutine per
// socket; the program tags each redirected frame with its vif (XDP
// metadata) and the RX goroutine hands it to that vif. On a driver without
// XDP metadata the program cannot tag: the RX goroutines notice (the
// program's NoMeta count, read in their idle checks), and the nic switches
// for good to demultiplexing by MAC (macMode): the program stops tagging
// and the RX goroutine finds each frame's vif by the program's rules
// (bpf.Rules).
type nic struct {
	key     nicKey
	ifindex int
	cfg     *Config // of the first vif; later vifs must ask for the same
	steer   *bpf.Steering
	attach  bpf.AttachMode
	queues  []*queue
	mode    xsk.Mode
	addrs   *addrList // the NIC's unicast and multicast lists

	// sg: every socket is bound for multi-buffer frames (XDP_USE_SG) and the
	// program loaded for them, so frames longer than a UMEM frame travel
	// as descriptor chains both ways; sgWhy says why not otherwise.
	// linkMTU is the NIC's MTU, as setup and the RX goroutines' idle
	// checks (alive) last read it.
	sg      bool
	sgWhy   string
	linkMTU atomic.Int32

	// vifs[slot] is the backend steered to slot; read on every frame.
	vifs []atomic.Pointer[Backend]
	// Whose untagged frames are, era by era (see era and updateSolo):
	// era0 is where the RX goroutines start, lastEra the newest (nics
	// held). held is what updateSolo last saw in vifs; freedAt[slot] the
	// RX positions a departed vif's frames lie below (nil: none), so its
	// slot is reused only once they are consumed (see slotFree).
	era0     era
	lastEra  *era
	held     []*Backend
	freedAt  [][]uint32
	readTags atomic.Bool // the program's tagging state is unknown: always read tags
	// macMode (nics held; demuxMAC mirrors it for lock-free readers): the
	// driver cannot tag, so eras of several vifs demultiplex by MAC and
	// the program never tags again. tagging says the program was last
	// told to tag (then the RX goroutines watch for untaggable frames).
	macMode  bool
	demuxMAC atomic.Bool
	tagging  atomic.Bool

	// Under nics.Mutex: refs counts the vifs holding the nic, taken[slot]
	// the slots they hold (a slot stays taken until its vif's release has
	// waited out the RX batches that could still hand it frames); closing
	// says the nic is torn down or being torn down (the last vif left, or
	// the RX goroutines failed) and takes no more vifs.
	refs    int
	taken   []bool
	closing bool

	probe int           // datagram socket in the NIC's namespace: reads its flags
	napi  *napiSettings // the NIC's NAPI settings while ours (napi=on)
	stop  atomic.Bool
	wg    sync.WaitGroup
	done  chan struct{} // closed when every RX goroutine has ended
	gone  chan struct{} // closed when teardown has finished: program off, sockets closed
	errMu sync.Mutex
	err   error // why the RX goroutines ended early, e.g. the NIC went away

	untagged, unclaimed atomic.Uint64 // frames no vif could be found for

	// Sends from inside an RX batch (a forwarder or a TCP stack answering in
	// its input handler) are kicked once at the end of the batch rather than
	// once per frame: Flush sets the vif's bit in flushBits while rxDepth
	// says a batch is running, and the RX goroutine flushes those vifs after
	// its batch. Flush sets the bit before it reads rxDepth and the RX
	// goroutine lowers rxDepth before it takes the bits, so either Flush
	// sees no batch running and flushes itself, or a batch end sees the bit.
	rxDepth   atomic.Int32
	flushBits atomic.Uint64 // one bit per slot below flushBitsLen

	// An RX goroutine asleep in poll(2) is on the socket's wait queue, and
	// the kernel then tries to wake it at every TX completion
	// (sock_wfree -> sk_write_space): on a veth in copy mode that costs a
	// good part of the TX rate (bench/results/notes.md). So each transmit
	// bumps txSeq, and an RX
	// goroutine whose ring has been empty for rxQuiet while txSeq moves
	// naps instead — from minNap, doubling to maxNap — until TX has been
	// quiet for quietTime; only then does it sleep in poll(2), counting
	// itself in pollers, and a transmit that finds pollers wakes them so
	// that they nap. A receiver with traffic (a TCP stack sending ACKs)
	// keeps polling: naps would delay it. So does one that answers what it
	// receives (a request/response peer: ping, an echo, a ping-pong through
	// l2fwd): a goroutine naps only once napTX transmits have passed since
	// its last frame, else a request arriving after a quiet spell would wait
	// out a nap of up to maxNap. RX latency while the NIC only transmits is
	// at most maxNap.
	txSeq   atomic.Uint64
	pollers atomic.Int32
}

// flushBitsLen is the width of nic.flushBits: vifs in higher slots flush
// at once instead of at the end of the RX batch.
const flushBitsLen = 64

// pollWait is the longest an idle RX goroutine sleeps in poll(2): a NIC
// that goes away wakes no poller, so this bounds how late it is noticed.
const pollWait = 200 * time.Millisecond

// busyPollTime is SO_BUSY_POLL, in microseconds, when busypoll= is set: how
// long one poll may spin in the driver. 20 µs is what xdpsock (the AF_XDP
// sample of the kernel and bpf-examples) sets with SO_PREFER_BUSY_POLL;
// with preferred busy polling the budget (busypoll=N) bounds the work, not
// this time.
const busyPollTime = 20

const (
	minNap    = 20 * time.Microsecond
	maxNap    = time.Millisecond
	rxQuiet   = 2 * time.Millisecond
	quietTime = 5 * time.Millisecond
	napTX     = 256 // transmits since the last frame before an RX goroutine naps
)

// rxNaps counts the naps of the RX goroutines, for tests.
var rxNaps atomic.Uint64

// noteTX is called by every transmit: it takes RX goroutines off the
// socket's wait queue (see txSeq).
func (n *nic) noteTX() {
	n.txSeq.Add(1)
	if n.pollers.Load() > 0 {
		for _, q := range n.queues {
			_ = q.sock.Wakeup()
		}
	}
}

type nicKey struct {
	netns   uint64 // inode of the network namespace
	ifindex int
}

// queue is one NIC queue: its socket and the goroutine draining it.
type queue struct {
	id   int
	idx  int // position in nic.queues
	sock *xsk.Socket
	// batch is odd while the RX goroutine is delivering a batch: detaching a
	// vif waits for it to move on, so no frame reaches a closed vif.
	batch atomic.Uint64
	// rxDone is the RX ring index below which every frame was handed
	// out (xsk RXConsumed after each batch), for slotFree.
	rxDone atomic.Uint32
	// napiID is the socket's NAPI id, read by the RX goroutine after its
	// first batch when busy polling (0: none).
	napiID atomic.Uint32
	// txMu serialises the TX half of sock among the vifs sending on it.
	// Send stages each frame on the TX ring (its slot is reserved, so an
	// accepted frame is never dropped by the backend); staged counts those
	// not yet handed to the kernel, which a kick does every txBatch frames
	// and at Flush.
	txMu   sync.Mutex
	staged int
	// tid is the OS thread of the RX goroutine (locked to it) while it
	// runs: Open and Close called from an input handler must not wait for
	// the batch they are part of.
	tid atomic.Int32
	// How the RX goroutine found the frames' vifs (one writer): a lone
	// vif's untagged frames, by tag, by MAC (bpf.Rules).
	_                    [64]byte
	bySolo, byTag, byMAC paddedCounter

	// Multi-buffer RX (RX goroutine only): gather holds the frame of a
	// descriptor chain while it is delivered (allocated once, when the
	// NIC is bound with SG); skipRest says the last batch ended inside a
	// chain that was dropped, whose rest begins the next batch. Counted:
	// frames gathered from chains, chains dropped as longer than
	// maxChain descriptors (or the buffer), chains cut off at the ring's end.
	gather                     []byte
	skipRest                   bool
	chains, tooLong, truncated paddedCounter
	// idleKicks counts the kicks the idle RX goroutine gave frames left
	// on the TX ring (kickStranded).
	idleKicks paddedCounter
}

// maxChain is the most descriptors a frame may span, both ways: the
// kernel's copy-mode transmit takes MAX_SKB_FRAGS + 1 (18 with the
// smallest CONFIG_MAX_SKB_FRAGS), and AF_XDP's documentation tells
// applications to keep to it.
const maxChain = 18

var nics struct {
	sync.Mutex
	m map[nicKey]*nic
}

// rxBatch is how many descriptors an RX goroutine takes per ring visit.
const rxBatch = 64

// acquireNIC returns the nic for cfg.Ifname in the calling thread's network
// namespace, setting it up (program, sockets, RX goroutines) for the first
// vif, and reserves a slot in it for b. A nic being torn down (its last vif
// left, or it failed) is waited out and then set up afresh; never while nics
// is held, and never on an RX thread, where the teardown may be waiting for
// the caller's own batch (EBUSY then).
func acquireNIC(c *Config, b *Backend) (*nic, int, error) {
	ifc, err := net.InterfaceByName(c.Ifname)
	if err != nil {
		return nil, 0, fmt.Errorf("xdp: interface %q: %w (no such interface in this network namespace; 'ip link' lists them)", c.Ifname, unix.ENODEV)
	}
	ns, err := netnsInode()
	if err != nil {
		return nil, 0, err
	}
	key := nicKey{ns, ifc.Index}
	for {
		nics.Lock()
		n := nics.m[key]
		if n != nil && n.closing {
			rx := onRXThreadLocked()
			nics.Unlock()
			if rx {
				return nil, 0, fmt.Errorf("xdp: %s: the NIC is being torn down (its last vif was closed from an input handler, or it failed); open the vif once the handler has returned: %w", c.Ifname, unix.EBUSY)
			}
			<-n.gone
			continue
		}
		if n == nil {
			if n, err = newNIC(key, c); err != nil {
				nics.Unlock()
				return nil, 0, err
			}
			if nics.m == nil {
				nics.m = map[nicKey]*nic{}
			}
			nics.m[key] = n
		} else if err := n.compatible(c); err != nil {
			nics.Unlock()
			return nil, 0, err
		}
		slot, err := n.reserveLocked(b)
		drop := err != nil && n.refs == 0
		if drop {
			// Set up for this vif alone: take it down again (nics
			// released: an RX goroutine may be inside b's handler).
			n.closing = true
		}
		nics.Unlock()
		if drop {
			err = errors.Join(err, n.teardown())
		}
		if err != nil {
			return nil, 0, err
		}
		return n, slot, nil
	}
}

// reserveLocked gives b a free slot of n (nics held).
func (n *nic) reserveLocked(b *Backend) (int, error) {
	// A slot is free once no vif holds it and the RX rings are past the
	// frames steered to its last vif (slotFree).
	slot := -1
	for i := range n.taken {
		if !n.taken[i] && n.slotFree(i) {
			slot = i
			break
		}
	}
	if slot < 0 {
		return 0, fmt.Errorf("xdp: %s: all %d vif slots in use: %w", n.cfg.Ifname, len(n.vifs), unix.ENOSPC)
	}
	n.refs++
	n.taken[slot] = true
	b.bindQueues(len(n.queues))
	b.slot = slot
	// b is complete before it is published: an RX goroutine may flush it
	// (a flush bit its slot's last vif left) as soon as it finds it.
	b.nic = n
	b.txq = n.queues[slot%len(n.queues)]
	n.vifs[slot].Store(b)
	if err := n.updateSolo(); err != nil {
		n.vifs[slot].Store(nil)
		_ = n.updateSolo()
		n.taken[slot] = false
		n.refs--
		return 0, fmt.Errorf("xdp: %s: %w", n.cfg.Ifname, err)
	}
	return slot, nil
}

// onRXThreadLocked reports whether the caller runs on the OS thread of an
// RX goroutine, i.e. inside an input handler (nics held).
func onRXThreadLocked() bool {
	tid := int32(unix.Gettid())
	for _, n := range nics.m {
		for _, q := range n.queues {
			if q.tid.Load() == tid {
				return true
			}
		}
	}
	return false
}

// An era says whose the untagged frames on the RX rings are, from a point
// of each ring on. A lone vif's frames go untagged (the program skips
// bpf_xdp_adjust_meta: a fifth of the receive rate on a veth), so the RX
// goroutine must know which frames were steered while that vif was alone:
// owner is that vif, or nil while the program tags every frame. The RX
// ring is in steering order, so an era begins at an RX ring index per
// queue (start), read once every frame steered under the old setting is
// on the rings (rcuFence). While a next era is linked, the RX goroutine
// reads and wipes tags, so a tagged frame always goes to its tag's vif and
// no UMEM frame keeps a stale tag; in the lone vif's era with nothing
// coming it reads none. In MAC mode (nic.macMode) an era of several vifs
// has mac set: the program tags nothing and the RX goroutine finds each
// untagged frame's vif by the program's rules (bpf.Rules), tags it reads
// (frames from the tagging era before) still winning.
type era struct {
	owner *Backend
	mac   bool        // owner is nil and untagged frames are found by MAC
	start []uint32    // per queue, in nic.queues order; valid once ready
	ready atomic.Bool //
	next  atomic.Pointer[era]
}

// updateSolo keeps the program's tagging and the eras in step with the vifs
// on the NIC (nics held): a lone vif's frames go untagged, several vifs'
// tagged. It also notes the RX positions below which the frames of vifs
// that left lie (freedAt). Vifs joining have no socket yet and vifs
// leaving have none any more (Dying), so the fences order exactly which
// frames each era holds:
//
//   - to tagging: link the era, tag, fence, start;
//   - to a lone vif X: fence (no frame of a departed vif is in flight),
//     link the era (from now on the current era's untagged frames are X's:
//     only X can receive), stop tagging, fence, start;
//   - to demultiplexing by MAC (several vifs in MAC mode; from tagging when
//     the driver turned out to have no metadata): link the era (the current
//     era's untagged frames are found by MAC from now on; its tagged ones
//     keep their tag), stop tagging, fence, start. In MAC mode the program
//     never tags again, so no era after has tagged frames.
func (n *nic) updateSolo() error {
	if n.held == nil {
		n.held = make([]*Backend, len(n.vifs))
		n.freedAt = make([][]uint32, len(n.vifs))
	}
	var only *Backend
	count, gone := 0, false
	for i := range n.vifs {
		v := n.vifs[i].Load()
		if v != nil {
			only = v
			count++
		}
		if h := n.held[i]; h != nil && h != v {
			gone = true
		}
	}
	if gone {
		rcuFence()
		pos := n.rxPositions()
		for i := range n.vifs {
			if h := n.held[i]; h != nil && h != n.vifs[i].Load() {
				n.freedAt[i] = pos
			}
		}
	}
	for i := range n.vifs {
		n.held[i] = n.vifs[i].Load()
	}
	last := n.lastEra
	if last == nil {
		last = &n.era0
	}
	var want *Backend
	if count == 1 {
		want = only
	}
	byMAC := want == nil && n.macMode
	if count == 0 || (want == last.owner && byMAC == last.mac) {
		return nil
	}
	e := &era{owner: want, mac: byMAC}
	last.next.Store(e)
	n.lastEra = e
	tag := want == nil && !n.macMode
	n.tagging.Store(tag)
	err := n.steer.SetTagging(tag)
	if err != nil {
		n.readTags.Store(true) // the program's state is not what the eras say
	}
	rcuFence()
	e.start = n.rxPositions()
	e.ready.Store(true)
	return err
}

// checkMeta, from an RX goroutine's idle check: while the program tags, a
// frame it could not tag (a driver without XDP metadata) switches the nic
// to demultiplexing by MAC, once and for good. One counter read, and only
// while tagging.
func (n *nic) checkMeta() {
	if !n.tagging.Load() || n.demuxMAC.Load() {
		return
	}
	if c, err := n.steer.NoMeta(); err != nil || c == 0 {
		return
	}
	n.demuxByMAC()
}

// demuxByMAC switches the nic to demultiplexing by MAC for good.
func (n *nic) demuxByMAC() {
	nics.Lock()
	defer nics.Unlock()
	if n.macMode || n.closing {
		return
	}
	n.macMode = true
	n.demuxMAC.Store(true)
	_ = n.updateSolo() // a failure sets readTags: tags are read, the rest found by MAC
}

// rxPositions is where each queue's RX ring producer stands.
func (n *nic) rxPositions() []uint32 {
	pos := make([]uint32, len(n.queues))
	for i, q := range n.queues {
		pos[i] = q.sock.RXProduced()
	}
	return pos
}

// slotFree: slot i has no vif, and the frames steered to the one before
// are all consumed, so none of them can reach a new vif by the slot's tag
// (nics held).
func (n *nic) slotFree(i int) bool {
	if n.vifs[i].Load() != nil {
		return false
	}
	if n.freedAt == nil || n.freedAt[i] == nil {
		return true
	}
	for _, q := range n.queues {
		if int32(q.rxDone.Load()-n.freedAt[i][q.idx]) < 0 {
			return false
		}
	}
	n.freedAt[i] = nil
	return true
}

// rcuFence returns once every XDP program run that began before it has
// ended, with the frames it redirected on the RX rings: XDP runs inside
// an RCU read-side section (softirq), and MEMBARRIER_CMD_GLOBAL waits for
// an RCU grace period (synchronize_rcu). Kernels with nohz_full refuse it;
// there a pause stands in (a program run takes microseconds).
func rcuFence() {
	const membarrierCmdGlobal = 1
	if _, _, e := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdGlobal, 0, 0); e != 0 {
		time.Sleep(10 * time.Millisecond)
	}
}

// compatible: the sockets are set up once, by the first vif, so later vifs
// must want the same queues and socket shape.
func (n *nic) compatible(c *Config) error {
	if have, want := n.cfg.String(), c.String(); have != want {
		return fmt.Errorf("xdp: %s is already served by this process as %q; a second vif must use the same options (not %q): %w",
			c.Ifname, have, want, unix.EBUSY)
	}
	return nil
}

func netnsInode() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, os.NewSyscallError("stat /proc/thread-self/ns/net", err)
	}
	return st.Ino, nil
}

// fault, when set by a test, is called at each step of setting a NIC up
// (and of Open, and of an RX goroutine's health check) and makes the step
// fail with its error.
var fault atomic.Pointer[func(step string, queue int) error]

func faultAt(step string, queue int) error {
	if f := fault.Load(); f != nil {
		return (*f)(step, queue)
	}
	return nil
}

// simulateNoMeta, set by tests, makes NICs set up from then on behave as
// on a driver without XDP metadata (bpf.Options.NoMeta).
var simulateNoMeta atomic.Bool

// newNIC sets the NIC up: program attached, a socket bound per queue, RX
// goroutines started. On error it undoes what it did and returns nil.
func newNIC(key nicKey, c *Config) (*nic, error) {
	n := &nic{key: key, ifindex: key.ifindex, cfg: c, probe: -1, done: make(chan struct{}), gone: make(chan struct{})}
	if err := n.setup(c); err != nil {
		if cerr := n.closeResources(); cerr != nil {
			err = fmt.Errorf("%w; undoing it: %w", err, cerr)
		}
		return nil, err
	}
	for _, q := range n.queues {
		n.wg.Add(1)
		go n.rxLoop(q)
	}
	go func() { n.wg.Wait(); close(n.done) }()
	return n, nil
}

// setup does newNIC's work; what it made is in n, for closeResources.
func (n *nic) setup(c *Config) error {
	link, err := netlink.LinkByIndex(n.ifindex)
	if err == nil {
		err = faultAt("link", -1)
	}
	if err != nil {
		return fmt.Errorf("xdp: %s: %w", c.Ifname, err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("xdp: %s is down: %w ('ip link set %s up' first)", c.Ifname, unix.ENETDOWN, c.Ifname)
	}
	if n.probe, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
		n.probe = -1
		return fmt.Errorf("xdp: %s: %w", c.Ifname, os.NewSyscallError("socket", err))
	}
	nq := queuesOf(c.Ifname, max(link.Attrs().NumRxQueues, link.Attrs().NumTxQueues))
	qids, err := nq.resolve(c.Queues)
	if err != nil {
		return err
	}
	if err := checkUMEM(c, len(qids)); err != nil {
		return err
	}
	maxQ := 0
	for _, q := range qids {
		maxQ = max(maxQ, q+1)
	}
	if c.Queues == nil {
		// queues=all may grow once the program is on (see below): room
		// for every queue the NIC has.
		maxQ = nq.allocated
	}
	steer, err := bpf.Load(&bpf.Options{MaxQueues: max(maxQ, 1), NoMeta: simulateNoMeta.Load(), NoFrags: c.SG == xsk.SGOff})
	if err == nil {
		if err = faultAt("load", -1); err != nil {
			_ = steer.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("xdp: %s: load the steering program: %w", c.Ifname, err)
	}
	n.steer = steer
	n.vifs = make([]atomic.Pointer[Backend], steer.Options().MaxVifs)
	n.taken = make([]bool, len(n.vifs))
	if n.attach, err = steer.Attach(n.ifindex, c.Attach); err == nil {
		err = faultAt("attach", -1)
	}
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("xdp: attach to %s: %w (another XDP program is on it, maybe another virtif-xdp process; 'ip link show %s' shows it)", c.Ifname, err, c.Ifname)
		}
		return fmt.Errorf("xdp: attach to %s: %w", c.Ifname, err)
	}
	if c.Queues == nil {
		// A driver may enable more queues for XDP: virtio-net adds a
		// queue pair per CPU for XDP_TX, and the device then receives on
		// them all. queues=all serves what is active now.
		if after := queuesOf(c.Ifname, nq.allocated); after.active > len(qids) {
			if qids, err = after.resolve(nil); err != nil {
				return err
			}
			if err := checkUMEM(c, len(qids)); err != nil {
				return err
			}
		}
	}
	if n.addrs, err = newAddrList(c.Ifname, n.ifindex, n.key.netns); err != nil {
		return err
	}
	sg := c.SG
	switch {
	case c.SG == xsk.SGOff:
		n.sgWhy = "sg=off"
	case !steer.Frags() && sg == xsk.SGOn:
		return fmt.Errorf("xdp: %s: sg=on: the kernel would not load the program for multi-buffer frames (BPF_F_XDP_HAS_FRAGS, Linux 5.18+): %w", c.Ifname, unix.EOPNOTSUPP)
	case !steer.Frags():
		sg = xsk.SGOff
		n.sgWhy = "the kernel would not load the program for multi-buffer frames (BPF_F_XDP_HAS_FRAGS, Linux 5.18+)"
	}
	n.linkMTU.Store(int32(link.Attrs().MTU))
	for _, q := range qids {
		xc := &xsk.Config{
			UMEM:              xsk.UMEMConfig{FrameSize: c.FrameSize, NumFrames: c.Frames, FillSize: c.Ring, CompletionSize: c.Ring},
			RXSize:            c.Ring,
			TXSize:            c.Ring,
			Mode:              c.Mode,
			DisableNeedWakeup: !c.Wakeup,
			SG:                sg,
		}
		if c.BusyPoll > 0 {
			xc.BusyPoll, xc.BusyPollBudget = busyPollTime, c.BusyPoll
		}
		sock, err := xsk.Open(n.ifindex, q, xc)
		if err == nil {
			n.queues = append(n.queues, &queue{id: q, idx: len(n.queues), sock: sock})
			n.mode = sock.Mode()
			err = faultAt("socket", q)
		}
		if err != nil {
			switch {
			case errors.Is(err, unix.EOPNOTSUPP) && c.Mode == xsk.ModeZeroCopy:
				return fmt.Errorf("xdp: %s queue %d: %w (the driver cannot bind zero-copy: use mode=auto or mode=copy)", c.Ifname, q, err)
			case c.SG == xsk.SGOn && isBindErr(err):
				return fmt.Errorf("xdp: %s queue %d: %w (sg=on needs multi-buffer; sg=auto takes jumbo frames where the kernel and the driver allow them)", c.Ifname, q, err)
			case errors.Is(err, unix.EINVAL) && isBindErr(err):
				return fmt.Errorf("xdp: %s queue %d: %w (the NIC does not use that queue: 'ethtool -l %s' shows its channels; use queues=all)", c.Ifname, q, err, c.Ifname)
			}
			return fmt.Errorf("xdp: %s queue %d: %w", c.Ifname, q, err)
		}
	}
	n.sg = sg != xsk.SGOff
	for _, q := range n.queues {
		if !q.sock.SG() {
			n.sg = false
			if err := q.sock.SGError(); err != nil && n.sgWhy == "" {
				n.sgWhy = sgRefused(q.sock.Mode(), err)
			}
		}
	}
	if n.sg {
		for _, q := range n.queues {
			q.gather = make([]byte, 0, maxChain*c.FrameSize)
		}
	}
	if c.NAPI {
		if n.napi, err = applyNAPI(c.Ifname, n.ifindex); err != nil {
			return err
		}
	}
	return nil
}

// sgRefused says why a socket was bound without XDP_USE_SG.
func sgRefused(m xsk.Mode, err error) string {
	if m == xsk.ModeZeroCopy {
		return fmt.Sprintf("the driver's zero-copy has no multi-buffer (%v), and zero-copy was kept; mode=copy takes jumbo frames", err)
	}
	return fmt.Sprintf("the kernel refused multi-buffer (%v; XDP_USE_SG needs Linux 6.6)", err)
}

func isBindErr(err error) bool {
	var se *os.SyscallError
	return errors.As(err, &se) && se.Syscall == "bind"
}

// closeResources closes what setup made: the sockets (each under its TX
// lock, so no vif's Send is halfway through it), the program (which takes it
// off the NIC) and the probe. The RX goroutines must have ended.
func (n *nic) closeResources() error {
	var errs []error
	for _, q := range n.queues {
		q.txMu.Lock()
		errs = append(errs, q.sock.Close())
		q.txMu.Unlock()
	}
	if n.steer != nil {
		errs = append(errs, n.steer.Close())
	}
	if n.addrs != nil {
		errs = append(errs, n.addrs.close())
	}
	if n.napi != nil {
		errs = append(errs, n.napi.restore())
		n.napi = nil
	}
	if n.probe >= 0 {
		errs = append(errs, os.NewSyscallError("close", unix.Close(n.probe)))
		n.probe = -1
	}
	return errors.Join(errs...)
}

// rxLoop drains one queue: it takes a batch of descriptors, hands each frame
// to the vif the program tagged it for (VIF_DELIVERPKT), and gives the frames
// back to the fill ring.
func (n *nic) rxLoop(q *queue) {
	defer n.wg.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	q.tid.Store(int32(unix.Gettid()))
	defer q.tid.Store(0)
	var descs [rxBatch]xsk.Desc
	spin := n.cfg.BusyPoll > 0 || n.cfg.RXWait == RXWaitSpin
	var (
		lastTX    = n.txSeq.Load()
		txAtRX    = lastTX  // txSeq after the last batch of frames
		txSeen    time.Time // when txSeq was last seen moving
		rxSeen    time.Time // when frames last arrived
		nap       = minNap
		idle      uint
		lastCheck = time.Now()
		napiRead  = n.cfg.BusyPoll == 0
	)
	cur := &n.era0 // the era of the next frame on the ring
	for !n.stop.Load() {
		at := q.sock.RXConsumed()
		got := q.sock.Receive(descs[:])
		if got == 0 {
			// Every mode checks that the NIC is still there and up, at
			// most every checkEvery: a spinning loop never reaches Wait,
			// where poll mode would see the socket's error, and a NIC set
			// down reports nothing to its sockets. Spinning looks at the
			// clock only every spinChecks empty polls.
			if idle++; (!spin || idle%spinChecks == 0) && time.Since(lastCheck) >= checkEvery {
				lastCheck = time.Now()
				if err := n.alive(q); err != nil {
					if !n.stop.Load() {
						n.fail(err)
					}
					return
				}
				n.checkMeta()
				n.kickStranded(q)
			}
			if spin {
				continue
			}
			// While the NIC transmits and nothing arrives, nap instead of
			// sleeping in poll(2); see txSeq.
			now := time.Now()
			if seq := n.txSeq.Load(); seq != lastTX {
				lastTX, txSeen = seq, now
			}
			txBusy := now.Sub(txSeen) < quietTime
			if txBusy && now.Sub(rxSeen) >= rxQuiet && lastTX-txAtRX >= napTX {
				rxNaps.Add(1)
				time.Sleep(nap)
				nap = min(2*nap, maxNap)
				continue
			}
			wait := pollWait
			if txBusy {
				// Receiving and transmitting: poll, but come back to nap
				// once nothing has arrived for rxQuiet.
				wait = rxQuiet
			} else {
				n.pollers.Add(1)
				if n.txSeq.Load() != lastTX { // TX started meanwhile
					n.pollers.Add(-1)
					continue
				}
			}
			// A finite timeout: a NIC that goes away stops poll(2) from
			// reporting anything, and Wait then returns its SO_ERROR.
			_, err := q.sock.Wait(wait)
			if !txBusy {
				n.pollers.Add(-1)
			}
			if err != nil {
				if !errors.Is(err, net.ErrClosed) && !n.stop.Load() {
					n.fail(n.queueErr(q, err))
				}
				return
			}
			continue
		}
		nap, rxSeen = minNap, time.Now()
		if !napiRead {
			napiRead = true
			q.napiID.Store(napiIDOf(q.sock))
		}
		q.batch.Add(1)
		n.rxDepth.Add(1)
		cur = n.demux(q, cur, descs[:got], at)
		n.endBatches()
		q.rxDone.Store(at + uint32(got))
		q.batch.Add(1)
		q.sock.Release(descs[:got])
		n.rxDepth.Add(-1)
		if set := n.flushBits.Swap(0); set != 0 {
			n.flushDeferred(set)
		}
		txAtRX = n.txSeq.Load()
	}
}

// endBatches tells every vif of the NIC that an RX batch has ended
// (virtif's EndBatch), inside the batch, so a departing vif is not told
// after its release and sends it causes are kicked once (flushBits).
func (n *nic) endBatches() {
	for i := range n.vifs {
		if b := n.vifs[i].Load(); b != nil && b.endBatch != nil {
			b.endBatch()
		}
	}
}

// demux hands each frame of a batch to the vif it was steered to
// (VIF_DELIVERPKT), or counts it: rx_unclaimed for a tag whose vif is gone,
// rx_untagged for an untagged frame whose vif is gone or unknown (by MAC:
// no rule names a vif on the NIC). descs[i] sat at RX ring index at+i and e
// is the era of descs[0]; it returns the era of the frame after the batch.
// How each frame's vif was found is counted per queue (bySolo, byTag,
// byMAC), once per batch.
//
// A frame in a chain of descriptors (multi-buffer) is gathered into the
// queue's buffer and delivered as one (see chain); it belongs to the era
// of its first descriptor.
func (n *nic) demux(q *queue, e *era, descs []xsk.Desc, at uint32) *era {
	var solo, byTag, byMAC uint64
	i := 0
	if q.skipRest {
		// The rest of a chain dropped at the end of the last batch.
		k, whole := xsk.Packet(descs)
		i, q.skipRest = k, !whole
	}
	for i < len(descs) {
		end := len(descs)
		nx := e.next.Load()
		if nx != nil && nx.ready.Load() {
			d := int32(nx.start[q.idx] - (at + uint32(i)))
			if d <= 0 {
				e = nx
				continue
			}
			end = min(end, i+int(d))
		}
		if o := e.owner; o != nil && nx == nil && !n.readTags.Load() {
			// The lone vif's era and no change coming: its frames, untagged.
			if n.vifs[o.slot].Load() != o {
				n.untagged.Add(uint64(end - i))
				i = end
				continue
			}
			c, deliver := &o.rxFrames[q.idx].n, o.delivers[q.idx]
			for ; i < end; i++ {
				f := q.sock.Frame(descs[i])
				if descs[i].Options&xsk.PktContd != 0 {
					var ok bool
					if f, i, ok = q.chain(descs, i); !ok {
						continue
					}
				}
				solo++
				c.Store(c.Load() + 1) // one writer: no locked add
				deliver(f)
			}
			continue
		}
		// Untagged frames are the owner's, or found by MAC; in a tagging
		// era, those the program steered after it stopped tagging for the
		// next era: the next era's owner's, or found by MAC.
		untagged, lookup := e.owner, e.mac
		if untagged == nil && !e.mac && nx != nil {
			untagged, lookup = nx.owner, nx.mac
		}
		if untagged != nil && n.vifs[untagged.slot].Load() != untagged {
			untagged = nil
		}
		var rules *bpf.Rules
		if lookup {
			rules = n.steer.Rules()
		}
		// A MAC era's frames carry no tag: the program stopped tagging
		// before the era began, and the eras before wiped what they read.
		readTags := !e.mac || n.readTags.Load()
		for ; i < end; i++ {
			b := untagged
			var meta []byte
			if readTags {
				meta = q.sock.Metadata(descs[i], bpf.MetaLen)
			}
			f, ok := q.sock.Frame(descs[i]), true
			if descs[i].Options&xsk.PktContd != 0 {
				f, i, ok = q.chain(descs, i)
			}
			vif, tagged := bpf.VifFromMeta(meta)
			if tagged {
				// Wipe the tag: a frame received into this UMEM frame
				// later without one must not look tagged.
				clear(meta)
			}
			if !ok {
				continue // a chain dropped and counted
			}
			if tagged {
				if b = nil; vif < len(n.vifs) {
					b = n.vifs[vif].Load()
				}
				if b == nil {
					n.unclaimed.Add(1)
					continue
				}
				byTag++
			} else if lookup {
				b = nil
				if vif, _ := rules.Match(f); vif >= 0 && vif < len(n.vifs) {
					b = n.vifs[vif].Load()
				}
				if b != nil {
					byMAC++
				}
			} else if b != nil {
				solo++
			}
			if b == nil {
				n.untagged.Add(1)
				continue
			}
			c := &b.rxFrames[q.idx].n
			c.Store(c.Load() + 1)
			b.delivers[q.idx](f)
		}
	}
	q.bySolo.add(solo)
	q.byTag.add(byTag)
	q.byMAC.add(byMAC)
	return e
}

// chain gathers the frame whose chain of descriptors begins at descs[i]
// into the queue's buffer and returns it, with the index of the chain's last
// descriptor; ok is false when the chain is dropped, counted: longer than maxChain
// descriptors or the buffer (tooLong), or cut off at the ring's end
// (truncated). A chain that runs to the end of descs goes on in the next
// batch (xsk's Receive returns a longer chain alone): its rest is skipped.
func (q *queue) chain(descs []xsk.Desc, i int) (frame []byte, last int, ok bool) {
	k, whole := xsk.Packet(descs[i:])
	last = i + k - 1
	if !whole {
		q.skipRest = true
		if k >= maxChain {
			q.tooLong.add(1)
		} else {
			q.truncated.add(1)
		}
		return nil, last, false
	}
	if k > maxChain {
		q.tooLong.add(1)
		return nil, last, false
	}
	g := q.gather[:0]
	for _, d := range descs[i : i+k] {
		f := q.sock.Frame(d)
		if len(g)+len(f) > cap(g) {
			q.tooLong.add(1)
			return nil, last, false
		}
		g = append(g, f...)
	}
	q.chains.add(1)
	return g, last, true
}

const (
	checkEvery = 100 * time.Millisecond // how often an idle RX goroutine checks the NIC
	goneGrace  = 50 * time.Millisecond  // how long a NIC found down may take to vanish (being deleted)
	spinChecks = 1024                   // empty polls between clock reads when spinning
)

const (
	hintGone = " (the NIC was removed or its driver detached the socket; close the vif)"
	hintDown = " (the NIC was set down; close the vif, and open it again once the NIC is up)"
)

// alive checks the socket's pending error (ENETDOWN once the NIC was
// removed) and the NIC's IFF_UP: a NIC set down is an error too, as it is for
// an AF_PACKET socket (libpcap's "The interface went down"). A NIC that is
// up without carrier (its cable, or its veth peer, down) is not: it may come
// back, and then frames arrive again.
func (n *nic) alive(q *queue) error {
	if err := faultAt("rx", q.id); err != nil {
		return n.queueErr(q, err)
	}
	if _, err := q.sock.Wait(0); err != nil {
		return n.queueErr(q, err)
	}
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return nil
	}
	ifr.SetUint32(uint32(n.ifindex))
	if err := unix.IoctlIfreq(n.probe, unix.SIOCGIFNAME, ifr); err != nil {
		if errors.Is(err, unix.ENODEV) {
			return n.queueErr(q, unix.ENETDOWN)
		}
		return nil // nothing said about the NIC: look again later
	}
	if err := unix.IoctlIfreq(n.probe, unix.SIOCGIFFLAGS, ifr); err != nil {
		return nil
	}
	if ifr.Uint16()&unix.IFF_UP == 0 {
		// Deleting a NIC sets it down before it unregisters it: look again
		// after a moment, so a NIC on its way out is reported removed.
		time.Sleep(goneGrace)
		ifr.SetUint32(uint32(n.ifindex))
		if err := unix.IoctlIfreq(n.probe, unix.SIOCGIFNAME, ifr); errors.Is(err, unix.ENODEV) {
			return n.queueErr(q, unix.ENETDOWN)
		}
		return fmt.Errorf("xdp: %s queue %d: %w%s", n.cfg.Ifname, q.id, unix.ENETDOWN, hintDown)
	}
	if n.sg {
		if err := unix.IoctlIfreq(n.probe, unix.SIOCGIFMTU, ifr); err == nil {
			n.linkMTU.Store(int32(ifr.Uint32())) // what MaxMTU allows
		}
	}
	return nil
}

// kickStranded, from an idle RX goroutine's check, kicks the kernel for
// frames still on q's TX ring. Flush gives up after drainStall on a ring the
// kernel takes nothing from (a stalled device queue), and in copy mode the
// kernel sends only when kicked: without this, frames Send accepted would
// wait for the next Send, for ever if none comes. A vif holding the TX lock
// is sending, and will kick itself.
func (n *nic) kickStranded(q *queue) {
	if !q.txMu.TryLock() {
		return
	}
	defer q.txMu.Unlock()
	if q.staged != 0 || q.sock.TXPending() == 0 {
		return // staged frames belong to a Send batch not yet pushed
	}
	if err := q.sock.Kick(); err == nil {
		q.idleKicks.add(1)
	}
	q.sock.Complete()
}

// queueErr says which NIC queue failed, and what to do when the NIC went.
func (n *nic) queueErr(q *queue, err error) error {
	hint := ""
	if errors.Is(err, unix.ENETDOWN) {
		hint = hintGone
	}
	return fmt.Errorf("xdp: %s queue %d: %w%s", n.cfg.Ifname, q.id, err, hint)
}

// fail records why an RX goroutine ended and tears the nic down: a NIC
// whose RX goroutines died is no use to any vif, and the next Open of it
// must start afresh. The vifs on it keep their hold until they are closed;
// their calls fail or do nothing.
func (n *nic) fail(err error) {
	n.errMu.Lock()
	first := n.err == nil
	if first {
		n.err = err
	}
	n.errMu.Unlock()
	if !first {
		return
	}
	nics.Lock()
	start := !n.closing
	n.closing = true
	nics.Unlock()
	if start {
		// Not from this goroutine: the teardown waits for it to end.
		go n.teardown()
	}
}

// Err is why the RX goroutines ended before the vifs were closed (nil while
// they run).
func (n *nic) Err() error {
	n.errMu.Lock()
	defer n.errMu.Unlock()
	return n.err
}

// quiesce waits until no RX goroutine is inside a batch it began before the
// call, so a vif taken out of n.vifs receives nothing more. It must not run
// on an RX thread, nor with nics held (a handler may be waiting for it).
func (n *nic) quiesce() {
	for _, q := range n.queues {
		seen := q.batch.Load()
		if seen&1 == 0 {
			continue
		}
		for q.batch.Load() == seen {
			select {
			case <-n.done:
				return
			default:
				runtime.Gosched()
			}
		}
	}
}

// release drops a vif's hold; the last one tears the nic down. The vif gets
// no frame from batches that begin after it returns; when called on an RX
// thread (from an input handler) it returns at once and the wait for the
// batches in progress — and the teardown after the last vif — completes in
// the background when they end.
func (n *nic) release(slot int) error {
	nics.Lock()
	n.vifs[slot].Store(nil)
	var err error
	if !n.closing {
		err = n.updateSolo()
	}
	rx := onRXThreadLocked()
	nics.Unlock()
	if rx {
		go func() { _ = n.finishRelease(slot) }()
		return err
	}
	return errors.Join(err, n.finishRelease(slot))
}

// finishRelease waits for the batches that may still hand the slot's vif a
// frame, then frees the slot; after the last vif it tears the nic down, or
// waits for the teardown a failure started.
func (n *nic) finishRelease(slot int) error {
	n.quiesce()
	nics.Lock()
	n.taken[slot] = false
	n.refs--
	last := n.refs == 0
	start := last && !n.closing
	if last {
		n.closing = true
	}
	nics.Unlock()
	switch {
	case start:
		return n.teardown()
	case last:
		<-n.gone
	}
	return nil
}

// teardown stops the RX goroutines and waits for them, then closes the
// sockets and the program (which takes it off the NIC), and only then lets
// the next Open of the NIC set it up again. It runs once per nic, started by
// whoever set closing; never on an RX thread of n, nor with nics held.
func (n *nic) teardown() error {
	n.stop.Store(true)
	for _, q := range n.queues {
		_ = q.sock.Wakeup()
	}
	n.wg.Wait()
	err := n.closeResources()
	nics.Lock()
	if nics.m[n.key] == n {
		delete(nics.m, n.key)
	}
	nics.Unlock()
	close(n.gone)
	return err
}

// flushDeferred flushes the vifs whose Flush came during an RX batch.
func (n *nic) flushDeferred(set uint64) {
	for set != 0 {
		slot := bits.TrailingZeros64(set)
		set &^= 1 << slot
		if b := n.vifs[slot].Load(); b != nil {
			_ = b.flushNow() // failures are counted in tx_kick_errors
		}
	}
}
