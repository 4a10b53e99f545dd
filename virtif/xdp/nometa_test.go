//go:build linux

package xdp

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// waitDemux waits (generously: it only bounds a failing test) until the NIC
// of v demultiplexes by MAC, and returns how long that took.
func waitDemux(t *testing.T, v *testVif, since time.Time) time.Duration {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); v.b.Info().Demux != "mac"; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			st := v.ifc.Stats()
			t.Fatalf("no switch to demultiplexing by MAC after 10 s: Info %+v, xdp_nometa %d, xdp_host_nometa %d",
				v.b.Info(), stat(st, "xdp_nometa"), stat(st, "xdp_host_nometa"))
		}
	}
	return time.Since(since)
}

// exactly checks that v received, of the frames carrying prefix, exactly
// want, byte for byte and in order.
func exactly(t *testing.T, name string, v *testVif, prefix string, want [][]byte) {
	t.Helper()
	if !waitFor(func() bool { got, _ := v.rec.matching([]byte(prefix)); return len(got) >= len(want) }) {
		got, _ := v.rec.matching([]byte(prefix))
		t.Fatalf("%s received %d of its %d frames", name, len(got), len(want))
	}
	settle()
	got, _ := v.rec.matching([]byte(prefix))
	if len(got) != len(want) {
		t.Fatalf("%s received %d frames marked %q, want exactly %d", name, len(got), prefix, len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("%s: frame %d is\n% x\nwant\n% x", name, i, got[i], want[i])
		}
	}
}

// Section 3: on a driver without XDP metadata (simulated), two vifs share
// a NIC. The frames the program cannot tag pass to the host, counted in
// xdp_nometa; the RX side notices and switches the NIC to demultiplexing by
// MAC, after which each vif receives exactly its frames, byte for byte.
// Every frame sent before the switch either reached its own vif or was
// counted.
func TestIntegrationNoMetaTwoVifs(t *testing.T) {
	setNoMeta(t)
	lab := labtest.NewT(t, netlab.Options{})
	v0 := newVif(t, lab, nil, "")
	v1 := newVif(t, lab, v0.c, "")
	vifs := []*testVif{v0, v1}
	if d := v0.b.Info().Demux; d != "tag" {
		t.Fatalf("Demux %q before any frame, want tag", d)
	}
	peer := openRaw(t, lab, netlab.Peer)
	const n = 50
	wave := func(name string) [2][][]byte {
		var sent [2][][]byte
		for i := range n {
			for k, v := range vifs {
				f := frame(lab, v.ifc.HardwareAddr(), fmt.Sprintf("%s%d-%03d", name, k, i), 100)
				peer.send(t, f)
				sent[k] = append(sent[k], f)
			}
		}
		return sent
	}
	start := time.Now()
	wave("PRE")
	took := waitDemux(t, v0, start)
	t.Logf("demultiplexing by MAC %v after the first frames", took)
	settle()
	var nometa [2]uint64
	for k, v := range vifs {
		mine, _ := v.rec.matching([]byte(fmt.Sprintf("PRE%d-", k)))
		theirs, _ := v.rec.matching([]byte(fmt.Sprintf("PRE%d-", 1-k)))
		st := v.ifc.Stats()
		nometa[k] = stat(st, "xdp_nometa")
		t.Logf("vif %d: %d of its frames before the switch received, %d counted in xdp_nometa", k, len(mine), nometa[k])
		if len(theirs) != 0 {
			t.Fatalf("vif %d received %d frames of the other vif", k, len(theirs))
		}
		if uint64(len(mine))+nometa[k] != n {
			t.Fatalf("vif %d: %d received + %d xdp_nometa, want the %d sent", k, len(mine), nometa[k], n)
		}
	}
	if nometa[0]+nometa[1] == 0 {
		t.Fatal("no frame was counted in xdp_nometa")
	}
	if st := v0.ifc.Stats(); stat(st, "xdp_host_nometa") != nometa[0]+nometa[1] {
		t.Fatalf("xdp_host_nometa %d, the vifs' xdp_nometa add up to %d", stat(st, "xdp_host_nometa"), nometa[0]+nometa[1])
	}
	before := v0.ifc.Stats()
	post := wave("POST")
	for k, v := range vifs {
		exactly(t, fmt.Sprint("vif ", k), v, fmt.Sprintf("POST%d-", k), post[k])
		if theirs, _ := v.rec.matching([]byte(fmt.Sprintf("POST%d-", 1-k))); len(theirs) != 0 {
			t.Fatalf("vif %d received %d frames of the other vif", k, len(theirs))
		}
		st := v.ifc.Stats()
		if stat(st, "xdp_nometa") != nometa[k] {
			t.Fatalf("vif %d: xdp_nometa %d after the switch, was %d", k, stat(st, "xdp_nometa"), nometa[k])
		}
		if st.IFiltered != 0 {
			t.Fatalf("vif %d got %d frames for another MAC", k, st.IFiltered)
		}
		if i := v.b.Info(); i.Demux != "mac" {
			t.Fatalf("vif %d: Demux %q", k, i.Demux)
		}
	}
	after := v0.ifc.Stats()
	if d := stat(after, "rx_demux_mac") - stat(before, "rx_demux_mac"); d != 2*n {
		t.Fatalf("rx_demux_mac moved by %d for the %d frames after the switch", d, 2*n)
	}
	if stat(after, "rx_demux_tag") != 0 || stat(after, "rx_untagged") != 0 || stat(after, "rx_unclaimed") != 0 {
		t.Fatalf("rx_demux_tag %d, rx_untagged %d, rx_unclaimed %d; want 0", stat(after, "rx_demux_tag"), stat(after, "rx_untagged"), stat(after, "rx_unclaimed"))
	}
	// A vif alone again needs no demultiplexing; the NIC stays in MAC mode.
	if err := v1.ifc.Close(); err != nil {
		t.Fatal(err)
	}
	solo := wave("SOLO")
	exactly(t, "vif 0 alone", v0, "SOLO0-", solo[0])
	if st := v0.ifc.Stats(); stat(st, "rx_demux_solo") < n || v0.b.Info().Demux != "mac" {
		t.Fatalf("alone: rx_demux_solo %d, Demux %q", stat(st, "rx_demux_solo"), v0.b.Info().Demux)
	}
}

