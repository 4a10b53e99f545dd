//go:build linux

package xdp

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/xsk"
)

// jumboFrame is a frame of size bytes from the peer to dst, its payload a
// pattern that differs at every offset of a UMEM frame, marker at the end.
func jumboFrame(lab *netlab.Lab, dst []byte, marker string, size int) []byte {
	f := frame(lab, dst, marker, size)
	for i := 42; i < size-len(marker); i++ {
		f[i] = byte(i ^ i>>8)
	}
	return f
}

// With multi-buffer (sg=auto, the default) on a veth of MTU 9000 the vif's
// MTU goes up to the NIC's, and 9000-byte frames travel both ways byte for
// byte, as descriptor chains: from the peer's AF_PACKET to the vif, and
// from the vif to the peer. Several vifs share the NIC so the tagged path
// carries chains too.
func TestIntegrationJumboBothWays(t *testing.T) {
	labtest.RequireKernel(t, 6, 6, "multi-buffer AF_XDP, XDP_USE_SG")
	labtest.RequireVethLab(t, "a veth pair of MTU 9000")
	lab := labtest.NewT(t, netlab.Options{MTU: 9000})
	c := newCloner(t)
	v := newVif(t, lab, c, "")
	info := v.b.Info()
	if !info.SG || info.MaxMTU != 9000 || !strings.Contains(info.MTULimit, "NIC's MTU") {
		t.Fatalf("Info: SG %v, MaxMTU %d (%s), want multi-buffer up to the NIC's 9000", info.SG, info.MaxMTU, info.MTULimit)
	}
	if err := v.ifc.SetMTU(9000); err != nil {
		t.Fatal(err)
	}
	if err := v.ifc.SetMTU(9001); !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "NIC's MTU") {
		t.Fatalf("SetMTU above the NIC's MTU: %v", err)
	}
	raw := openRaw(t, lab, netlab.Peer)
	var sent [][]byte
	for round, two := range []bool{false, true} {
		if two {
			newVif(t, lab, c, "") // tagging on: the general demux path
		}
		sizes := []int{60, 1792 + 14, 1793 + 14, 3600, 9014}
		sent = sent[:0]
		for i, size := range sizes {
			f := jumboFrame(lab, v.ifc.HardwareAddr(), "JUMBO"+string(rune('a'+round))+string(rune('0'+i)), size)
			sent = append(sent, f)
			raw.send(t, f)
		}
		for i, f := range sent {
			marker := f[len(f)-7:]
			if !waitFor(func() bool { got, _ := v.rec.matching(marker); return len(got) > 0 }) {
				t.Fatalf("round %d: %d-byte frame never reached the vif (stats %v)", round, sizes[i], v.ifc.Stats().Backend)
			}
			got, _ := v.rec.matching(marker)
			if len(got) != 1 || !bytes.Equal(got[0], f) {
				t.Fatalf("round %d: %d-byte frame: received %d frames, not byte for byte", round, sizes[i], len(got))
			}
		}
	}
	st := v.ifc.Stats()
	// The second round's jumbo frames were tagged (bpf_xdp_adjust_meta on
	// a multi-buffer frame) and found their vif by the tag; on a kernel
	// that refuses the helper, found by MAC.
	demux := "rx_demux_tag"
	if !metaHelper(t) {
		demux = "rx_demux_mac"
	}
	if stat(st, demux) < uint64(len(sent)) || stat(st, "xdp_nometa") != 0 {
		t.Errorf("%s %d, xdp_nometa %d", demux, stat(st, demux), stat(st, "xdp_nometa"))
	}
	if stat(st, "rx_chains") < 6 || stat(st, "rx_chain_too_long") != 0 || stat(st, "rx_chain_truncated") != 0 {
		t.Errorf("rx_chains %d, too long %d, truncated %d", stat(st, "rx_chains"), stat(st, "rx_chain_too_long"), stat(st, "rx_chain_truncated"))
	}

	// vif -> peer: one frame of 9014 bytes in three segments.
	out := jumboFrame(lab, lab.MAC[netlab.Peer], "JUMBOTX", 9014)
	if err := v.ifc.Output([][]byte{out[:14], out[14:5000], out[5000:]}); err != nil {
		t.Fatal(err)
	}
	got := raw.collect([]byte("JUMBOTX"), 1, 5*time.Second)
	if len(got) != 1 || !bytes.Equal(got[0], out) {
		t.Fatalf("peer received %d frames, not the 9014-byte frame byte for byte", len(got))
	}
	// Many, in batches, mixed with small ones.
	var batch [][][]byte
	for i := range 100 {
		size := 9014
		if i%3 == 1 {
			size = 100
		}
		batch = append(batch, [][]byte{jumboFrame(lab, lab.MAC[netlab.Peer], "JTX"+string(rune('A'+i/10))+string(rune('0'+i%10)), size)})
	}
	if n, err := v.ifc.OutputBatch(batch); n != len(batch) || err != nil {
		t.Fatalf("OutputBatch = %d, %v", n, err)
	}
	if got := raw.collect([]byte("JTX"), len(batch), 5*time.Second); len(got) != len(batch) {
		t.Fatalf("peer received %d of %d frames", len(got), len(batch))
	} else {
		for i := range got {
			if !bytes.Equal(got[i], batch[i][0]) {
				t.Fatalf("frame %d differs", i)
			}
		}
	}
	if st := v.ifc.Stats(); stat(st, "tx_chains") != 1+67 || stat(st, "xsk_tx_invalid_descs") != 0 {
		t.Errorf("tx_chains %d, want 68; xsk_tx_invalid_descs %d", stat(st, "tx_chains"), stat(st, "xsk_tx_invalid_descs"))
	}
}

