//go:build linux

package xsk

import "testing"

// BenchmarkReceiveBatch: Receive of 64-descriptor batches from an RX ring in
// ordinary memory, the kernel's side played by the benchmark: the Go cost
// of taking descriptors off the ring, without a kernel. One op is one
// descriptor. Single: every descriptor a packet (the single-buffer path);
// Chains: packets of 5 descriptors, so batches end inside a chain that
// Receive leaves on the ring.
func BenchmarkReceiveBatch(b *testing.B) {
	for _, tc := range []struct {
		name  string
		chain int
	}{{"Single", 1}, {"Chains", 5}} {
		b.Run(tc.name, func(b *testing.B) {
			kernel, ours := ringPair[Desc](b, 2048, 0)
			s := &Socket{}
			s.rx = *ours
			var fill [256]Desc
			for i := range fill {
				fill[i] = Desc{Addr: uint64(i) * 2048, Len: 64}
				if (i+1)%tc.chain != 0 {
					fill[i].Options = PktContd
				}
			}
			descs := make([]Desc, 64)
			b.ReportAllocs()
			b.ResetTimer()
			for got := 0; got < b.N; {
				if kernel.free(256) >= 256 {
					idx, n := kernel.reserve(256)
					kernel.put(idx, fill[:n])
					kernel.submit()
				}
				got += s.Receive(descs)
			}
		})
	}
}