// Section 3 with every rule: on a driver without XDP metadata (simulated),
// three vifs — one joined a multicast group, one registered an IPv4 address
// for ARP, one promiscuous — each receive exactly what the program's rules
// give them, found by MAC in user space: unicast to each, the group to the
// first, ARP requests for the address to the second (even though the third
// is promiscuous), and frames for other MACs, other ARP requests and
// broadcast to the promiscuous one.
func TestIntegrationNoMetaRules(t *testing.T) {
	setNoMeta(t)
	lab := labtest.NewT(t, netlab.Options{})
	v0 := newVif(t, lab, nil, "")
	v1 := newVif(t, lab, v0.c, "")
	v2 := newVif(t, lab, v0.c, "")
	vifs := []*testVif{v0, v1, v2}
	group := net.HardwareAddr{0x01, 0x00, 0x5e, 0x12, 0x34, 0x56}
	other := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	if err := v0.ifc.JoinMulticast(group); err != nil {
		t.Fatal(err)
	}
	if err := v1.ifc.AddIPv4(vif2IP); err != nil {
		t.Fatal(err)
	}
	if err := v2.ifc.SetPromisc(true); err != nil {
		t.Fatal(err)
	}
	peer := openRaw(t, lab, netlab.Peer)
	start := time.Now()
	peer.send(t, frame(lab, v1.ifc.HardwareAddr(), "TRIGGER", 100))
	t.Logf("demultiplexing by MAC %v after the first frame", waitDemux(t, v1, start))
	if st := v1.ifc.Stats(); stat(st, "xdp_nometa") == 0 {
		// It may have been received, had the switch come first; it did not.
		if got, _ := v1.rec.matching([]byte("TRIGGER")); len(got) != 1 {
			t.Fatal("the first frame was neither counted in xdp_nometa nor received")
		}
	}
	arpFor := func(ip netip.Addr, marker string) []byte {
		f := arpRequest(lab, ip)
		copy(f[42:], marker) // in the padding
		return f
	}
	var want [3][][]byte
	send := func(k int, f []byte) {
		peer.send(t, f)
		want[k] = append(want[k], f)
	}
	const n = 20
	before := v0.ifc.Stats()
	for i := range n {
		for k, v := range vifs {
			send(k, frame(lab, v.ifc.HardwareAddr(), fmt.Sprintf("NM3-U%d-%02d", k, i), 100))
		}
		send(0, frame(lab, group, fmt.Sprintf("NM3-G-%02d", i), 100))
		send(1, arpFor(vif2IP, fmt.Sprintf("NM3-A-%02d", i)))
		send(2, arpFor(netip.MustParseAddr("198.18.0.9"), fmt.Sprintf("NM3-a-%02d", i)))
		send(2, frame(lab, other, fmt.Sprintf("NM3-O-%02d", i), 100))
		send(2, frame(lab, bcast, fmt.Sprintf("NM3-B-%02d", i), 100))
	}
	total := 0
	for k, v := range vifs {
		exactly(t, fmt.Sprint("vif ", k), v, "NM3-", want[k])
		total += len(want[k])
		if st := v.ifc.Stats(); st.IFiltered != 0 {
			t.Fatalf("vif %d got %d frames not for it", k, st.IFiltered)
		}
	}
	after := v0.ifc.Stats()
	// The peer's kernel may send its own frames (IPv6 neighbour discovery)
	// to the promiscuous vif meanwhile: at least ours.
	if d := stat(after, "rx_demux_mac") - stat(before, "rx_demux_mac"); d < uint64(total) {
		t.Fatalf("rx_demux_mac moved by %d for the %d frames", d, total)
	}
	if stat(after, "rx_demux_tag") != 0 || stat(after, "rx_unclaimed") != 0 {
		t.Fatalf("rx_demux_tag %d, rx_unclaimed %d; want 0", stat(after, "rx_demux_tag"), stat(after, "rx_unclaimed"))
	}
}