// sg=off keeps the single-buffer limit and says so: MaxMTU is one UMEM
// frame's, SetMTU above it names the reason, and a 9000-byte frame from the
// peer is dropped by the kernel and counted.
func TestIntegrationJumboSGOff(t *testing.T) {
	labtest.RequireVethLab(t, "a veth pair of MTU 9000")
	lab := labtest.NewT(t, netlab.Options{MTU: 9000})
	v := newVif(t, lab, nil, ",sg=off")
	info := v.b.Info()
	if info.SG || info.MaxMTU != 2048-256-18 || !strings.Contains(info.MTULimit, "sg=off") {
		t.Fatalf("Info: SG %v, MaxMTU %d (%s)", info.SG, info.MaxMTU, info.MTULimit)
	}
	err := v.ifc.SetMTU(9000)
	if !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "multi-buffer is off: sg=off") {
		t.Fatalf("SetMTU(9000) without multi-buffer: %v", err)
	}
	if err := v.ifc.SetMTU(info.MaxMTU); err != nil {
		t.Fatal(err)
	}
	raw := openRaw(t, lab, netlab.Peer)
	raw.send(t, jumboFrame(lab, v.ifc.HardwareAddr(), "BIG", 9014))
	if !waitFor(func() bool { return stat(v.ifc.Stats(), "xsk_rx_dropped") == 1 }) {
		t.Fatalf("xsk_rx_dropped %d, want the jumbo frame counted", stat(v.ifc.Stats(), "xsk_rx_dropped"))
	}
	small := jumboFrame(lab, v.ifc.HardwareAddr(), "SMALL", 1500)
	raw.send(t, small)
	if !waitFor(func() bool { got, _ := v.rec.matching([]byte("SMALL")); return len(got) == 1 }) {
		t.Fatal("the frame after the dropped one did not arrive")
	}
	if got, _ := v.rec.matching([]byte("BIG")); len(got) != 0 {
		t.Fatal("a frame longer than a UMEM frame reached a single-buffer vif")
	}
	big := jumboFrame(lab, lab.MAC[netlab.Peer], "BIGTX", 2100)
	if err := v.b.Send([][]byte{big}); !errors.Is(err, unix.EMSGSIZE) {
		t.Fatalf("Send of a 2100-byte frame without multi-buffer: %v, want EMSGSIZE", err)
	}
}

