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
// (bpf.Rules). On a kernel whose verifier refuses the tag's helper
// (bpf.Steering.MetaHelper) the nic is in MAC mode from the start.
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

// sendLocking, when set by a test, is called by Send just before it takes
// the TX lock: a test holds a Send there while Close runs, to show that
// the closed check under the lock keeps it off the unmapped UMEM.
var sendLocking atomic.Pointer[func(b *Backend)]

// simulateNoMeta, set by tests, makes NICs set up from then on behave as
// on a driver without XDP metadata (bpf.Options.NoMeta).
var simulateNoMeta atomic.Bool

// simulateNoMetaHelper, set by tests, makes NICs set up from then on behave
// as on a kernel that refuses bpf_xdp_adjust_meta (bpf.Steering.MetaHelper).
var simulateNoMetaHelper atomic.Bool

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