// Section 3, the switch itself: frames already on the RX ring with their
// tag when the NIC switches to demultiplexing by MAC go by that tag, the
// frames after it by MAC, and none reaches another vif.
func TestIntegrationNoMetaSwitchWithTaggedFrames(t *testing.T) {
	requireMetaHelper(t)
	lab := labtest.NewT(t, netlab.Options{})
	l := &eraLab{t: t, lab: lab, c: newCloner(t), peer: openRaw(t, lab, netlab.Peer), got: map[string]int{}, vifs: map[string]*testVif{}}
	defer l.release() // before the vifs close (their t.Cleanup)
	a := l.join("A")
	b := l.join("B")
	before, beforeB := a.ifc.Stats(), b.ifc.Stats()
	l.hold(a, "A", 0) // A's RX goroutine stops in the handler
	l.send(a, 40, "TAGGED-A")
	l.send(b, 40, "TAGGED-B")
	// On the RX ring, tagged, before the switch: the program has steered
	// them all (on a slow NIC, virtio-net under TCG, they arrive a while
	// after the peer sent them).
	if !waitFor(func() bool {
		return stat(a.ifc.Stats(), "xdp_unicast")-stat(before, "xdp_unicast") >= 41 &&
			stat(b.ifc.Stats(), "xdp_unicast")-stat(beforeB, "xdp_unicast") >= 40
	}) {
		t.Fatalf("the program steered %d frames to A (want 41), %d to B (want 40)",
			stat(a.ifc.Stats(), "xdp_unicast")-stat(before, "xdp_unicast"), stat(b.ifc.Stats(), "xdp_unicast")-stat(beforeB, "xdp_unicast"))
	}
	a.b.nic.demuxByMAC() // what the RX side does once it sees xdp_host_nometa move
	if a.b.Info().Demux != "mac" || a.b.nic.tagging.Load() {
		t.Fatalf("after the switch: Demux %q, tagging %v", a.b.Info().Demux, a.b.nic.tagging.Load())
	}
	l.holds[0].Store(false)
	l.send(a, 20, "BYMAC-A")
	l.send(b, 20, "BYMAC-B")
	if !waitFor(func() bool { return l.count("A") == 61 && l.count("B") == 60 }) {
		t.Fatalf("received A %d (want 61), B %d (want 60)", l.count("A"), l.count("B"))
	}
	settle()
	l.mu.Lock()
	wrong := l.wrong
	l.mu.Unlock()
	if len(wrong) > 0 {
		t.Fatalf("%d frames reached the wrong vif, e.g. %s", len(wrong), wrong[0])
	}
	after := a.ifc.Stats()
	// By tag: the held frame (counted when its batch ended) and the 80
	// that waited behind it.
	if d := stat(after, "rx_demux_tag") - stat(before, "rx_demux_tag"); d != 81 {
		t.Fatalf("rx_demux_tag moved by %d, want 81", d)
	}
	if d := stat(after, "rx_demux_mac") - stat(before, "rx_demux_mac"); d != 40 {
		t.Fatalf("rx_demux_mac moved by %d, want 40", d)
	}
	for name, v := range l.vifs {
		if st := v.ifc.Stats(); st.IFiltered != 0 || stat(st, "rx_untagged")+stat(st, "rx_unclaimed") != 0 {
			t.Fatalf("%s: IFiltered %d, rx_untagged %d, rx_unclaimed %d", name, st.IFiltered, stat(st, "rx_untagged"), stat(st, "rx_unclaimed"))
		}
	}
}

