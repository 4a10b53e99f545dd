//go:build linux

package xsk

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
)

const benchBatch = 64

var txBudget = 0

// BenchmarkRing passes one batch of 64 descriptors through a ring in memory:
// reserve, write, submit on the producer side, peek, read, release on the
// consumer side. One op is one batch.
func BenchmarkRing(b *testing.B) {
	p, c := ringPair[Desc](b, 2048, 0)
	src := make([]Desc, benchBatch)
	for j := range src {
		src[j] = Desc{Addr: uint64(j) * 2048, Len: 64}
	}
	dst := make([]Desc, benchBatch)
	b.ReportAllocs()
	for b.Loop() {
		idx, n := p.reserve(benchBatch)
		p.put(idx, src[:n])
		p.submit()
		idx, n = c.peek(benchBatch)
		c.get(idx, dst[:n])
		c.release()
	}
}

// BenchmarkRingAddrs is BenchmarkRing for a fill/completion ring written
// and read one address at a time, as Release and Complete do.
func BenchmarkRingAddrs(b *testing.B) {
	p, c := ringPair[uint64](b, 2048, 0)
	var sum uint64
	b.ReportAllocs()
	for b.Loop() {
		idx, n := p.reserve(benchBatch)
		for j := range n {
			*p.at(idx + j) = uint64(j) * 2048
		}
		p.submit()
		idx, n = c.peek(benchBatch)
		for j := range n {
			sum += *c.at(idx + j)
		}
		c.release()
	}
	_ = sum
}

// BenchmarkRXDrop receives frames from the live generator on the peer and
// releases them unread; one op is one frame received.
func BenchmarkRXDrop(b *testing.B) { benchRXDrop(b, 64) }

func BenchmarkRXDrop1500(b *testing.B) { benchRXDrop(b, 1500) }

func benchRXDrop(b *testing.B, size int) {
	l := newXSKLab(b, netlab.Options{})
	s := l.open(b, 0, nil)
	gen, err := trafficgen.LiveIn(l.Lab, netlab.Peer)
	if err != nil {
		b.Fatal(err)
	}
	defer gen.Close()
	frame := trafficgen.UDPFrame(l.MAC[netlab.Host], l.MAC[netlab.Peer],
		l.Addr[netlab.Peer].Addr(), l.Addr[netlab.Host].Addr(), 9, 9, size)

	var stop sync.WaitGroup
	done := make(chan struct{})
	stop.Add(1)
	go func() {
		defer stop.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := gen.Send(frame, 1<<16); err != nil {
				return
			}
		}
	}()
	defer func() { close(done); stop.Wait() }()

	before, err := s.Stats()
	if err != nil {
		b.Fatal(err)
	}
	descs := make([]Desc, benchBatch)
	// This thread's CPU time is the receiver's own cost; the kernel's copy
	// into the UMEM happens in NAPI, mostly on the generator's CPU.
	el, cpu := timed(b, func() {
		for got := 0; got < b.N; {
			n := s.Receive(descs)
			if n == 0 {
				if _, err := s.Wait(time.Second); err != nil {
					b.Fatal(err)
				}
				continue
			}
			s.Release(descs[:n])
			got += n
		}
	})
	after, err := s.Stats()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "pps")
	dropped := (after.RXDropped - before.RXDropped) + (after.RXRingFull - before.RXRingFull)
	b.ReportMetric(float64(dropped)/float64(b.N), "kdrops/op")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// BenchmarkKick measures one TX kick on an empty ring, i.e. the cost of the
// system call itself, through RawSyscall6 (what kickTX uses) and Syscall6.
func BenchmarkKick(b *testing.B) {
	l := newXSKLab(b, netlab.Options{})
	s := l.open(b, 0, nil)
	for _, k := range []struct {
		name string
		kick func(int) unix.Errno
	}{{"raw", kickTX}, {"syscall", kickTXSyscall}} {
		b.Run(k.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if e := k.kick(s.fd); e != 0 {
					b.Fatal(e)
				}
			}
		})
	}
}

// BenchmarkTXOnly transmits 64-byte frames to an XDP_DROP sink on the peer;
// one op is one frame completed by the kernel.
func BenchmarkTXOnly(b *testing.B) { benchTXOnly(b, 64, false) }

// BenchmarkTXOnlySyscallKick is BenchmarkTXOnly kicking with Syscall6
// instead of RawSyscall6.
func BenchmarkTXOnlySyscallKick(b *testing.B) { benchTXOnly(b, 64, true) }

