//go:build linux

package main

import (
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/virtif-xdp/virtif-xdp/bpf"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
)

const testMAC = "02:00:00:00:0a:01"

func mustMAC(s string) net.HardwareAddr {
	hw, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return hw
}

// newSource opens the peer's frame source: the live-frame generator, or
// AF_PACKET where the kernel refuses live frames.
func newSource(t testing.TB, lab *netlab.Lab) trafficgen.Source {
	t.Helper()
	gen, why, err := trafficgen.SourceIn(lab, netlab.Peer)
	if err != nil {
		t.Fatal(err)
	}
	if why != "" {
		t.Logf("frames from AF_PACKET: %s", why)
	}
	t.Cleanup(func() { gen.Close() })
	return gen
}

// newLive opens the live-frame generator, for a benchmark that needs its
// rate; it skips where the kernel refuses live frames.
func newLive(t testing.TB, lab *netlab.Lab) *trafficgen.Live {
	t.Helper()
	if err := trafficgen.LiveAvailable(); err != nil {
		t.Skip(err)
	}
	gen, err := trafficgen.LiveIn(lab, netlab.Peer)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gen.Close() })
	return gen
}

// wantDemux is how this kernel's NICs demultiplex several vifs, as the
// status page and the banner say it: "tag", or "mac" where the verifier
// refuses the tag's helper (bpf.Steering.MetaHelper).
func wantDemux(t testing.TB) string {
	t.Helper()
	ok, err := bpf.MetaHelperAvailable()
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		return "tag"
	}
	return "mac"
}