// On a kernel whose verifier refuses bpf_xdp_adjust_meta (simulated here;
// bpf.TestIntegrationLoadWithoutMetaHelper plays the refusal itself) the
// program can never tag, so a NIC demultiplexes by MAC from the start: two
// vifs each receive exactly their frames, none passes to the host as
// xdp_nometa on the way, and all are found by MAC.
func TestIntegrationNoMetaHelperMACFromStart(t *testing.T) {
	setNoMetaHelper(t)
	lab := labtest.NewT(t, netlab.Options{})
	v0 := newVif(t, lab, nil, "")
	v1 := newVif(t, lab, v0.c, "")
	if d := v0.b.Info().Demux; d != "mac" {
		t.Fatalf("Demux %q before any frame, want mac", d)
	}
	peer := openRaw(t, lab, netlab.Peer)
	before := v0.ifc.Stats()
	const n = 50
	var sent [2][][]byte
	for i := range n {
		for k, v := range []*testVif{v0, v1} {
			f := frame(lab, v.ifc.HardwareAddr(), fmt.Sprintf("MAC%d-%03d", k, i), 100)
			peer.send(t, f)
			sent[k] = append(sent[k], f)
		}
	}
	for k, v := range []*testVif{v0, v1} {
		exactly(t, fmt.Sprint("vif ", k), v, fmt.Sprintf("MAC%d-", k), sent[k])
		if theirs, _ := v.rec.matching([]byte(fmt.Sprintf("MAC%d-", 1-k))); len(theirs) != 0 {
			t.Fatalf("vif %d received %d frames of the other vif", k, len(theirs))
		}
	}
	after := v0.ifc.Stats()
	if d := stat(after, "rx_demux_mac") - stat(before, "rx_demux_mac"); d != 2*n {
		t.Fatalf("rx_demux_mac moved by %d for %d frames", d, 2*n)
	}
	if stat(after, "xdp_host_nometa") != 0 || stat(after, "rx_demux_tag") != 0 {
		t.Fatalf("xdp_host_nometa %d, rx_demux_tag %d; want 0", stat(after, "xdp_host_nometa"), stat(after, "rx_demux_tag"))
	}
}

// In MAC mode the program never tags, so a vif joining a NIC and leaving
// it again costs one RCU fence (for the departed vif's frames in flight),
// not three: the fences of a change of tagging are left out where tagging
// does not change. Each is an RCU grace period, about 10 ms on some
// kernels; the churn soak took three times as long with them.
func TestIntegrationMACModeChurnFences(t *testing.T) {
	setNoMetaHelper(t)
	lab := labtest.NewT(t, netlab.Options{})
	v0 := newVif(t, lab, nil, "")
	before := fences.Load()
	v1 := newVif(t, lab, v0.c, "")
	if err := v1.ifc.Close(); err != nil {
		t.Fatal(err)
	}
	if n := fences.Load() - before; n != 1 {
		t.Fatalf("a vif joining and leaving in MAC mode took %d fences, want 1", n)
	}
}
