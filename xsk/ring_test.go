//go:build linux

package xsk

import (
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// testRingOffsets lays a ring out as the kernel does: producer and consumer
// on their own cache lines, then flags, then the slots.
var testRingOffsets = unix.XDPRingOffset{Producer: 0, Consumer: 64, Flags: 128, Desc: 192}

// ringPair puts a producer and a consumer view on one block of ordinary
// memory whose indices start at start, the way the kernel and this process
// share a mapping.
func ringPair[T any](tb testing.TB, n, start uint32) (prod, cons *ring[T]) {
	tb.Helper()
	mem := make([]byte, ringBytes[T](testRingOffsets, n))
	prod, cons = new(ring[T]), new(ring[T])
	if err := ringOn(prod, mem, testRingOffsets, n, true); err != nil {
		tb.Fatal(err)
	}
	prod.producer.Store(start)
	prod.consumer.Store(start)
	if err := ringOn(prod, mem, testRingOffsets, n, true); err != nil {
		tb.Fatal(err)
	}
	if err := ringOn(cons, mem, testRingOffsets, n, false); err != nil {
		tb.Fatal(err)
	}
	return prod, cons
}

func TestRingRejectsBadLayout(t *testing.T) {
	var r ring[uint64]
	mem := make([]byte, ringBytes[uint64](testRingOffsets, 8))
	if err := ringOn(&r, mem, testRingOffsets, 6, true); err == nil {
		t.Error("size 6 accepted")
	}
	if err := ringOn(&r, mem, testRingOffsets, 16, true); err == nil {
		t.Error("16 slots accepted in memory for 8")
	}
	bad := testRingOffsets
	bad.Consumer = 62
	if err := ringOn(&r, mem, bad, 8, true); err == nil {
		t.Error("misaligned consumer accepted")
	}
}

func TestRingReserveFullAndEmpty(t *testing.T) {
	p, c := ringPair[uint64](t, 8, 0)
	if _, got := c.peek(4); got != 0 {
		t.Fatalf("peek on empty ring got %d", got)
	}
	idx, got := p.reserve(10)
	if got != 8 || idx != 0 {
		t.Fatalf("reserve(10) on 8 slots = %d, %d", idx, got)
	}
	for i := range got {
		*p.at(idx + i) = uint64(100 + i)
	}
	if _, got := c.peek(1); got != 0 {
		t.Fatal("consumer saw slots before submit")
	}
	p.submit()
	if _, got := p.reserve(1); got != 0 {
		t.Fatal("reserve on a full ring succeeded")
	}
	idx, got = c.peek(3)
	if got != 3 {
		t.Fatalf("peek(3) got %d", got)
	}
	for i := range got {
		if v := *c.at(idx + i); v != uint64(100+i) {
			t.Fatalf("slot %d = %d", i, v)
		}
	}
	if _, got := p.reserve(1); got != 0 {
		t.Fatal("producer reused slots the consumer had not released")
	}
	c.release()
	if _, got := p.reserve(4); got != 3 {
		t.Fatalf("after release of 3, reserve(4) got %d", got)
	}
}

// The free-running indices wrap past 2^32 and the slots past the end of the
// array in the middle of a batch.
func TestRingWraparound(t *testing.T) {
	const n = 16
	for _, start := range []uint32{0, 5, 1<<32 - 3, 1<<32 - 16, 1<<32 - 17} {
		p, c := ringPair[Desc](t, n, start)
		next, want := uint64(0), uint64(0)
		for round := range 100 {
			batch := uint32(1 + round%7)
			idx, got := p.reserve(batch)
			for i := range got {
				*p.at(idx + i) = Desc{Addr: next, Len: uint32(next)}
				next++
			}
			p.submit()
			idx, got = c.peek(uint32(3 + round%5))
			for i := range got {
				if d := *c.at(idx + i); d.Addr != want || d.Len != uint32(want) {
					t.Fatalf("start %#x round %d: got %+v, want addr %d", start, round, d, want)
				}
				want++
			}
			c.release()
		}
		if want == 0 || next-want > n {
			t.Fatalf("start %#x: produced %d, consumed %d", start, next, want)
		}
		if got := p.producer.Load(); got != start+uint32(next) {
			t.Fatalf("start %#x: producer word %#x, want %#x", start, got, start+uint32(next))
		}
	}
}

// The cached consumer index is refreshed only when the cached view cannot
// satisfy a reservation, so a batch costs one shared load at most.
func TestRingCachedIndexRefresh(t *testing.T) {
	p, c := ringPair[uint64](t, 8, 0)
	p.reserve(8)
	p.submit()
	c.peek(8)
	c.release()
	if p.cons != 0 {
		t.Fatal("producer refreshed before it needed to")
	}
	if _, got := p.reserve(2); got != 2 || p.cons != 8 {
		t.Fatalf("reserve(2) got %d, cached consumer %d", got, p.cons)
	}
	c.consumer.Store(99) // would be garbage if read now
	if _, got := p.reserve(6); got != 6 || p.cons != 8 {
		t.Fatalf("reserve within the cached free space reread the consumer (cons %d)", p.cons)
	}
	c.consumer.Store(8)

	// Consumer side: the producer index is reread only when the cached
	// view has fewer than wanted.
	p.submit()
	if _, got := c.peek(2); got != 2 || c.prod != 16 {
		t.Fatalf("peek(2) got %d, cached producer %d", got, c.prod)
	}
	p.producer.Store(1000) // garbage if read now
	if _, got := c.peek(6); got != 6 || c.prod != 16 {
		t.Fatalf("peek within the cached fill reread the producer (prod %d)", c.prod)
	}
	p.producer.Store(16)
}

func TestRingNeedWakeup(t *testing.T) {
	p, _ := ringPair[uint64](t, 8, 0)
	if p.needWakeup() {
		t.Fatal("flag set on fresh ring")
	}
	p.flags.Store(unix.XDP_RING_NEED_WAKEUP)
	if !p.needWakeup() {
		t.Fatal("flag not seen")
	}
}

// A producer and a consumer goroutine pass a sequence through a small ring;
// run with -race to check the publication order.
func TestRingConcurrent(t *testing.T) {
	const total = 200000
	p, c := ringPair[uint64](t, 64, 1<<32-1000)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for v := uint64(0); v < total; {
			idx, got := p.reserve(16)
			for i := range got {
				*p.at(idx + i) = v
				v++
			}
			p.submit()
		}
	}()
	for want := uint64(0); want < total; {
		idx, got := c.peek(32)
		for i := range got {
			if v := *c.at(idx + i); v != want {
				t.Fatalf("got %d, want %d", v, want)
			}
			want++
		}
		c.release()
	}
	wg.Wait()
}

