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
// metadata) and the RX goroutine hands it to that vif.
type nic struct {
	key     nicKey
	ifindex int
	cfg     *Config // of the first vif; later vifs must ask for the same
	steer   *bpf.Steering
	attach  bpf.AttachMode
	queues  []*queue
	mode    xsk.Mode

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

	refs  int // vifs holding this nic, under nics.Mutex
	stop  atomic.Bool
	wg    sync.WaitGroup
	done  chan struct{} // closed when every RX goroutine has ended
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
	flushBits atomic.Uint64

	// An RX goroutine asleep in poll(2) is on the socket's wait queue, and
	// the kernel then tries to wake it at every TX completion
	// (sock_wfree -> sk_write_space): on a veth in copy mode that cost up to
	// a third of the TX rate. So each transmit bumps txSeq, and an RX
	// goroutine whose ring has been empty for rxQuiet while txSeq moves
	// naps instead — from minNap, doubling to maxNap — until TX has been
	// quiet for quietTime; only then does it sleep in poll(2), counting
	// itself in pollers, and a transmit that finds pollers wakes them so
	// that they nap. A receiver with traffic (a TCP stack sending ACKs)
	// keeps polling: naps would delay it. RX latency while the NIC only
	// transmits is at most maxNap.
	txSeq   atomic.Uint64
	pollers atomic.Int32
}

const (
	minNap    = 20 * time.Microsecond
	maxNap    = time.Millisecond
	rxQuiet   = 2 * time.Millisecond
	quietTime = 5 * time.Millisecond
)

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
	// txMu serialises the TX half of sock among the vifs sending on it.
	// Send stages each frame on the TX ring (its slot is reserved, so an
	// accepted frame is never dropped by the backend); staged counts those
	// not yet handed to the kernel, which a kick does every txBatch frames
	// and at Flush.
	txMu   sync.Mutex
	staged int
	_      [64]byte
}

var nics struct {
	sync.Mutex
	m map[nicKey]*nic
}

// rxBatch is how many descriptors an RX goroutine takes per ring visit.
const rxBatch = 64

