//go:build linux

package xdp

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
)

// BenchmarkRxDrop: the peer's live generator sends b.N 64-byte frames to the
// vif's MAC; the vif's input handler counts and drops them. Reports the
// rate at which frames reached the handler, and the share lost under
// overload (counted by the socket or the veth).
func BenchmarkRxDrop(b *testing.B) { benchRx(b, "") }

// BenchmarkRxDropSpin is BenchmarkRxDrop with a busy RX loop (rxwait=spin).
func BenchmarkRxDropSpin(b *testing.B) { benchRx(b, ",rxwait=spin") }

// BenchmarkRxDropBusyPoll is BenchmarkRxDrop with kernel busy polling.
func BenchmarkRxDropBusyPoll(b *testing.B) { benchRx(b, ",busypoll=64") }

func benchRx(b *testing.B, opts string) {
	lab := labtest.NewT(b, netlab.Options{})
	v := newVif(b, lab, nil, opts)
	var got atomic.Uint64
	v.ifc.SetInput(func([]byte, bool) { got.Add(1) })
	gen, err := trafficgen.LiveIn(lab, netlab.Peer)
	if err != nil {
		b.Fatal(err)
	}
	defer gen.Close()
	f := trafficgen.UDPFrame(v.ifc.HardwareAddr(), lab.MAC[netlab.Peer], peerIP, vifIP, 9, 9, 64)
	gen.Send(f, 10000) // warm up
	time.Sleep(50 * time.Millisecond)
	base := v.ifc.Stats()
	got.Store(0)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	sent, err := gen.Send(f, b.N)
	if err != nil {
		b.Fatal(err)
	}
	// Wait until every frame the program redirected is received or counted
	// dropped by the socket, and the program has stopped seeing more.
	for last, deadline := uint64(0), time.Now().Add(5*time.Second); time.Now().Before(deadline); {
		st := v.ifc.Stats()
		redirected := stat(st, "xdp_unicast") - stat(base, "xdp_unicast")
		if redirected == last && got.Load()+stat(st, "xsk_rx_dropped")-stat(base, "xsk_rx_dropped") >= redirected {
			break
		}
		last = redirected
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(got.Load())/elapsed.Seconds(), "pps")
	b.ReportMetric(100*(1-float64(got.Load())/float64(sent)), "%lost")
}

// BenchmarkTxOnly sends b.N 64-byte frames from the vif in batches of 64
// (OutputBatch, one kick per batch) to an XDP sink on the peer that counts.
func BenchmarkTxOnly(b *testing.B) {
	lab := labtest.NewT(b, netlab.Options{})
	v := newVif(b, lab, nil, "")
	sink, err := trafficgen.SinkIn(lab, netlab.Peer, trafficgen.SinkDrop)
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	const batch = 64
	frames := make([][][]byte, batch)
	for i := range frames {
		f := trafficgen.UDPFrame(lab.MAC[netlab.Peer], v.ifc.HardwareAddr(), vifIP, peerIP, 9, 9, 64)
		frames[i] = [][]byte{f}
	}
	before, _ := sink.Count()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for sent := 0; sent < b.N; {
		n := min(batch, b.N-sent)
		k, err := v.ifc.OutputBatch(frames[:n])
		sent += k
		if err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	var arrived uint64
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		c, _ := sink.Count()
		if arrived = c - before; arrived >= uint64(b.N) {
			break
		}
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "pps")
	b.ReportMetric(100*(1-float64(arrived)/float64(b.N)), "%lost")
}
