//go:build linux

package trafficgen

import (
	"testing"
	"time"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
)

// BenchmarkLive measures the live generator into an XDP_DROP sink; one op is
// one frame.
func BenchmarkLive(b *testing.B) { benchLive(b, 64) }

func BenchmarkLive1500(b *testing.B) { benchLive(b, 1500) }

// BenchmarkPacket measures the AF_PACKET sendmmsg generator into an
// XDP_DROP sink.
func BenchmarkPacket(b *testing.B) {
	lab, sink, _, frame := liveLab(b, SinkDrop)
	gen, err := PacketIn(lab, netlab.Peer)
	if err != nil {
		b.Fatal(err)
	}
	defer gen.Close()
	benchSend(b, sink, gen.Send, frame)
}

func benchLive(b *testing.B, size int) {
	lab, sink, live, _ := liveLab(b, SinkDrop)
	frame := UDPFrame(lab.MAC[netlab.Host], lab.MAC[netlab.Peer],
		lab.Addr[netlab.Peer].Addr(), lab.Addr[netlab.Host].Addr(), 9, 9, size)
	benchSend(b, sink, live.Send, frame)
}

// benchSend sends b.N copies of frame and reports the rate and the share the
// sink saw.
func benchSend(b *testing.B, sink *Sink, send func([]byte, int) (int, error), frame []byte) {
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	if _, err := send(frame, b.N); err != nil {
		b.Fatal(err)
	}
	el := time.Since(start)
	b.StopTimer()
	got, err := sink.Count()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "pps")
	b.ReportMetric(float64(got)/float64(b.N), "delivered/op")
}

// BenchmarkLiveThreaded moves the receiving veth's NAPI into a kernel
// thread, so the generator and the receiver can run on different CPUs.
func BenchmarkLiveThreaded(b *testing.B) {
	lab, sink, live, frame := liveLab(b, SinkDrop)
	if _, err := lab.Run(netlab.Host, "sh", "-c", "echo 1 > /sys/class/net/"+lab.Link[netlab.Host]+"/threaded"); err != nil {
		b.Fatal(err)
	}
	benchSend(b, sink, live.Send, frame)
}