// BenchmarkTXOneByOne transmits and kicks one frame at a time, where the
// cost of the kick system call weighs most.
func BenchmarkTXOneByOne(b *testing.B) {
	b.Run("raw", func(b *testing.B) { benchTX(b, 64, 1, false) })
	b.Run("syscall", func(b *testing.B) { benchTX(b, 64, 1, true) })
}

// BenchmarkTXOnlyBudget raises how many frames one copy-mode kick may send
// (XDP_MAX_TX_SKB_BUDGET, default 32).
func BenchmarkTXOnlyBudget(b *testing.B) {
	for _, n := range []int{32, 64, 256, 1024, 2048} {
		b.Run(fmt.Sprint(n), func(b *testing.B) { txBudget = n; benchTXOnly(b, 64, false); txBudget = 0 })
	}
}

func BenchmarkTXOnly1500(b *testing.B) { benchTXOnly(b, 1500, false) }

func benchTXOnly(b *testing.B, size int, syscallKick bool) {
	benchTX(b, size, benchBatch, syscallKick)
}

func benchTX(b *testing.B, size, batch int, syscallKick bool) {
	l := newXSKLab(b, netlab.Options{})
	s := l.open(b, 0, nil)
	if syscallKick {
		useKick(b, kickTXSyscall)
	}
	sink, err := trafficgen.SinkIn(l.Lab, netlab.Peer, trafficgen.SinkDrop)
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	frame := trafficgen.UDPFrame(l.MAC[netlab.Peer], l.MAC[netlab.Host],
		l.Addr[netlab.Host].Addr(), l.Addr[netlab.Peer].Addr(), 9, 9, size)
	// Write the frame into every TX frame once, as xdpsock's txonly does.
	var addrs []uint64
	for {
		addr, buf, ok := s.NextFrame()
		if !ok {
			break
		}
		copy(buf, frame)
		addrs = append(addrs, addr)
	}
	for _, a := range addrs {
		s.FreeFrame(a)
	}
	if budget := txBudget; budget > 0 {
		err := unix.SetsockoptInt(s.fd, unix.SOL_XDP, unix.XDP_MAX_TX_SKB_BUDGET, budget)
		if errors.Is(err, unix.ENOPROTOOPT) {
			b.Skip("XDP_MAX_TX_SKB_BUDGET needs Linux 6.17")
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	before, err := sink.Count()
	if err != nil {
		b.Fatal(err)
	}
	descs := make([]Desc, benchBatch)
	// CPU time of this thread (user + system, which includes the kernel's
	// copy-mode transmit and usually the peer's NAPI) is steadier than wall
	// time on a shared machine.
	el, cpu := timed(b, func() {
		queued := 0
		progress := time.Now()
		// NextFrame reaps completions too, so count what is done by InFlight.
		for i := 0; queued < b.N || s.InFlight() > 0; i++ {
			if s.Complete() > 0 {
				progress = time.Now()
			} else if i%1024 == 0 && time.Since(progress) > 5*time.Second {
				st, _ := s.Stats()
				b.Fatalf("TX stalled: %d of %d queued, %d in flight, %d free, kick errno %v, need_wakeup %v, %+v",
					queued, b.N, s.InFlight(), s.FreeFrames(), kickTX(s.fd), s.tx.needWakeup(), st)
			}
			n := 0
			for n < min(batch, b.N-queued) {
				addr, _, ok := s.NextFrame()
				if !ok {
					break
				}
				descs[n] = Desc{Addr: addr, Len: uint32(size)}
				n++
			}
			sent, err := s.Transmit(descs[:n])
			if err != nil {
				b.Fatal(err)
			}
			for _, d := range descs[sent:n] {
				s.FreeFrame(d.Addr)
			}
			queued += sent
			if sent == 0 && n == 0 {
				if err := s.Kick(); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	after, err := sink.Count()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "pps")
	b.ReportMetric(float64(after-before)/float64(b.N), "delivered/op")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// timed runs loop, the measured part of a benchmark, on a locked OS thread
// and returns the wall time and that thread's CPU time (user + system) it
// took.
func timed(b *testing.B, loop func()) (wall, cpu time.Duration) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := threadCPU(b)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	loop()
	wall = time.Since(start)
	b.StopTimer()
	return wall, threadCPU(b) - cpu0
}

func threadCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