// acquireNIC returns the nic for cfg.Ifname in the calling thread's network
// namespace, setting it up (program, sockets, RX goroutines) for the first
// vif, and reserves a slot in it for b.
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
	nics.Lock()
	defer nics.Unlock()
	n := nics.m[key]
	if n == nil {
		if n, err = newNIC(key, c); err != nil {
			return nil, 0, err
		}
		if nics.m == nil {
			nics.m = map[nicKey]*nic{}
		}
		nics.m[key] = n
	} else if err := n.compatible(c); err != nil {
		return nil, 0, err
	}
	slot := -1
	for i := range n.vifs {
		if n.slotFree(i) {
			slot = i
			break
		}
	}
	if slot < 0 {
		return nil, 0, fmt.Errorf("xdp: %s: all %d vif slots in use: %w", c.Ifname, len(n.vifs), unix.ENOSPC)
	}
	n.refs++
	b.bindQueues(len(n.queues))
	b.slot = slot
	n.vifs[slot].Store(b)
	if err := n.updateSolo(); err != nil {
		n.vifs[slot].Store(nil)
		n.refs--
		_ = n.updateSolo()
		return nil, 0, err
	}
	return n, slot, nil
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
// coming it reads none.
type era struct {
	owner *Backend
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
//     only X can receive), stop tagging, fence, start.
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
	if count == 0 || want == last.owner {
		return nil
	}
	e := &era{owner: want}
	last.next.Store(e)
	n.lastEra = e
	err := n.steer.SetTagging(want == nil)
	if err != nil {
		n.readTags.Store(true) // the program's state is not what the eras say
	}
	rcuFence()
	e.start = n.rxPositions()
	e.ready.Store(true)
	return err
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

func newNIC(key nicKey, c *Config) (n *nic, err error) {
	link, err := netlink.LinkByIndex(key.ifindex)
	if err != nil {
		return nil, fmt.Errorf("xdp: %s: %w", c.Ifname, err)
	}
	nrx := link.Attrs().NumRxQueues
	if nrx <= 0 {
		nrx = 1
	}
	qids := c.Queues
	if qids == nil {
		for i := range nrx {
			qids = append(qids, i)
		}
	}
	for _, q := range qids {
		if q >= nrx {
			return nil, fmt.Errorf("xdp: %s has %d RX queues, queue %d does not exist: %w", c.Ifname, nrx, q, unix.EINVAL)
		}
	}
	maxQ := 0
	for _, q := range qids {
		maxQ = max(maxQ, q+1)
	}
	steer, err := bpf.Load(&bpf.Options{MaxQueues: max(maxQ, 1)})
	if err != nil {
		return nil, fmt.Errorf("xdp: load the steering program: %w", err)
	}
	n = &nic{key: key, ifindex: key.ifindex, cfg: c, steer: steer, done: make(chan struct{})}
	n.vifs = make([]atomic.Pointer[Backend], steer.Options().MaxVifs)
	defer func() {
		if err != nil {
			n.shutdown()
		}
	}()
	attach := map[string]bpf.AttachMode{AttachAuto: bpf.AttachAuto, AttachNative: bpf.AttachNative, AttachGeneric: bpf.AttachGeneric}[c.Attach]
	if n.attach, err = steer.Attach(key.ifindex, attach); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("xdp: attach to %s: %w (another XDP program is on it, maybe another virtif-xdp process; 'ip link show %s' shows it)", c.Ifname, err, c.Ifname)
		}
		return nil, fmt.Errorf("xdp: attach to %s: %w", c.Ifname, err)
	}
	mode := map[string]xsk.Mode{ModeAuto: xsk.ModeAuto, ModeCopy: xsk.ModeCopy, ModeZeroCopy: xsk.ModeZeroCopy}[c.Mode]
	for _, q := range qids {
		xc := &xsk.Config{
			UMEM:              xsk.UMEMConfig{FrameSize: c.FrameSize, NumFrames: c.Frames, FillSize: c.Ring, CompletionSize: c.Ring},
			RXSize:            c.Ring,
			TXSize:            c.Ring,
			Mode:              mode,
			DisableNeedWakeup: !c.Wakeup,
		}
		if c.BusyPoll > 0 {
			xc.BusyPoll, xc.BusyPollBudget = 20, c.BusyPoll
		}
		sock, err := xsk.Open(key.ifindex, q, xc)
		if err != nil {
			if errors.Is(err, unix.EAFNOSUPPORT) {
				return nil, fmt.Errorf("xdp: %s queue %d: %w (this kernel has no AF_XDP: it needs CONFIG_XDP_SOCKETS)", c.Ifname, q, err)
			}
			return nil, fmt.Errorf("xdp: %s queue %d: %w", c.Ifname, q, err)
		}
		n.queues = append(n.queues, &queue{id: q, idx: len(n.queues), sock: sock})
		n.mode = sock.Mode()
	}
	for _, q := range n.queues {
		n.wg.Add(1)
		go n.rxLoop(q)
	}
	go func() { n.wg.Wait(); close(n.done) }()
	return n, nil
}

// rxLoop drains one queue: it takes a batch of descriptors, hands each frame
// to the vif the program tagged it for (VIF_DELIVERPKT), and gives the frames
// back to the fill ring.
func (n *nic) rxLoop(q *queue) {
	defer n.wg.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var descs [rxBatch]xsk.Desc
	spin := n.cfg.BusyPoll > 0 || n.cfg.RXWait == RXWaitSpin
	var (
		lastTX   = n.txSeq.Load()
		txSeen   time.Time // when txSeq was last seen moving
		rxSeen   time.Time // when frames last arrived
		nap      = minNap
		pollWait = 200 * time.Millisecond
	)
	cur := &n.era0 // the era of the next frame on the ring
	for !n.stop.Load() {
		at := q.sock.RXConsumed()
		got := q.sock.Receive(descs[:])
		if got == 0 {
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
			if txBusy && now.Sub(rxSeen) >= rxQuiet {
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
					hint := ""
					if errors.Is(err, unix.ENETDOWN) {
						hint = " (the NIC was removed or its driver detached the socket; close the vif)"
					}
					n.fail(fmt.Errorf("xdp: %s queue %d: %w%s", n.cfg.Ifname, q.id, err, hint))
				}
				return
			}
			continue
		}
		nap, rxSeen = minNap, time.Now()
		q.batch.Add(1)
		n.rxDepth.Add(1)
		cur = n.demux(q, cur, descs[:got], at)
		q.rxDone.Store(at + uint32(got))
		q.batch.Add(1)
		q.sock.Release(descs[:got])
		n.rxDepth.Add(-1)
		if set := n.flushBits.Swap(0); set != 0 {
			n.flushDeferred(set)
		}
	}
}

