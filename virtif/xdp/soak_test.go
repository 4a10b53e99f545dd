//go:build linux

package xdp

import (
	"flag"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/virtif-xdp/virtif-xdp/bpf"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
	"github.com/virtif-xdp/virtif-xdp/virtif"
)

// make test runs the default; `go test -run ChurnSoak -soak.cycles 20000
// ./virtif/xdp/` soaks longer.
var soakCycles = flag.Int("soak.cycles", 1000, "create/Up/Output/Close cycles of TestIntegrationChurnSoak")

// soakFrames is what the survivor sends once the churn is over: none of it
// may meet ENOBUFS.
const soakFrames = 10000

// leakState is what a vif's life must leave as it found it.
type leakState struct {
	goroutines int
	fds        int
	entries    bpf.Entries
	txFree     int // free TX frames of the survivor's queue, all completions reaped
}

func takeLeakState(t *testing.T, b *Backend) leakState {
	t.Helper()
	runtime.GC()
	e, err := b.nic.steer.Entries()
	if err != nil {
		t.Fatal(err)
	}
	return leakState{goroutines: runtime.NumGoroutine(), fds: openFDs(t), entries: e, txFree: txFree(b)}
}

// txFree reaps the completions of b's TX queue, waiting for frames in flight
// to come back, and returns how many TX frames are free.
func txFree(b *Backend) int {
	q := b.txq
	var free int
	waitFor(func() bool {
		q.txMu.Lock()
		defer q.txMu.Unlock()
		q.sock.Complete()
		free = q.sock.FreeFrames()
		return q.sock.InFlight() == 0
	})
	return free
}

