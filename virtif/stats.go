package virtif

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Stats are the interface counters (struct if_data), read as one snapshot.
//
// Every frame handed to the receive upcall is counted exactly once in
// IPackets, IErrors or IDrops; IFiltered and INoHandler break IDrops down.
// Every frame given to Output is counted exactly once in OPackets, OErrors
// or ODrops before Output returns, so every snapshot taken after it has the
// frame (OutputBatch: the frames it sent and the one it failed on).
// OPackets are the frames the backend's Send committed; a later Flush
// error does not move them.
type Stats struct {
	IPackets   uint64 // frames handed to the input handler
	IBytes     uint64 // their bytes
	IErrors    uint64 // frames shorter than an Ethernet header
	IDrops     uint64 // frames dropped: interface not running, filtered, or no handler
	IFiltered  uint64 // of IDrops: not for our MAC, not multicast, not promiscuous
	INoHandler uint64 // of IDrops: accepted but no input handler set (SetInput)
	IMcasts    uint64 // of IPackets: multicast and broadcast frames

	OPackets  uint64 // frames the backend committed (Send returned nil)
	OBytes    uint64 // their bytes
	OErrors   uint64 // empty or oversized frames, backend send errors
	ODrops    uint64 // send queue full, interface down or without backend
	OMcasts   uint64 // of OPackets: multicast and broadcast frames
	Coalesced uint64 // of OPackets: frames of more than MaxSegments segments, coalesced

	Backend []Stat // the backend's own counters (StatsReporter)
}

const (
	cIPackets = iota
	cIBytes
	cIErrors
	cIDrops
	cIFiltered
	cINoHandler
	cIMcasts
	cOPackets
	cOBytes
	cOErrors
	cODrops
	cOMcasts
	cCoalesced
	nCounters
)

// shard is one set of counters guarded by a try-lock. Writers on the
// common shards never wait: a busy shard sends them to the next one (an
// owned shard waits, for a reader only). Readers take the lock briefly,
// so each shard is read whole; a frame's counters land in one shard
// together, so sums over shards never see half of a frame.
type shard struct {
	lock atomic.Uint32
	_    uint32
	c    [nCounters]uint64
	_    [128 - 8 - 8*nCounters]byte // one shard per 128 bytes: no false sharing
}

// counters are sharded roughly per P: a sync.Pool (whose fast path is
// per-P) remembers which shard this P used last, so a goroutine that stays
// on its P keeps hitting the same cache line with an uncontended CAS.
type counters struct {
	shards []shard
	next   atomic.Uint32 // fallback round robin when the pool has no hint
	hint   sync.Pool

	// owned are shards of single receiving goroutines (NewDeliver): no
	// pool lookup, and only a reader can make their lock wait.
	mu    sync.Mutex
	owned atomic.Pointer[[]*shard]
}

// init makes two shards per P, so that a writer preempted while holding
// one never leaves the others short of a free shard.
func (c *counters) init() {
	c.shards = make([]shard, max(4, 2*runtime.GOMAXPROCS(0)))
}

// acquire returns a locked shard; the caller updates s.c and calls release.
func (c *counters) acquire() *shard {
	if s, _ := c.hint.Get().(*shard); s != nil && s.lock.CompareAndSwap(0, 1) {
		return s
	}
	n := uint32(len(c.shards))
	i := c.next.Add(1)
	for k := uint32(0); ; k++ {
		s := &c.shards[(i+k)%n]
		if s.lock.Load() == 0 && s.lock.CompareAndSwap(0, 1) {
			return s
		}
		if k%n == n-1 {
			runtime.Gosched()
		}
	}
}

func (c *counters) release(s *shard) {
	s.lock.Store(0)
	c.hint.Put(s)
}

// newOwned adds a shard for one goroutine.
func (c *counters) newOwned() *shard {
	s := new(shard)
	c.mu.Lock()
	var l []*shard
	if p := c.owned.Load(); p != nil {
		l = *p
	}
	l = append(l[:len(l):len(l)], s)
	c.owned.Store(&l)
	c.mu.Unlock()
	return s
}

// get locks own if given (waiting only for a reader), else any shard.
func (c *counters) get(own *shard) *shard {
	if own == nil {
		return c.acquire()
	}
	for !own.lock.CompareAndSwap(0, 1) {
		runtime.Gosched()
	}
	return own
}

// put unlocks what get returned.
func (c *counters) put(own, s *shard) {
	if own == nil {
		c.release(s)
		return
	}
	s.lock.Store(0)
}

// add1 counts one event.
func (c *counters) add1(own *shard, idx int) {
	s := c.get(own)
	s.c[idx]++
	c.put(own, s)
}

// snapshot sums all shards into dst.
func (c *counters) snapshot(dst *[nCounters]uint64) {
	for k := range c.shards {
		c.sum(&c.shards[k], dst)
	}
	if p := c.owned.Load(); p != nil {
		for _, s := range *p {
			c.sum(s, dst)
		}
	}
}

func (c *counters) sum(s *shard, dst *[nCounters]uint64) {
	for !s.lock.CompareAndSwap(0, 1) {
		runtime.Gosched()
	}
	for j, v := range s.c {
		dst[j] += v
	}
	s.lock.Store(0)
}

// Stats returns a snapshot of the interface counters, safe to call while
// traffic flows, and from a tap or input handler: it takes no lock of the
// interface (a StatsReporter backend's AppendStats may take its own). Each frame is in the snapshot with all of its counters or
// not at all (e.g. IBytes is always the sum of the sizes of the IPackets
// frames), although frames counted concurrently on other CPUs may or may
// not be included.
func (i *Interface) Stats() Stats {
	var v [nCounters]uint64
	i.ctr.snapshot(&v)
	st := Stats{
		IPackets: v[cIPackets], IBytes: v[cIBytes], IErrors: v[cIErrors],
		IDrops: v[cIDrops], IFiltered: v[cIFiltered], INoHandler: v[cINoHandler],
		IMcasts:  v[cIMcasts],
		OPackets: v[cOPackets], OBytes: v[cOBytes], OErrors: v[cOErrors],
		ODrops: v[cODrops], OMcasts: v[cOMcasts], Coalesced: v[cCoalesced],
	}
	if r, ok := i.backend().(StatsReporter); ok {
		st.Backend = r.AppendStats(nil)
	}
	return st
}
