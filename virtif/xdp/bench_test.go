//go:build linux

package xdp

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
	"github.com/virtif-xdp/virtif-xdp/xsk"
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
	gen, err := trafficgen.LiveIn(lab, netlab.Peer)
	if err != nil {
		b.Fatal(err)
	}
	benchRxFrom(b, lab, gen, opts, 64)
}

// BenchmarkRxDropJumbo: the multi-buffer receive path. The peer's kernel
// sends b.N 9014-byte frames (AF_PACKET sendmmsg: the live generator's
// frames are a page at most) over a veth of MTU 9000; each arrives as a
// chain of 6 descriptors that the RX goroutine gathers for the handler.
// BenchmarkRxDropSkb is the same generator with 1514-byte frames, the
// single-descriptor path, for the comparison.
func BenchmarkRxDropJumbo(b *testing.B) { benchRxSkb(b, 9014) }

// BenchmarkRxDropSkb: BenchmarkRxDropJumbo's generator with 1514-byte frames.
func BenchmarkRxDropSkb(b *testing.B) { benchRxSkb(b, 1514) }

func benchRxSkb(b *testing.B, size int) {
	labtest.RequireVethLab(b, "a veth pair of MTU 9000")
	lab := labtest.NewT(b, netlab.Options{MTU: 9000})
	gen, err := trafficgen.PacketIn(lab, netlab.Peer)
	if err != nil {
		b.Fatal(err)
	}
	benchRxFrom(b, lab, gen, "", size)
}

// benchRxFrom: gen sends b.N frames of size bytes to the vif's MAC, whose
// handler counts them.
func benchRxFrom(b *testing.B, lab *netlab.Lab, gen interface {
	Send(frame []byte, count int) (int, error)
	Close() error
}, opts string, size int) {
	defer gen.Close()
	v := newVif(b, lab, nil, opts)
	var got atomic.Uint64
	v.ifc.SetInput(func([]byte, bool) { got.Add(1) })
	f := trafficgen.UDPFrame(v.ifc.HardwareAddr(), lab.MAC[netlab.Peer], peerIP, vifIP, 9, 9, size)
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
	b.ReportMetric(float64(got.Load())*float64(size)*8/elapsed.Seconds()/1e9, "Gbit/s")
	b.ReportMetric(100*(1-float64(got.Load())/float64(sent)), "%lost")
}

// BenchmarkTxOnly sends b.N 64-byte frames from the vif in batches of 64
// (OutputBatch, one kick per batch) to an XDP sink on the peer that counts.
func BenchmarkTxOnly(b *testing.B) { benchTx(b, 1500, 64) }

// BenchmarkTxOnlyJumbo: the multi-buffer transmit path, 9014-byte frames
// (chains of 5 descriptors) on a veth of MTU 9000 (the sink there runs in
// generic mode, a single-buffer program); BenchmarkTxOnly1514 is the same
// lab with 1514-byte frames, for the comparison.
func BenchmarkTxOnlyJumbo(b *testing.B) { benchTx(b, 9000, 9014) }

// BenchmarkTxOnly1514: BenchmarkTxOnlyJumbo's lab with 1514-byte frames.
func BenchmarkTxOnly1514(b *testing.B) { benchTx(b, 9000, 1514) }

func benchTx(b *testing.B, mtu, size int) {
	if mtu > 1500 {
		labtest.RequireVethLab(b, "a veth pair of MTU 9000")
	}
	lab := labtest.NewT(b, netlab.Options{MTU: mtu})
	v := newVif(b, lab, nil, "")
	if err := v.ifc.SetMTU(mtu); err != nil {
		b.Fatal(err)
	}
	sink, err := trafficgen.SinkIn(lab, netlab.Peer, trafficgen.SinkDrop)
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	const batch = 64
	frames := make([][][]byte, batch)
	for i := range frames {
		f := trafficgen.UDPFrame(lab.MAC[netlab.Peer], v.ifc.HardwareAddr(), vifIP, peerIP, 9, 9, size)
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
	b.ReportMetric(float64(b.N)*float64(size)*8/elapsed.Seconds()/1e9, "Gbit/s")
	b.ReportMetric(100*(1-float64(arrived)/float64(b.N)), "%lost")
}

// BenchmarkDemux: the RX goroutine's hand-over of a 64-descriptor batch to a
// lone vif whose handler does nothing, without a kernel (the descriptors
// point into the vif's UMEM): the Go cost per frame of the delivery path.
// Single is the single-buffer path (one descriptor a frame, no copy);
// Chains gathers frames of 5 descriptors (9000 bytes) into the queue's
// buffer, one op being one frame either way.
func BenchmarkDemux(b *testing.B) {
	lab := labtest.NewT(b, netlab.Options{})
	v := newVif(b, lab, nil, "")
	v.ifc.SetInput(func([]byte, bool) {})
	n := v.b.nic
	for _, tc := range []struct {
		name  string
		chain int
		len   uint32
	}{{"Single", 1, 64}, {"Chains", 5, 1800}} {
		b.Run(tc.name, func(b *testing.B) {
			q := benchQueue(n.queues[0].sock)
			e := &era{owner: v.b}
			descs := make([]xsk.Desc, 64/tc.chain*tc.chain)
			for i := range descs {
				descs[i] = xsk.Desc{Addr: uint64(i)*2048 + 256, Len: tc.len}
				if (i+1)%tc.chain != 0 {
					descs[i].Options = xsk.PktContd
				}
			}
			for i := 0; i < len(descs); i += tc.chain {
				copy(q.sock.Frame(descs[i]), v.ifc.HardwareAddr()) // to the vif: delivered
			}
			frames := len(descs) / tc.chain
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += frames {
				n.demux(q, e, descs, uint32(i))
			}
		})
	}
}