// demux hands each frame of a batch to the vif it was steered to
// (VIF_DELIVERPKT), or counts it: rx_unclaimed for a tag whose vif is gone,
// rx_untagged for an untagged frame whose vif is gone or unknown. descs[i]
// sat at RX ring index at+i and e is the era of descs[0]; it returns the
// era of the frame after the batch.
func (n *nic) demux(q *queue, e *era, descs []xsk.Desc, at uint32) *era {
	for i := 0; i < len(descs); {
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
			c, deliver := &o.rxq[q.idx].n, o.delivers[q.idx]
			for ; i < end; i++ {
				c.Store(c.Load() + 1) // one writer: no locked add
				deliver(q.sock.Frame(descs[i]))
			}
			continue
		}
		// Untagged frames are the owner's; in a tagging era, those the
		// program steered after it stopped tagging for the next era's vif.
		untagged := e.owner
		if untagged == nil && nx != nil {
			untagged = nx.owner
		}
		if untagged != nil && n.vifs[untagged.slot].Load() != untagged {
			untagged = nil
		}
		for ; i < end; i++ {
			b := untagged
			if meta := q.sock.Metadata(descs[i], bpf.MetaLen); meta != nil {
				if vif, ok := bpf.VifFromMeta(meta); ok {
					// Wipe the tag: a frame received into this UMEM
					// frame later without one must not look tagged.
					clear(meta)
					if b = nil; vif < len(n.vifs) {
						b = n.vifs[vif].Load()
					}
					if b == nil {
						n.unclaimed.Add(1)
						continue
					}
				}
			}
			if b == nil {
				n.untagged.Add(1)
				continue
			}
			c := &b.rxq[q.idx].n
			c.Store(c.Load() + 1)
			b.delivers[q.idx](q.sock.Frame(descs[i]))
		}
	}
	return e
}

func (n *nic) fail(err error) {
	n.errMu.Lock()
	if n.err == nil {
		n.err = err
	}
	n.errMu.Unlock()
}

// Err is why the RX goroutines ended before the vifs were closed (nil while
// they run).
func (n *nic) Err() error {
	n.errMu.Lock()
	defer n.errMu.Unlock()
	return n.err
}

// quiesce waits until no RX goroutine is inside a batch it began before the
// call, so a vif taken out of n.vifs receives nothing more.
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

// release drops a vif's hold; the last one tears the nic down.
func (n *nic) release(slot int) error {
	nics.Lock()
	defer nics.Unlock()
	n.vifs[slot].Store(nil)
	err := n.updateSolo()
	n.quiesce()
	return errors.Join(err, n.releaseLocked())
}

func (n *nic) releaseLocked() error {
	if n.refs--; n.refs > 0 {
		return nil
	}
	delete(nics.m, n.key)
	return n.shutdown()
}

// shutdown stops the RX goroutines, then closes sockets and the program
// (which detaches it from the NIC).
func (n *nic) shutdown() error {
	n.stop.Store(true)
	for _, q := range n.queues {
		_ = q.sock.Wakeup()
	}
	n.wg.Wait()
	var errs []error
	for _, q := range n.queues {
		if err := q.sock.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := n.steer.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
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
