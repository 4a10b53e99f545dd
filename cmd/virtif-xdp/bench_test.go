//go:build linux

package main

import (
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
	"github.com/virtif-xdp/virtif-xdp/virtif"
)

// The benchmark modes through the command's own code (openVif, the input
// handlers, txLoop, the forwarder) on a veth lab: the live generator on the
// peer for the receive modes, an XDP sink on the peer for the send modes.
// allocs/op is the whole process's allocations per frame.

func BenchmarkRxdrop(b *testing.B) { runModeBench(b, "rxdrop") }
func BenchmarkTxonly(b *testing.B) { runModeBench(b, "txonly") }
func BenchmarkL2fwd(b *testing.B)  { runModeBench(b, "l2fwd") }

func runModeBench(b *testing.B, mode string) {
	labtest.RequireRoot(b)
	lab := labtest.NewT(b, netlab.Options{})
	var fwd *forwarder
	var input virtif.Input = func([]byte, bool) {}
	if mode == "l2fwd" {
		fwd = newForwarder()
		input = fwd.input
	}
	v, err := openVif(vifSetup{link: "xdp:" + lab.Link[netlab.Host], netns: lab.NS[netlab.Host],
		mac: mustMAC(testMAC), input: input})
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close()
	if fwd != nil {
		fwd.start(v.ifc)
		defer fwd.stop()
	}
	var gen *trafficgen.Live
	if mode != "txonly" {
		gen = newLive(b, lab)
		// The generator and the veth's NAPI on CPU 0, the vif on the rest.
		if runtime.NumCPU() > 1 {
			if err := gen.Pin(0); err != nil {
				b.Fatal(err)
			}
		}
	}
	var sink *trafficgen.Sink
	if mode != "rxdrop" {
		sink = newSink(b, lab)
	}
	f := toVif(lab)
	if gen != nil {
		gen.Send(f, 10000) // warm up
		time.Sleep(50 * time.Millisecond)
	}
	base := v.ifc.Stats()
	var sinkBase uint64
	if sink != nil {
		sinkBase, _ = sink.Count()
	}

	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var sent uint64
	switch mode {
	case "txonly":
		bf := &benchFlags{size: 64, batch: 64, dstMAC: lab.MAC[netlab.Peer]}
		frames := txFrames(v.ifc.HardwareAddr(), bf)
		var stop atomic.Bool
		if err := txLoop(v.ifc, frames, &stop, uint64(b.N)); err != nil {
			b.Fatal(err)
		}
	default:
		n, err := gen.Send(f, b.N)
		if err != nil {
			b.Fatal(err)
		}
		sent = uint64(n)
		// Until every frame the program steered is received or counted
		// dropped, and the program sees no more.
		for last, deadline := ^uint64(0), time.Now().Add(5*time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			st := v.ifc.Stats()
			steered := backendStat(st, "xdp_unicast") - backendStat(base, "xdp_unicast")
			done := st.IPackets - base.IPackets + backendStat(st, "xsk_rx_dropped") - backendStat(base, "xsk_rx_dropped")
			if steered == last && done >= steered {
				break
			}
			last = steered
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	st := v.ifc.Stats()
	var moved uint64
	switch mode {
	case "rxdrop":
		moved = st.IPackets - base.IPackets
	default:
		moved = st.OPackets - base.OPackets
	}
	b.ReportMetric(float64(moved)/elapsed.Seconds(), "pps")
	if sent > 0 {
		b.ReportMetric(100*(1-float64(moved)/float64(sent)), "%lost")
	}
	if sink != nil {
		// What reached the peer, once the wire is quiet.
		var got uint64
		for last := ^uint64(0); ; time.Sleep(20 * time.Millisecond) {
			c, _ := sink.Count()
			if got = c - sinkBase; got == last {
				break
			}
			last = got
		}
		b.ReportMetric(float64(got)/float64(max(moved, 1))*100, "%arrived")
	}
}

// rxdrop and l2fwd spin on their rings unless the link string says how to
// wait; the summary says which wait mode ran. txonly receives nothing and
// keeps the library's poll.
func TestIntegrationBenchWaitDefault(t *testing.T) {
	labtest.RequireRoot(t)
	lab := labtest.NewT(t, netlab.Options{})
	for _, c := range []struct{ mode, link, want string }{
		{"rxdrop", "", "spin"},
		{"l2fwd", "", "spin"},
		{"rxdrop", ",rxwait=poll", "poll"},
		{"l2fwd", ",busypoll=8", "busypoll=8"},
		{"txonly", "", "poll"},
	} {
		res := runCmd(t, c.mode, "--netns", lab.NS[netlab.Host], "--link", "xdp:"+lab.Link[netlab.Host]+c.link,
			"--duration", "200ms", "--json")
		if res.code != exitOK {
			t.Fatalf("%s %s: exit %d:\n%s", c.mode, c.link, res.code, res.stderr)
		}
		if s := summaryJSON(t, res); s.Wait != c.want {
			t.Errorf("%s %s: rx_wait %q, want %q (link %s)", c.mode, c.link, s.Wait, c.want, s.Link)
		}
		if !strings.Contains(res.stderr, "rxwait="+c.want) && !strings.Contains(res.stderr, `rxwait="`+c.want+`"`) {
			t.Errorf("%s %s: the running line does not say rxwait %s:\n%s", c.mode, c.link, c.want, res.stderr)
		}
	}
	res := runCmd(t, "rxdrop", "--netns", lab.NS[netlab.Host], "--link", "xdp:"+lab.Link[netlab.Host], "--duration", "200ms")
	if res.code != exitOK || !strings.Contains(res.stdout, "rxwait spin)") {
		t.Errorf("the text summary does not say rxwait spin: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
}

func TestSpinByDefault(t *testing.T) {
	for in, want := range map[string]string{
		"xdp:eth0":                    "xdp:eth0,rxwait=spin",
		"xdp:eth0,queues=0":           "xdp:eth0,queues=0,rxwait=spin",
		"xdp:eth0,rxwait=poll":        "xdp:eth0,rxwait=poll",
		"xdp:eth0,ring=64,busypoll=4": "xdp:eth0,ring=64,busypoll=4",
	} {
		if got := spinByDefault(in); got != want {
			t.Errorf("spinByDefault(%q) = %q, want %q", in, got, want)
		}
	}
}
