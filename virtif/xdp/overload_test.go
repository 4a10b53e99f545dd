//go:build linux

package xdp

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
)

// 5. A frame Send accepted is never dropped by the backend: with a TX ring
// of 64 and a peer far slower than the sender (the kernel stops the veth's
// queue when the peer's ring is full, so the TX ring backs up), every frame
// Output accepted reaches the peer and is counted once in OPackets; the
// others got ENOBUFS at once and are counted in OErrors. (The backend used
// to drop frames that did not fit on the ring after Send had accepted
// them: tx_ring_full_drops.)
func TestIntegrationTXOverload(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	count := slowPeer(t, lab)
	v := newVif(t, lab, nil, ",ring=64,frames=256")
	f := frame(lab, lab.MAC[netlab.Peer], "OVERLOAD", 100) // IPv4: the sink counts these
	const n, batch = 20000, 256
	frames := make([][][]byte, batch)
	for i := range frames {
		frames[i] = [][]byte{f}
	}
	accepted, refused := 0, 0
	for accepted+refused < n {
		k, err := v.ifc.OutputBatch(frames[:min(batch, n-accepted-refused)])
		accepted += k
		if err != nil {
			if !errors.Is(err, unix.ENOBUFS) {
				t.Fatalf("frame %d: %v, want nil or ENOBUFS", accepted+refused, err)
			}
			refused++
		}
	}
	if err := v.b.Flush(); err != nil {
		t.Fatal(err)
	}
	st := v.ifc.Stats()
	if !waitFor(func() bool { return count() >= uint64(accepted) }) {
		t.Fatalf("accepted %d frames, the peer received %d; counters %+v", accepted, count(), st.Backend)
	}
	settle()
	if got := count(); got != uint64(accepted) {
		t.Fatalf("accepted %d frames, the peer received %d", accepted, got)
	}
	st = v.ifc.Stats()
	if st.OPackets != uint64(accepted) || st.OErrors != uint64(refused) || st.ODrops != 0 {
		t.Fatalf("OPackets %d, OErrors %d, ODrops %d; want %d accepted, %d refused", st.OPackets, st.OErrors, st.ODrops, accepted, refused)
	}
	if stat(st, "tx_ring_full")+stat(st, "tx_no_frame") != uint64(refused) {
		t.Fatalf("tx_ring_full %d + tx_no_frame %d, want the %d refused", stat(st, "tx_ring_full"), stat(st, "tx_no_frame"), refused)
	}
	if refused == 0 {
		t.Fatalf("the TX ring never filled (%d frames accepted): nothing was tested", accepted)
	}
	t.Logf("%d frames: %d accepted and received by the peer, %d refused with ENOBUFS", n, accepted, refused)
}

// slowPeer makes lab's peer a receiver far slower than any sender and
// returns its count of frames received. A qdisc on the veth makes the
// kernel stop its queue, rather than drop, when the peer's ring is full; a
// threaded NAPI on the peer runs the slow program apart from the sender.
func slowPeer(t *testing.T, lab *netlab.Lab) func() uint64 {
	t.Helper()
	if out, err := lab.Run(netlab.Host, "tc", "qdisc", "add", "dev", lab.Link[netlab.Host], "root", "pfifo"); err != nil {
		t.Fatalf("tc: %v: %s", err, out)
	}
	var sink *trafficgen.Sink
	err := lab.Do(netlab.Peer, func() (err error) {
		sink, err = trafficgen.NewSlowSink(lab.Index[netlab.Peer], trafficgen.SinkDrop, 200000)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	if out, err := lab.Run(netlab.Host, "ip", "netns", "exec", lab.NS[netlab.Peer], "sh", "-c",
		"echo 1 > /sys/class/net/"+lab.Link[netlab.Peer]+"/threaded"); err != nil {
		t.Fatalf("threaded NAPI: %v: %s", err, out)
	}
	return func() uint64 {
		c, err := sink.Count()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
}

// Frames Flush left on the TX ring when the kernel took nothing for
// drainStall are sent without another Send: the NIC's idle RX goroutine
// kicks them (tx_idle_kicks), also when it spins and so never polls the
// socket (poll(2) on an AF_XDP socket transmits in copy mode; a spinning
// loop never makes that call). They used to wait for the next Send, for ever
// if none came.
func TestIntegrationStrandedTXKicked(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	count := slowPeer(t, lab)
	v := newVif(t, lab, nil, ",ring=64,frames=256,rxwait=spin")
	setDrainOnce(t) // Flush gives up after one kick, as after a stall
	f := frame(lab, lab.MAC[netlab.Peer], "STRANDED", 100)
	// 63 frames, fewer than a Send batch and the ring, so one Flush hands
	// them all to the kernel, which sends a budget of them per kick (32 in
	// copy mode) and, behind the slow peer, fewer.
	frames := make([][][]byte, 63)
	for i := range frames {
		frames[i] = [][]byte{f}
	}
	accepted, stranded := 0, 0
	for try := 0; try < 200 && stranded == 0; try++ {
		k, _ := v.ifc.OutputBatch(frames) // what does not fit is refused, counted
		accepted += k
		if err := v.b.Flush(); err != nil {
			t.Fatal(err)
		}
		stranded = txPending(v.b)
	}
	if stranded == 0 {
		t.Fatalf("Flush never left frames on the TX ring (%d accepted): nothing was tested", accepted)
	}
	if !waitFor(func() bool { return count() >= uint64(accepted) }) {
		t.Fatalf("accepted %d frames (%d left on the ring by Flush), the peer received %d; counters %+v", accepted, stranded, count(), v.ifc.Stats().Backend)
	}
	if k := stat(v.ifc.Stats(), "tx_idle_kicks"); k == 0 || k == ^uint64(0) {
		t.Fatalf("tx_idle_kicks %d: the frames went out, but not by the idle kick", k)
	}
	t.Logf("%d accepted, %d left on the ring by Flush, all received", accepted, stranded)
}
