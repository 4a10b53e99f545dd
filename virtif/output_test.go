package virtif

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var bcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// split cuts frame into n segments (the last takes the rest), inserting an
// empty segment after every one when empties is set.
func split(frame []byte, n int, empties bool) [][]byte {
	var segs [][]byte
	per := len(frame) / n
	for k := range n {
		end := (k + 1) * per
		if k == n-1 {
			end = len(frame)
		}
		segs = append(segs, frame[k*per:end])
		if empties {
			segs = append(segs, nil, []byte{})
		}
	}
	return segs
}

// Mirrors virtif_start: empty segments skipped, up to LB_SH segments per
// VIFHYPER_SEND, more coalesced instead of panic("lazy bum"), bpf_mtap and
// if_opackets on every frame.
func TestOutput(t *testing.T) {
	frame := frameTo(bcast, 1000)
	for _, tc := range []struct {
		name      string
		segs      [][]byte
		want      unix.Errno
		nsegs     int // segments the backend gets
		coalesced bool
	}{
		{"one segment", [][]byte{frame}, 0, 1, false},
		{"8 segments", split(frame, 8, false), 0, 8, false},
		{"32 segments", split(frame, 32, false), 0, 32, false},
		{"32 segments and empties", split(frame, 32, true), 0, 32, false},
		{"33 segments", split(frame, 33, false), 0, 32, true},
		{"100 segments and empties", split(frame, 100, true), 0, 32, true},
		{"1000 one-byte segments", split(frame, 1000, false), 0, 32, true},
		{"no segments", nil, unix.EINVAL, 0, false},
		{"only empty segments", [][]byte{{}, nil, {}}, unix.EINVAL, 0, false},
		{"longer than MTU+18", [][]byte{make([]byte, 1519)}, unix.EMSGSIZE, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ifp, b := newRec(t, "", true)
			var tapped [][]byte
			_ = ifp.AddTap(tapFunc(func(f []byte, d Direction) {
				if d == Out {
					tapped = append(tapped, bytes.Clone(f))
				}
			}))
			err := ifp.Output(tc.segs)
			wantErrno(t, "Output", err, tc.want)
			st := ifp.Stats()
			if tc.want != 0 {
				if len(b.frames) != 0 || st.OErrors != 1 || st.OPackets != 0 || len(tapped) != 0 {
					t.Errorf("failed frame reached backend (%d), taps (%d) or counted %+v", len(b.frames), len(tapped), st)
				}
				return
			}
			if len(b.frames) != 1 || !bytes.Equal(b.frames[0], frame) {
				t.Fatalf("backend got %d frames, first differs from what was sent", len(b.frames))
			}
			if b.nsegs[0] != tc.nsegs {
				t.Errorf("backend got %d segments, want %d", b.nsegs[0], tc.nsegs)
			}
			if b.flagsAt[0]&FlagOActive == 0 || ifp.Flags()&FlagOActive != 0 {
				t.Errorf("OACTIVE %v during send, %v after; want set, then cleared", b.flagsAt[0], ifp.Flags())
			}
			if len(tapped) != 1 || !bytes.Equal(tapped[0], frame) {
				t.Errorf("tap saw %d frames", len(tapped))
			}
			want := Stats{OPackets: 1, OBytes: 1000, OMcasts: 1, Backend: st.Backend}
			if tc.coalesced {
				want.Coalesced = 1
			}
			if fmt.Sprint(st) != fmt.Sprint(want) {
				t.Errorf("stats %+v, want %+v", st, want)
			}
			if b.flushes != 1 {
				t.Errorf("%d flushes, want 1", b.flushes)
			}
		})
	}
}

// Unicast frames do not count as multicast; oversized frames pass after a
// larger MTU; a backend error is an output error with its errno.
func TestOutputCounters(t *testing.T) {
	ifp, b := newRec(t, "", true)
	uni := frameTo(net.HardwareAddr{2, 1, 2, 3, 4, 5}, 100)
	if err := ifp.Output([][]byte{uni[:10], uni[10:]}); err != nil {
		t.Fatal(err)
	}
	_ = ifp.SetMTU(3000)
	if err := ifp.Output([][]byte{make([]byte, 3018)}); err != nil {
		t.Errorf("3018-byte frame with MTU 3000: %v", err)
	}
	b.sendErr = unix.ENOBUFS
	wantErrno(t, "backend error", ifp.Output([][]byte{uni}), unix.ENOBUFS)
	_ = ifp.Down()
	wantErrno(t, "Output while down", ifp.Output([][]byte{uni}), unix.ENETDOWN)
	st := ifp.Stats()
	if st.OPackets != 2 || st.OBytes != 3118 || st.OMcasts != 0 || st.OErrors != 1 || st.ODrops != 1 {
		t.Errorf("stats %+v", st)
	}
	if len(st.Backend) != 1 || st.Backend[0] != (Stat{"rec_sends", 3}) {
		t.Errorf("backend stats %v", st.Backend)
	}
}

