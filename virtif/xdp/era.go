//go:build linux

package xdp

import (
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The eras of a NIC's RX rings: who the untagged frames are for.

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
//     only X can receive), stop tagging, fence if it was tagging, start;
//   - to demultiplexing by MAC (several vifs in MAC mode; from tagging when
//     the driver turned out to have no metadata): link the era (the current
//     era's untagged frames are found by MAC from now on; its tagged ones
//     keep their tag), stop tagging, fence if it was tagging, start. In MAC
//     mode the program never tags again, so no era after has tagged frames.
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
	changed := n.tagging.Swap(tag) != tag
	err := n.steer.SetTagging(tag)
	if err != nil {
		n.readTags.Store(true) // the program's state is not what the eras say
	}
	// The fence orders the frames the program steered before the change
	// of tagging below e.start. In MAC mode the program never tags, so
	// between a lone vif's era and a MAC era it steers alike: a frame on
	// either side of e.start is demultiplexed correctly by either era (a
	// departed vif's frames are below freedAt, fenced above). An RCU grace
	// period costs about 10 ms on some kernels (6.18.44-fc): vif churn in
	// MAC mode pays it once per close instead of twice per join and close.
	if changed || err != nil {
		rcuFence()
	}
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

// fences counts rcuFence calls, for tests.
var fences atomic.Uint64

// rcuFence returns once every XDP program run that began before it has
// ended, with the frames it redirected on the RX rings: XDP runs inside
// an RCU read-side section (softirq), and MEMBARRIER_CMD_GLOBAL waits for
// an RCU grace period (synchronize_rcu). Kernels with nohz_full refuse it;
// there a pause stands in (a program run takes microseconds).
func rcuFence() {
	fences.Add(1)
	const membarrierCmdGlobal = 1
	if _, _, e := unix.Syscall(unix.SYS_MEMBARRIER, membarrierCmdGlobal, 0, 0); e != 0 {
		time.Sleep(10 * time.Millisecond)
	}
}