// The reliability figures of issue 8: vifs created, brought up, sending and
// receiving, and destroyed over and over on a NIC shared with a surviving vif
// that receives paced live-frame traffic and sends all along. Nothing the
// churn does may disturb the survivor or leak: afterwards the survivor sends
// soakFrames frames without ENOBUFS, and goroutines, descriptors, the
// survivor queue's TX frames and the program's map entries are as before.
func TestIntegrationChurnSoak(t *testing.T) {
	cycles := *soakCycles
	lab := labtest.NewT(t, netlab.Options{})
	c, err := virtif.NewCloner(virtif.ClonerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	surv := newVif(t, lab, c, "")
	sc := &seqCounter{seen: map[uint64]int{}}
	surv.ifc.SetInput(sc.input)
	if err := surv.ifc.AddIPv4(vifIP); err != nil {
		t.Fatal(err)
	}
	sink, err := trafficgen.SinkIn(lab, netlab.Peer, trafficgen.SinkDrop)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	gen := sourceIn(t, lab)
	p, err := trafficgen.PacketIn(lab, netlab.Peer)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	toPeer := trafficgen.UDPFrame(lab.MAC[netlab.Peer], surv.ifc.HardwareAddr(), vifIP, peerIP, 9, 9, 64)
	const survSeq = 1 // marks the frames paced to the survivor
	var stolen atomic.Uint64
	group := net.HardwareAddr{0x01, 0x00, 0x5e, 0x00, 0x00, 0x42}
	churn := func(i int) error {
		return lab.Do(netlab.Host, func() error {
			ifc, err := c.Create()
			if err != nil {
				return err
			}
			defer ifc.Close()
			if err := ifc.SetLinkStr("xdp:" + lab.Link[netlab.Host] + netlab.TestLinkOpts()); err != nil {
				return err
			}
			// Answer from inside the RX batch, so that closing races
			// sends whose flush the RX goroutine defers.
			reply := [][]byte{trafficgen.UDPFrame(lab.MAC[netlab.Peer], ifc.HardwareAddr(), vif2IP, peerIP, 9, 9, 64)}
			ifc.SetInput(func(f []byte, _ bool) {
				if seq, _ := trafficgen.Seq(f); seq == survSeq {
					stolen.Add(1)
				}
				_ = ifc.Output(reply)
			})
			if i%10 == 0 {
				if err := ifc.JoinMulticast(group); err != nil {
					return err
				}
				if err := ifc.AddIPv4(vif2IP); err != nil {
					return err
				}
			}
			if err := ifc.Up(); err != nil {
				return err
			}
			for range 3 {
				if err := ifc.Output(reply); err != nil {
					return err
				}
			}
			f := trafficgen.UDPFrame(ifc.HardwareAddr(), lab.MAC[netlab.Peer], peerIP, vif2IP, 9, 9, 64)
			if _, err := p.SendAll(f, 8); err != nil {
				return err
			}
			if i%2 == 0 {
				time.Sleep(100 * time.Microsecond) // let some arrive before the close
			}
			return ifc.Down()
		})
	}
	// One cycle first, so what the first vif on a second slot creates for
	// good (the cloner's map, the runtime's threads) is in the baseline.
	if err := churn(0); err != nil {
		t.Fatal(err)
	}
	base := takeLeakState(t, surv.b)

	// The survivor's load: paced frames in, a steady trickle out.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sentIn, outOK, outErr atomic.Uint64
	var genErr, outFirstErr atomic.Pointer[error]
	toSurv := trafficgen.UDPFrame(surv.ifc.HardwareAddr(), lab.MAC[netlab.Peer], peerIP, vifIP, 9, 9, 64)
	trafficgen.SetSeq(toSurv, survSeq)
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, err := gen.SendPaced(toSurv, 1000, 10000)
			sentIn.Add(uint64(n))
			if err != nil {
				genErr.Store(&err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if err := surv.ifc.Output([][]byte{toPeer}); err != nil {
				outErr.Add(1)
				outFirstErr.CompareAndSwap(nil, &err)
			} else {
				outOK.Add(1)
			}
		}
	}()
	statsBefore := surv.ifc.Stats()
	start := time.Now()
	for i := 1; i <= cycles; i++ {
		if err := churn(i); err != nil {
			close(stop)
			wg.Wait()
			t.Fatalf("cycle %d: %v", i, err)
		}
	}
	churnTime := time.Since(start)
	close(stop)
	wg.Wait()
	if p := genErr.Load(); p != nil {
		t.Fatalf("generator: %v", *p)
	}
	if p := outFirstErr.Load(); p != nil {
		t.Errorf("survivor: %d of %d sends during the churn failed, first: %v", outErr.Load(), outErr.Load()+outOK.Load(), *p)
	}

	// Every frame paced to the survivor reached it, unless the socket it
	// shares with the churned vifs dropped it (counted, NIC-wide: an RX or
	// fill ring that was full or empty); none went elsewhere.
	var recv, sockDrops uint64
	arrived := func() bool {
		st := surv.ifc.Stats()
		sc.mu.Lock()
		recv = uint64(sc.seen[survSeq])
		sc.mu.Unlock()
		sockDrops = stat(st, "xsk_rx_dropped") - stat(statsBefore, "xsk_rx_dropped")
		return recv+stolen.Load()+sockDrops >= sentIn.Load()
	}
	if !waitFor(arrived) {
		t.Errorf("survivor: %d frames sent to it, %d received, %d went to other vifs, %d dropped by the socket: %d lost",
			sentIn.Load(), recv, stolen.Load(), sockDrops, sentIn.Load()-recv-stolen.Load()-sockDrops)
	}
	// No vif gets another's frames: the survivor none of the churned vifs',
	// which its MAC filter would drop (IFiltered), and they none of its.
	if n := stolen.Load(); n != 0 {
		t.Errorf("churned vifs received %d frames steered to the survivor", n)
	}
	if n := surv.ifc.Stats().IFiltered - statsBefore.IFiltered; n != 0 {
		t.Errorf("the survivor was handed %d frames for other MACs", n)
	}

	// The survivor sends soakFrames in batches: no ENOBUFS, and the peer
	// gets every one.
	peerBefore, err := sink.Count()
	if err != nil {
		t.Fatal(err)
	}
	batch := make([][][]byte, 32)
	for i := range batch {
		batch[i] = [][]byte{toPeer}
	}
	for sent := 0; sent < soakFrames; {
		k := min(len(batch), soakFrames-sent)
		n, err := surv.ifc.OutputBatch(batch[:k])
		sent += n
		if err != nil {
			t.Fatalf("survivor after the churn: frame %d of %d: %v", sent, soakFrames, err)
		}
	}
	var peerGot uint64
	if !waitFor(func() bool { peerGot, _ = sink.Count(); return peerGot-peerBefore >= soakFrames }) {
		t.Errorf("peer received %d of the survivor's %d frames", peerGot-peerBefore, soakFrames)
	}

	after := takeLeakState(t, surv.b)
	if !waitFor(func() bool { runtime.GC(); return runtime.NumGoroutine() <= base.goroutines }) {
		buf := make([]byte, 1<<16)
		t.Errorf("goroutines: %d before the churn, %d after\n%s", base.goroutines, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
	}
	if !waitFor(func() bool { return openFDs(t) <= base.fds }) {
		t.Errorf("descriptors: %d before the churn, %d after", base.fds, openFDs(t))
	}
	if after.entries != base.entries {
		t.Errorf("map entries: %+v before the churn, %+v after", base.entries, after.entries)
	}
	if after.txFree != base.txFree {
		t.Errorf("survivor queue's free TX frames: %d before the churn, %d after", base.txFree, after.txFree)
	}
	t.Logf("%d cycles in %v; survivor received %d of %d paced frames (the socket dropped %d NIC-wide), sent %d during the churn (%d failed) and %d after; leaks: goroutines %+d, descriptors %+d, TX frames %+d, map entries %+v -> %+v",
		cycles, churnTime.Round(time.Millisecond), recv, sentIn.Load(), sockDrops, outOK.Load(), outErr.Load(), soakFrames,
		after.goroutines-base.goroutines, after.fds-base.fds, base.txFree-after.txFree, base.entries, after.entries)
}