// OutputBatch runs virtif_start over many frames with one Flush.
func TestOutputBatch(t *testing.T) {
	ifp, b := newRec(t, "", true)
	f := frameTo(bcast, 60)
	frames := [][][]byte{{f}, {f[:14], f[14:]}, {f}}
	n, err := ifp.OutputBatch(frames)
	if n != 3 || err != nil || len(b.frames) != 3 || b.flushes != 1 {
		t.Errorf("OutputBatch = %d, %v; backend %d frames, %d flushes; want 3, nil, 3, 1", n, err, len(b.frames), b.flushes)
	}
	// A bad frame stops the batch: frames before it sent, it counted, the
	// rest neither sent nor counted.
	n, err = ifp.OutputBatch([][][]byte{{f}, {}, {f}})
	wantErrno(t, "batch with empty frame", err, unix.EINVAL)
	if n != 1 || len(b.frames) != 4 || b.flushes != 2 {
		t.Errorf("OutputBatch = %d; backend %d frames, %d flushes; want 1, 4, 2", n, len(b.frames), b.flushes)
	}
	st := ifp.Stats()
	if st.OPackets != 4 || st.OErrors != 1 {
		t.Errorf("stats %+v", st)
	}
	if n, err := ifp.OutputBatch(nil); n != 0 || err != nil {
		t.Errorf("empty batch: %d, %v", n, err)
	}
	// Batches larger than the send queue go out in chunks, not dropped.
	big := make([][][]byte, 1000)
	for k := range big {
		big[k] = [][]byte{f}
	}
	if n, err := ifp.OutputBatch(big); n != 1000 || err != nil {
		t.Errorf("1000-frame batch: %d, %v", n, err)
	}
}

// The bounded send queue (if_snd with IFQ_MAXLEN): callers beyond
// SendQueueLen are refused with ENOBUFS and counted as drops.
func TestSendQueueFull(t *testing.T) {
	c := newCloner(t, ClonerConfig{SendQueueLen: 2})
	ifp, _ := c.Create()
	_ = ifp.SetLinkStr("rec:q")
	b := ifp.Backend().(*recBackend)
	b.entered, b.block = make(chan bool), make(chan bool)
	_ = ifp.Up()
	f := [][]byte{frameTo(bcast, 60)}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(2)
	for range 2 {
		go func() {
			defer wg.Done()
			errs <- ifp.Output(f)
		}()
	}
	<-b.entered // one caller is inside Send; the other holds the second slot
	for ifp.pending.Load() != 2 {
		// The second caller has reserved its slot before blocking on the
		// send lock; wait for that (not a timing assertion: it must happen).
		runtimeGosched()
	}
	wantErrno(t, "third Output", ifp.Output(f), unix.ENOBUFS)
	n, err := ifp.OutputBatch([][][]byte{f, f})
	wantErrno(t, "OutputBatch on a full queue", err, unix.ENOBUFS)
	if n != 0 {
		t.Errorf("OutputBatch sent %d", n)
	}
	b.block <- true
	<-b.entered
	b.block <- true
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if st := ifp.Stats(); st.OPackets != 2 || st.ODrops != 2 {
		t.Errorf("stats %+v, want 2 sent and 2 dropped", st)
	}
	_ = ifp.Down()
}

// Output from many goroutines: the backend never sees concurrent Sends
// (the send lock), every frame is counted once.
func TestOutputConcurrent(t *testing.T) {
	ifp, b := newRec(t, "", true)
	const G, N = 8, 200
	var wg sync.WaitGroup
	for g := range G {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := frameTo(net.HardwareAddr{2, 0, 0, 0, 0, byte(g)}, 64)
			for range N {
				if err := ifp.Output(split(f, 3, true)); err != nil && !isErrno(err, unix.ENOBUFS) {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if b.overlap.Load() {
		t.Error("backend Send called concurrently")
	}
	st := ifp.Stats()
	if st.OPackets+st.ODrops != G*N || st.OPackets != uint64(len(b.frames)) || st.OBytes != st.OPackets*64 {
		t.Errorf("stats %+v, backend %d frames; want %d frames accounted", st, len(b.frames), G*N)
	}
}

// Mirrors virtif_stop: once Down returns no frame is inside the backend's
// Send, and later Output fails with ENETDOWN. The backend itself says
// whether a Send is still running (its busy count, dropped as Send
// returns), and Down is given time to return too early: a Down that does
// not wait returns within it, one that waits cannot, so passing takes the
// window but proves nothing by timing.
func TestDownWaitsForSend(t *testing.T) {
	ifp, b := newRec(t, "", true)
	b.entered, b.block = make(chan bool), make(chan bool)
	sent := make(chan error, 1)
	go func() { sent <- ifp.Output([][]byte{frameTo(bcast, 60)}) }()
	<-b.entered // Send runs, and blocks until released
	inside := make(chan int32, 1)
	go func() {
		_ = ifp.Down()
		inside <- b.busy.Load()
	}()
	select {
	case n := <-inside:
		t.Errorf("Down returned while the backend's Send was blocked (%d inside)", n)
		b.block <- true
	case <-time.After(200 * time.Millisecond):
		b.block <- true
		if n := <-inside; n != 0 {
			t.Errorf("Down returned with %d Send calls inside the backend", n)
		}
	}
	if err := <-sent; err != nil {
		t.Errorf("the Output Down waited for: %v", err)
	}
	b.entered, b.block = nil, nil
	wantErrno(t, "Output after Down", ifp.Output([][]byte{frameTo(bcast, 60)}), unix.ENETDOWN)
}