// put and get split a batch that crosses the end of the slot array.
func TestRingPutGetAcrossEnd(t *testing.T) {
	p, c := ringPair[Desc](t, 8, 5)
	src := make([]Desc, 6)
	for i := range src {
		src[i] = Desc{Addr: uint64(i + 1)}
	}
	idx, n := p.reserve(6)
	if n != 6 || idx&p.mask != 5 {
		t.Fatalf("reserve at slot %d, %d", idx&p.mask, n)
	}
	p.put(idx, src)
	p.submit()
	for i, want := range src {
		if got := *c.at(idx + uint32(i)); got != want {
			t.Fatalf("slot for %d: %+v, want %+v", i, got, want)
		}
	}
	dst := make([]Desc, 6)
	idx, n = c.peek(6)
	c.get(idx, dst[:n])
	for i := range src {
		if dst[i] != src[i] {
			t.Fatalf("get %d: %+v, want %+v", i, dst[i], src[i])
		}
	}
}

// FuzzRing drives a producer and a consumer view of one ring with an
// arbitrary sequence of batch operations and checks them against a model:
// values come out in order, once, never before they are submitted, and the
// producer never overwrites a slot the consumer has not released.
func FuzzRing(f *testing.F) {
	f.Add(uint32(0), []byte{0x13, 0x82, 0x04, 0x90, 0x7f, 0xff})
	f.Add(uint32(1<<32-5), []byte{0x0f, 0x0f, 0x8f, 0x41, 0xc1, 0x02})
	f.Fuzz(func(t *testing.T, start uint32, ops []byte) {
		const size = 8
		p, c := ringPair[uint64](t, size, start)
		var next, want uint64 // next value to produce, next expected
		var submitted uint64  // values published by the producer
		var reserved, held uint32
		for _, op := range ops {
			n := uint32(op&0x0f) + 1
			switch op >> 6 {
			case 0: // reserve and write
				idx, got := p.reserve(n)
				if got > n || reserved+got > size {
					t.Fatalf("reserve(%d) got %d with %d reserved", n, got, reserved)
				}
				for i := range got {
					*p.at(idx + i) = next
					next++
				}
				reserved += got
			case 1: // submit
				p.submit()
				submitted = next
			case 2: // peek and check
				idx, got := c.peek(n)
				for i := range got {
					if want >= submitted {
						t.Fatalf("consumer read value %d before it was submitted (%d)", want, submitted)
					}
					if v := *c.at(idx + i); v != want {
						t.Fatalf("read %d, want %d", v, want)
					}
					want++
				}
				held += got
			case 3: // release
				c.release()
				reserved -= held
				held = 0
			}
		}
	})
}