// A frame in more descriptors than maxChain (a 40000-byte frame on a veth of
// MTU 40000: 23 of 1792 bytes) is dropped and counted, no panic, and the
// frames after it arrive; Send refuses a frame longer than maxChain UMEM
// frames (EMSGSIZE).
func TestIntegrationJumboChainTooLong(t *testing.T) {
	labtest.RequireKernel(t, 6, 6, "multi-buffer AF_XDP, XDP_USE_SG")
	labtest.RequireVethLab(t, "a veth pair of MTU 40000")
	lab := labtest.NewT(t, netlab.Options{MTU: 40000})
	v := newVif(t, lab, nil, "")
	if info := v.b.Info(); !info.SG || info.MaxMTU != maxChain*1792-18 || !strings.Contains(info.MTULimit, "chain of 18") {
		t.Fatalf("Info: SG %v, MaxMTU %d (%s)", info.SG, info.MaxMTU, info.MTULimit)
	}
	raw := openRaw(t, lab, netlab.Peer)
	raw.send(t, jumboFrame(lab, v.ifc.HardwareAddr(), "HUGE", 40014))
	if !waitFor(func() bool { return stat(v.ifc.Stats(), "rx_chain_too_long") == 1 }) {
		t.Fatalf("rx_chain_too_long %d after a 23-descriptor frame", stat(v.ifc.Stats(), "rx_chain_too_long"))
	}
	f := jumboFrame(lab, v.ifc.HardwareAddr(), "AFTER", 9014)
	raw.send(t, f)
	if !waitFor(func() bool { got, _ := v.rec.matching([]byte("AFTER")); return len(got) == 1 }) {
		t.Fatal("the frame after the dropped chain did not arrive")
	}
	if got, _ := v.rec.matching([]byte("HUGE")); len(got) != 0 {
		t.Fatal("the over-long chain was delivered")
	}
	huge := jumboFrame(lab, lab.MAC[netlab.Peer], "HUGETX", maxChain*2048+1)
	if err := v.b.Send([][]byte{huge}); !errors.Is(err, unix.EMSGSIZE) || stat(v.ifc.Stats(), "tx_too_big") != 1 {
		t.Fatalf("Send of a frame longer than %d UMEM frames: %v", maxChain, err)
	}
}

// Chains the kernel does not make — cut off at the ring's end, longer than
// a batch — are dropped and counted by the RX path, and the rest of a chain
// that went on past its batch is skipped in the next one, not delivered as
// a frame. Played through demux on a queue of its own, on the vif's socket
// (the descriptors point into its UMEM).
func TestIntegrationJumboBadChains(t *testing.T) {
	labtest.RequireKernel(t, 6, 6, "multi-buffer AF_XDP, XDP_USE_SG")
	labtest.RequireVethLab(t, "a veth pair of MTU 9000")
	lab := labtest.NewT(t, netlab.Options{MTU: 9000})
	v := newVif(t, lab, nil, "")
	n := v.b.nic
	q := &queue{sock: n.queues[0].sock, gather: make([]byte, 0, maxChain*2048)}
	e := &era{owner: v.b}
	d := func(i int, more bool) xsk.Desc {
		x := xsk.Desc{Addr: uint64(i)*2048 + 256, Len: 100}
		if more {
			x.Options = xsk.PktContd
		}
		return x
	}
	delivered := func() uint64 { return v.b.rxFrames[0].n.Load() }
	base := delivered()
	// Cut off at the ring's end: the batch ends in a chain of 2.
	n.demux(q, e, []xsk.Desc{d(0, false), d(1, true), d(2, true)}, 0)
	if q.truncated.n.Load() != 1 || !q.skipRest || delivered()-base != 1 {
		t.Fatalf("cut chain: truncated %d, skipRest %v, delivered %d", q.truncated.n.Load(), q.skipRest, delivered()-base)
	}
	// Its rest opens the next batch: skipped; the frame after it counts.
	n.demux(q, e, []xsk.Desc{d(3, true), d(4, false), d(5, false), d(6, true), d(7, false)}, 3)
	if q.skipRest || delivered()-base != 3 || q.chains.n.Load() != 1 {
		t.Fatalf("after the cut chain: skipRest %v, delivered %d, chains %d", q.skipRest, delivered()-base, q.chains.n.Load())
	}
	// Whole but longer than maxChain.
	long := make([]xsk.Desc, maxChain+1)
	for i := range long {
		long[i] = d(i, i < len(long)-1)
	}
	n.demux(q, e, long, 8)
	// Longer than the batch: the batch is one incomplete chain, and its
	// rest takes up the whole next batch and part of the one after.
	for i := range long {
		long[i] = d(i, true)
	}
	n.demux(q, e, long, 27)
	n.demux(q, e, long[:4], 46)
	n.demux(q, e, []xsk.Desc{d(0, true), d(1, false), d(2, false)}, 50)
	if q.tooLong.n.Load() != 2 || q.truncated.n.Load() != 1 || q.skipRest || delivered()-base != 4 {
		t.Fatalf("too long %d, truncated %d, skipRest %v, delivered %d", q.tooLong.n.Load(), q.truncated.n.Load(), q.skipRest, delivered()-base)
	}
}
