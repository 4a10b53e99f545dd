package virtif

import (
	"fmt"
	"net"
	"testing"
)

// newBench is an up interface on the "bare" backend, whose Send does
// nothing, so the benchmarks measure the core.
func newBench(tb testing.TB) (*Interface, func([]byte)) {
	tb.Helper()
	c := newCloner(tb, ClonerConfig{})
	ifp, err := c.Create()
	if err != nil {
		tb.Fatal(err)
	}
	if err := ifp.SetLinkStr("bare:bench"); err != nil {
		tb.Fatal(err)
	}
	if err := ifp.Up(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = ifp.Down() })
	return ifp, ifp.Backend().(*bareBackend).cfg.Deliver
}

func BenchmarkOutput(b *testing.B) {
	for _, n := range []int{1, 8, 32, 33} {
		b.Run(fmt.Sprintf("segs=%d", n), func(b *testing.B) { benchOutput(b, n) })
	}
}

func benchOutput(b *testing.B, nsegs int) {
	ifp, _ := newBench(b)
	segs := split(frameTo(bcast, 1500), nsegs, false)
	b.ReportAllocs()
	b.SetBytes(1500)
	for b.Loop() {
		if err := ifp.Output(segs); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOutputBatch(b *testing.B) {
	ifp, _ := newBench(b)
	frames := make([][][]byte, 64)
	for k := range frames {
		frames[k] = [][]byte{frameTo(bcast, 64)}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ifp.OutputBatch(frames); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(frames)), "ns/frame")
}

// BenchmarkDeliver: the receive filter through Deliver and through a
// NewDeliver function ("own"), on one goroutine and on all Ps at once.
func BenchmarkDeliver(b *testing.B) {
	for _, mode := range []string{"accept", "filter", "promisc"} {
		b.Run(mode, func(b *testing.B) { benchDeliver(b, mode, false, false) })
		b.Run(mode+"-own", func(b *testing.B) { benchDeliver(b, mode, false, true) })
		b.Run(mode+"-parallel", func(b *testing.B) { benchDeliver(b, mode, true, false) })
		b.Run(mode+"-parallel-own", func(b *testing.B) { benchDeliver(b, mode, true, true) })
	}
}

func benchDeliver(b *testing.B, mode string, parallel, own bool) {
	ifp, deliver := newBench(b)
	newDeliver := ifp.Backend().(*bareBackend).cfg.NewDeliver
	if own {
		deliver = newDeliver()
	}
	ifp.SetInput(func([]byte, bool) {})
	dst := ifp.HardwareAddr()
	switch mode {
	case "filter":
		dst = net.HardwareAddr{2, 9, 9, 9, 9, 9}
	case "promisc":
		dst = net.HardwareAddr{2, 9, 9, 9, 9, 9}
		if err := ifp.SetPromisc(true); err != nil {
			b.Fatal(err)
		}
	}
	f := frameTo(dst, 64)
	b.ReportAllocs()
	if parallel {
		b.RunParallel(func(pb *testing.PB) {
			f := frameTo(dst, 64)
			deliver := deliver
			if own {
				deliver = newDeliver() // one per receiving goroutine
			}
			for pb.Next() {
				deliver(f)
			}
		})
	} else {
		for b.Loop() {
			deliver(f)
		}
	}
	st := ifp.Stats()
	if st.IPackets+st.IDrops == 0 {
		b.Fatal("nothing counted")
	}
}

func BenchmarkStats(b *testing.B) {
	ifp, _ := newBench(b)
	b.ReportAllocs()
	for b.Loop() {
		_ = ifp.Stats()
	}
}

// The send and receive paths allocate nothing per frame.
func TestZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation behaviour (sync.Pool drops items)")
	}
	ifp, deliver := newBench(t)
	ownDeliver := ifp.Backend().(*bareBackend).cfg.NewDeliver()
	ifp.SetInputBatch(func([]byte, bool) {}, func() {})
	own, other := frameTo(ifp.HardwareAddr(), 64), frameTo(net.HardwareAddr{2, 9, 9, 9, 9, 9}, 64)
	long := split(frameTo(bcast, 1500), 100, true)
	tap := &countTap{}
	cases := []struct {
		name string
		fn   func()
	}{
		{"deliver accept", func() { deliver(own) }},
		{"deliver filter", func() { deliver(other) }},
		{"deliver runt", func() { deliver(own[:10]) }},
		{"NewDeliver accept", func() { ownDeliver(own) }},
		{"NewDeliver filter", func() { ownDeliver(other) }},
		{"EndBatch", ifp.Backend().(*bareBackend).cfg.EndBatch},
		{"output 1 segment", func() { _ = ifp.Output([][]byte{own}) }},
		{"output 100 segments (coalesced)", func() { _ = ifp.Output(long) }},
		{"output batch", func() { _, _ = ifp.OutputBatch([][][]byte{{own}, {own}}) }},
		{"output empty frame (error)", func() { _ = ifp.Output(nil) }},
		{"add a tap", func() {
			if err := ifp.AddTap(tap); err != nil {
				t.Fatal(err)
			}
		}},
		{"with a tap: deliver", func() { deliver(own) }},
		{"with a tap: output 100 segments", func() { _ = ifp.Output(long) }},
	}
	for _, tc := range cases {
		tc.fn() // warm up buffers
		if tc.name == "add a tap" {
			continue
		}
		if n := testing.AllocsPerRun(1000, tc.fn); n != 0 {
			t.Errorf("%s: %v allocs per frame, want 0", tc.name, n)
		}
	}
}
