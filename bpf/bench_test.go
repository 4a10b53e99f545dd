//go:build linux

package bpf

import (
	"testing"
)

// benchSteer test-runs frame b.N times in one BPF_PROG_TEST_RUN call, so
// ns/op is the in-kernel cost of one frame plus 1/b.N of a syscall.
func benchSteer(b *testing.B, frame []byte, want uint32) {
	s := loadT(b, nil)
	setup(b, s)
	b.ReportAllocs()
	b.ResetTimer()
	ret, perRun, err := s.Program().Benchmark(frame, b.N, b.ResetTimer)
	if err != nil {
		b.Fatal(err)
	}
	if ret != want {
		b.Fatalf("action %d, want %d", ret, want)
	}
	b.ReportMetric(float64(perRun.Nanoseconds()), "kernel-ns/frame")
}

func BenchmarkSteerUnicast(b *testing.B) { benchSteer(b, ether(mac0, 0x0800, nil), xdpRedirect) }
func BenchmarkSteerPass(b *testing.B)    { benchSteer(b, ether(macOther, 0x0800, nil), xdpPass) }
func BenchmarkSteerARP(b *testing.B)     { benchSteer(b, ether(bcast, 0x0806, arp(1, ip0)), xdpRedirect) }
func BenchmarkSteerNoSocket(b *testing.B) {
	benchSteer(b, ether(mac1, 0x0800, nil), xdpPass)
}