func newSink(t testing.TB, lab *netlab.Lab) *trafficgen.Sink {
	t.Helper()
	s, err := trafficgen.SinkIn(lab, netlab.Peer, trafficgen.SinkDrop)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// waitFor polls cond until it holds or a generous deadline passes; the
// deadline bounds a failing test, it asserts nothing about speed.
func waitFor(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// toVif is a 64-byte UDP frame from the peer to the vif's MAC.
func toVif(lab *netlab.Lab) []byte {
	return trafficgen.UDPFrame(mustMAC(testMAC), lab.MAC[netlab.Peer], demoPeerIP, demoVifIP, 9, 9, 64)
}

// The paced rate: one every 20 µs, which this 2-core VM keeps up with even
// under the race detector, so every frame sent must be counted.
const testFrames, testPPS = 20000, 50000

// rxdrop counts every frame the generator sent it, in its JSON summary and
// in its metrics, and a cancelled context (Ctrl-C) ends it cleanly.
func TestIntegrationRxdropAndMetrics(t *testing.T) {
	labtest.RequireRoot(t)
	lab := labtest.NewT(t, netlab.Options{})
	gen := newSource(t, lab)
	r := startCmd(t, "rxdrop", "--netns", lab.NS[netlab.Host], "--link", "xdp:"+lab.Link[netlab.Host],
		"--mac", testMAC, "--duration", "0", "--json", "--metrics", "127.0.0.1:0")
	r.waitRunning(t)
	url := r.metricsURL(t)
	hostDrops0 := linkDrops(t, lab, netlab.Host).RxDropped
	if sent, err := gen.SendPaced(toVif(lab), testFrames, testPPS); err != nil || sent != testFrames {
		t.Fatalf("generator sent %d of %d: %v", sent, testFrames, err)
	}
	// Every frame sent is received or counted dropped: by the socket
	// (xsk_rx_dropped, e.g. when another process hogs the CPUs and the fill
	// ring runs dry) or by the veth before the program ran. The veth counts
	// failed redirects into the socket among its RX drops too.
	var m string
	var rx, unicast, xskDrop, vethDrop float64
	if !waitFor(func() bool {
		m = scrape(t, url)
		rx, _ = metricValue(m, "virtif_rx_packets_total")
		unicast, _ = metricValue(m, "virtif_xdp_rule_frames_total", `rule="unicast"`)
		xskDrop, _ = metricValue(m, "virtif_xsk_rx_dropped_total")
		vethDrop = float64(linkDrops(t, lab, netlab.Host).RxDropped-hostDrops0) - xskDrop
		return unicast == rx+xskDrop && unicast+vethDrop == testFrames
	}) {
		t.Fatalf("sent %d: veth dropped %v, program steered %v, socket dropped %v, vif received %v\n%s",
			testFrames, vethDrop, unicast, xskDrop, rx, m)
	}
	if rx == 0 {
		t.Fatal("nothing received")
	}
	for _, want := range []struct {
		name   string
		labels []string
		value  float64
	}{
		{"virtif_rx_packets_total", []string{`vif="vif0"`, `link="xdp:` + lab.Link[netlab.Host] + `,rxwait=spin"`}, rx}, // the link that runs: rxdrop spins by default
		{"virtif_rx_bytes_total", nil, rx * 64},
		{"virtif_xdp_rule_frames_total", []string{`rule="arp"`}, 0},
		{"virtif_rx_dropped_total", []string{`reason="filtered"`}, 0},
		{"virtif_tx_packets_total", nil, 0},
		{"virtif_info", []string{`attach="native"`, `bind="copy"`, `mode="rxdrop"`, `mac="` + testMAC + `"`}, 1},
	} {
		if v, ok := metricValue(m, want.name, want.labels...); !ok || v != want.value {
			t.Errorf("metric %s%v = %v (found %v), want %v", want.name, want.labels, v, ok, want.value)
		}
	}
	for _, name := range []string{"virtif_xsk_rx_ring_full_total", "virtif_xsk_rx_fill_ring_empty_total", "virtif_backend_tx_no_frame_total"} {
		if _, ok := metricValue(m, name); !ok {
			t.Errorf("no %s", name)
		}
	}
	if _, ok := metricValue(m, "virtif_xdp_host_frames_total", `rule="pass"`); !ok {
		t.Error("no virtif_xdp_host_frames_total{rule=\"pass\"}")
	}
	r.cancel()
	res := r.wait(t)
	if res.code != exitOK {
		t.Fatalf("rxdrop exit %d:\n%s", res.code, res.stderr)
	}
	s := summaryJSON(t, res)
	if s.Mode != "rxdrop" || s.Packets != uint64(rx) || s.Bytes != s.Packets*64 || s.RXPackets != s.Packets ||
		s.Seconds <= 0 || s.PPS <= 0 || s.Attach != "native" || s.Bind != "copy" {
		t.Fatalf("summary %+v, want %v packets", s, rx)
	}
	if s.Drops["xsk_rx_dropped"] != uint64(xskDrop) || s.Counters["xdp_unicast"] != uint64(unicast) {
		t.Errorf("summary: xsk_rx_dropped %d, xdp_unicast %d; metrics said %v, %v",
			s.Drops["xsk_rx_dropped"], s.Counters["xdp_unicast"], xskDrop, unicast)
	}
	t.Logf("sent %d: received %d, socket dropped %v, veth dropped %v", testFrames, s.Packets, xskDrop, vethDrop)
	if attached, err := xdpAttached(lab); err != nil || attached {
		t.Fatalf("XDP program left on the NIC (attached %v, %v)", attached, err)
	}
}

// l2fwd sends every frame back to the peer, where a sink counts them.
func TestIntegrationL2fwd(t *testing.T) {
	labtest.RequireRoot(t)
	lab := labtest.NewT(t, netlab.Options{})
	gen := newSource(t, lab)
	sink := newSink(t, lab)
	r := startCmd(t, "l2fwd", "--netns", lab.NS[netlab.Host], "--link", "xdp:"+lab.Link[netlab.Host],
		"--mac", testMAC, "--duration", "0", "--json")
	r.waitRunning(t)
	before, _ := sink.Count()
	host0, peer0 := linkDrops(t, lab, netlab.Host), linkDrops(t, lab, netlab.Peer)
	if sent, err := gen.SendPaced(toVif(lab), testFrames, testPPS); err != nil || sent != testFrames {
		t.Fatalf("generator sent %d of %d: %v", sent, testFrames, err)
	}
	// Quiet: the sink stops counting.
	var got uint64
	for last := uint64(1 << 63); ; time.Sleep(200 * time.Millisecond) {
		c, _ := sink.Count()
		if got = c - before; got == last {
			break
		}
		last = got
	}
	r.cancel()
	res := r.wait(t)
	if res.code != exitOK {
		t.Fatalf("l2fwd exit %d:\n%s", res.code, res.stderr)
	}
	s := summaryJSON(t, res)
	host, peer := linkDrops(t, lab, netlab.Host), linkDrops(t, lab, netlab.Peer)
	inDrops := host.RxDropped - host0.RxDropped // before the program, and failed redirects (xsk drops)
	outDrops := host.TxDropped - host0.TxDropped + peer.RxDropped - peer0.RxDropped
	c := s.Counters
	if s.Mode != "l2fwd" || s.RXPackets == 0 || s.Packets != s.TXPackets {
		t.Fatalf("summary %+v", s)
	}
	if c["xdp_unicast"]+inDrops-c["xsk_rx_dropped"] != testFrames || c["xdp_unicast"] != s.RXPackets+c["xsk_rx_dropped"] {
		t.Errorf("sent %d: veth dropped %d (incl. socket drops), program steered %d, socket dropped %d, vif received %d",
			testFrames, inDrops, c["xdp_unicast"], c["xsk_rx_dropped"], s.RXPackets)
	}
	if s.RXPackets != s.TXPackets+c["oerrors"]+c["odrops"]+s.Drops["fwd_skipped"] {
		t.Errorf("received %d, forwarded %d, send errors %d, drops %d, skipped %d", s.RXPackets, s.TXPackets,
			c["oerrors"], c["odrops"], s.Drops["fwd_skipped"])
	}
	if got+outDrops != s.TXPackets {
		t.Errorf("forwarded %d; the peer's sink counted %d and the veth dropped %d", s.TXPackets, got, outDrops)
	}
	t.Logf("sent %d, received %d, forwarded %d, at the peer %d", testFrames, s.RXPackets, s.TXPackets, got)
}

// txonly's count agrees with what reaches the peer, less what the veth
// counts as dropped on the way.
func TestIntegrationTxonly(t *testing.T) {
	labtest.RequireRoot(t)
	lab := labtest.NewT(t, netlab.Options{})
	sink := newSink(t, lab)
	before, _ := sink.Count()
	dropsBefore := vethDrops(t, lab)
	res := runCmd(t, "txonly", "--netns", lab.NS[netlab.Host], "--link", "xdp:"+lab.Link[netlab.Host],
		"--dst", lab.MAC[netlab.Peer].String(), "--duration", "1s", "--size", "128", "--batch", "32", "--json")
	if res.code != exitOK {
		t.Fatalf("txonly exit %d:\n%s", res.code, res.stderr)
	}
	s := summaryJSON(t, res)
	if s.Mode != "txonly" || s.Packets == 0 || s.Bytes != s.Packets*128 || s.TXPackets != s.Packets {
		t.Fatalf("summary %+v", s)
	}
	var arrived, dropped uint64
	balanced := func() bool {
		c, _ := sink.Count()
		arrived, dropped = c-before, vethDrops(t, lab)-dropsBefore
		return arrived+dropped == s.Packets
	}
	if !waitFor(balanced) {
		t.Fatalf("txonly sent %d; the peer's sink counted %d and the veth dropped %d", s.Packets, arrived, dropped)
	}
	t.Logf("txonly: %d frames in %.2fs (%.0f pps), %d arrived, %d dropped by the veth", s.Packets, s.Seconds, s.PPS, arrived, dropped)
}

// vethDrops is what the lab's veth pair dropped from the host to the peer.
func vethDrops(t *testing.T, lab *netlab.Lab) uint64 {
	t.Helper()
	return linkDrops(t, lab, netlab.Host).TxDropped + linkDrops(t, lab, netlab.Peer).RxDropped
}

// linkDrops returns one veth end's statistics.
func linkDrops(t *testing.T, lab *netlab.Lab, side int) netlink.LinkStatistics {
	t.Helper()
	var st netlink.LinkStatistics
	if err := lab.Do(side, func() error {
		l, err := netlink.LinkByIndex(lab.Index[side])
		if err != nil {
			return err
		}
		st = *l.Attrs().Statistics
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return st
}

// capture writes exactly --count frames that tcpdump reads back.
func TestIntegrationCapture(t *testing.T) {
	labtest.RequireRoot(t)
	tcpdump, err := exec.LookPath("tcpdump")
	if err != nil {
		t.Fatal("tcpdump not found: apt-get install tcpdump (make deps)")
	}
	lab := labtest.NewT(t, netlab.Options{})
	gen := newSource(t, lab)
	file := filepath.Join(t.TempDir(), "vif.pcap")
	r := startCmd(t, "capture", "--netns", lab.NS[netlab.Host], "--link", "xdp:"+lab.Link[netlab.Host],
		"--mac", testMAC, "--count", "50", "-w", file)
	r.waitRunning(t)
	f := toVif(lab)
	for i := range 60 {
		trafficgen.SetSeq(f, uint64(i))
		if _, err := gen.SendPaced(f, 1, 1000); err != nil {
			t.Fatal(err)
		}
	}
	res := r.wait(t)
	if res.code != exitOK || !strings.Contains(res.stdout, "captured 50 frames") || !strings.Contains(res.stdout, "; drops: none\n") {
		t.Fatalf("capture exit %d:\n%s%s", res.code, res.stdout, res.stderr)
	}
	out, err := exec.Command(tcpdump, "-nr", file).CombinedOutput()
	if err != nil {
		t.Fatalf("tcpdump -r: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var frames int
	for _, l := range lines {
		if strings.Contains(l, "198.18.0.2.9 > 198.18.0.3.9: UDP") {
			frames++
		}
	}
	if frames != 50 {
		t.Fatalf("tcpdump read %d of our frames, want 50:\n%s", frames, out)
	}
	if attached, err := xdpAttached(lab); err != nil || attached {
		t.Fatalf("XDP program left on the NIC (attached %v, %v)", attached, err)
	}
}

// The NIC deleted under a running rxdrop or run: it ends at once with exit 1
// and an error that says why, instead of running on deaf, and still prints
// its summary, which gives the time it really ran and the reason it stopped.
func TestIntegrationNICDeleted(t *testing.T) {
	labtest.RequireRoot(t)
	stoppedByNIC := func(t *testing.T, s benchSummary) {
		t.Helper()
		if s.Stopped != "nic" || !strings.Contains(s.StopError, "stopped receiving") || s.WallSeconds < 1 {
			t.Errorf("summary: stopped %q (%q) after %.2fs; want nic, the reason, and at least the 1s it ran",
				s.Stopped, s.StopError, s.WallSeconds)
		}
	}
	for _, c := range []struct {
		name    string
		args    []string
		summary func(t *testing.T, res result)
	}{
		{"rxdrop-json", []string{"rxdrop", "--json"}, func(t *testing.T, res result) { stoppedByNIC(t, summaryJSON(t, res)) }},
		{"rxdrop-text", []string{"rxdrop"}, func(t *testing.T, res result) {
			if !regexp.MustCompile(`\n  ran [1-9][0-9.]*s; stopped: NIC failure: vif0 stopped receiving: .+\n`).MatchString(res.stdout) {
				t.Errorf("summary lacks the wall time and the reason:\n%s", res.stdout)
			}
		}},
		{"run", []string{"run", "--addr", "198.18.0.3/24"}, func(t *testing.T, res result) {
			if !strings.Contains(res.stdout, "answered: ping 0,") {
				t.Errorf("no summary:\n%s", res.stdout)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			lab := labtest.NewT(t, netlab.Options{})
			r := startCmd(t, append(c.args, "--netns", lab.NS[netlab.Host], "--link", "xdp:"+lab.Link[netlab.Host], "--duration", "0")...)
			r.waitRunning(t)
			time.Sleep(time.Second) // so the wall time shows it ran
			if out, err := lab.Run(netlab.Host, "ip", "link", "del", lab.Link[netlab.Host]); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			res := r.wait(t)
			if res.code != exitFailure || !strings.Contains(res.stderr, "stopped receiving") {
				t.Fatalf("%s after its NIC went: exit %d, want %d with the reason:\n%s", c.args[0], res.code, exitFailure, res.stderr)
			}
			c.summary(t, res)
			t.Logf("stderr: %s", res.stderr[strings.LastIndex(res.stderr, "virtif-xdp: "):])
		})
	}
}
