//go:build linux

package xsk

import "sync/atomic"

// ring is one single-producer/single-consumer ring shared with the kernel:
// the fill and completion rings hold frame addresses (uint64), the RX and TX
// rings hold descriptors (Desc). This process is the producer of the fill
// and TX rings and the consumer of the RX and completion rings; the same
// type serves both roles, each using only its own half of the methods.
//
// Indices are free-running uint32 counters; a slot is index&mask. The
// producer and consumer words live in shared memory: the producer side of a
// ring is written by only one party and read by the other, and vice versa.
// The cached copies let a batch touch the shared words once.
//
// Memory ordering mirrors the kernel's (net/xdp/xsk_queue.h): a producer
// writes the slots, then publishes the producer index with a release store;
// a consumer reads the producer index with an acquire load before it reads
// the slots, and publishes the consumer index with a release store only after
// it has finished reading them, which the producer reads with an acquire load
// before it overwrites those slots. Go's sync/atomic loads and stores are
// sequentially consistent, which includes acquire/release, and they also keep
// the compiler from reordering the plain slot accesses around them.
type ring[T any] struct {
	producer *atomic.Uint32 // written by the producer only
	consumer *atomic.Uint32 // written by the consumer only
	flags    *atomic.Uint32 // XDP_RING_NEED_WAKEUP; written by the kernel only
	slots    []T            // len is a power of two
	mask     uint32

	// Producer role: prod is the next index to reserve (Reserve advanced
	// it past slots not yet published); pub is what was last stored in
	// *producer; cons is the last consumer index seen.
	// Consumer role: cons is the next index to peek; pub is what was last
	// stored in *consumer; prod is the last producer index seen.
	prod, cons, pub uint32
}

// init attaches r to shared words and slots and takes the current indices
// as its starting point (both are zero on a fresh kernel ring).
func (r *ring[T]) init(producer, consumer, flags *atomic.Uint32, slots []T, isProducer bool) {
	r.producer, r.consumer, r.flags = producer, consumer, flags
	r.slots = slots
	r.mask = uint32(len(slots) - 1)
	r.prod = producer.Load()
	r.cons = consumer.Load()
	if isProducer {
		r.pub = r.prod
	} else {
		r.pub = r.cons
	}
}

// size is the number of slots.
func (r *ring[T]) size() uint32 { return r.mask + 1 }

// free returns how many slots the producer may reserve, refreshing the
// consumer index from shared memory only when the cached one says fewer
// than want are free.
func (r *ring[T]) free(want uint32) uint32 {
	n := r.size() - (r.prod - r.cons)
	if n >= want {
		return n
	}
	r.cons = r.consumer.Load() // acquire: the consumer is done with these slots
	return r.size() - (r.prod - r.cons)
}

// reserve claims up to n slots for writing and returns the first index and
// how many were claimed (0 when the ring is full).
func (r *ring[T]) reserve(n uint32) (idx, got uint32) {
	got = min(n, r.free(n))
	idx = r.prod
	r.prod += got
	return idx, got
}

// at returns the slot for index idx.
func (r *ring[T]) at(idx uint32) *T { return &r.slots[idx&r.mask] }

// put copies src into the slots from index idx on, wrapping at the end of
// the array: one or two memmoves instead of a bounds check per slot.
func (r *ring[T]) put(idx uint32, src []T) {
	i := idx & r.mask
	n := copy(r.slots[i:], src)
	copy(r.slots, src[n:])
}

// get copies the slots from index idx on into dst, wrapping likewise.
func (r *ring[T]) get(idx uint32, dst []T) {
	i := idx & r.mask
	n := copy(dst, r.slots[i:])
	copy(dst[n:], r.slots)
}

// submit publishes everything reserved so far.
func (r *ring[T]) submit() {
	if r.pub != r.prod {
		r.pub = r.prod
		r.producer.Store(r.pub) // release: slots written before this
	}
}

// available returns how many slots the consumer may read, refreshing the
// producer index only when the cached one says fewer than want are ready.
func (r *ring[T]) available(want uint32) uint32 {
	n := r.prod - r.cons
	if n >= want {
		return n
	}
	r.prod = r.producer.Load() // acquire: slots up to here are written
	return r.prod - r.cons
}

// peek claims up to n filled slots for reading and returns the first index
// and how many were claimed (0 when the ring is empty).
func (r *ring[T]) peek(n uint32) (idx, got uint32) {
	got = min(n, r.available(n))
	idx = r.cons
	r.cons += got
	return idx, got
}

// release gives back everything peeked so far to the producer.
func (r *ring[T]) release() {
	if r.pub != r.cons {
		r.pub = r.cons
		r.consumer.Store(r.pub) // release: done reading the slots
	}
}

// needWakeup reports whether the kernel asked to be kicked (need_wakeup).
func (r *ring[T]) needWakeup() bool {
	return r.flags.Load()&xdpRingNeedWakeup != 0
}

// outstanding is, for a producer, how many published or reserved slots the
// consumer has not taken yet.
func (r *ring[T]) outstanding() uint32 {
	r.cons = r.consumer.Load()
	return r.prod - r.cons
}
