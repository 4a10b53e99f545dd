package mem_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/virtif-xdp/virtif-xdp/virtif"
	"golang.org/x/sys/unix"
)

// batchLog records, on the receiving goroutine, the size of each batch
// the end handler closed, and the frames seen since the last end.
type batchLog struct {
	mu      sync.Mutex
	batches []int
	open    int // frames since the last end
	frames  int
	ends    chan struct{}
}

func (l *batchLog) input(gate chan struct{}) virtif.Input {
	return func([]byte, bool) {
		l.mu.Lock()
		first := l.frames == 0
		l.frames++
		l.open++
		l.mu.Unlock()
		if first && gate != nil {
			<-gate // hold the receiver until the sender has queued everything
		}
	}
}

func (l *batchLog) end() {
	l.mu.Lock()
	l.batches = append(l.batches, l.open)
	l.open = 0
	l.mu.Unlock()
	select {
	case l.ends <- struct{}{}:
	default:
	}
}

// waitFrames waits until n frames arrived and a batch end followed the
// last of them.
func (l *batchLog) waitFrames(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(time.Minute) // generous: a shared, slow machine
	for {
		l.mu.Lock()
		done := l.frames >= n && l.open == 0
		l.mu.Unlock()
		if done {
			return
		}
		select {
		case <-l.ends:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			l.mu.Lock()
			defer l.mu.Unlock()
			t.Fatalf("got %d frames, %d since the last batch end; want %d, all ended", l.frames, l.open, n)
		}
	}
}

// The mem backend ends every batch it delivers: the end handler of
// SetInputBatch follows the frames of each batch on the receiving
// goroutine, no frame is left without an end after it, and a batch is
// what the queue held, at most 64 frames. 300 frames queued while the
// receiver is held in the first one arrive as 64, 64, 64, 64, 44.
func TestEndBatchMem(t *testing.T) {
	c := newCloner(t)
	tx, rx := attach(t, c, "mem:endbatch").ifp, attach(t, c, "mem:endbatch").ifp
	if !rx.EndsBatches() {
		t.Fatal("EndsBatches() = false on a mem interface")
	}
	l := &batchLog{ends: make(chan struct{}, 1)}
	gate := make(chan struct{})
	rx.SetInputBatch(l.input(gate), l.end)
	f := frame(rx.HardwareAddr(), tx.HardwareAddr(), strings.Repeat("x", 46))
	const n = 300
	if err := tx.Output(f); err != nil {
		t.Fatal(err)
	}
	// The receiver is now (or soon) held in the first frame; queue the rest.
	for range n - 1 {
		if err := tx.Output(f); err != nil {
			t.Fatal(err)
		}
	}
	close(gate)
	l.waitFrames(t, n)
	l.mu.Lock()
	got := append([]int(nil), l.batches...)
	l.mu.Unlock()
	want := []int{64, 64, 64, 64, 44}
	if len(got) != len(want) {
		t.Fatalf("batches %v, want %v", got, want)
	}
	for k := range want {
		if got[k] != want[k] {
			t.Fatalf("batches %v, want %v", got, want)
		}
	}
	if s := rx.Stats(); s.IPackets != n {
		t.Fatalf("IPackets %d, want %d", s.IPackets, n)
	}

	// SetInput replaces both handlers: no end handler is called any more.
	var plain sync.WaitGroup
	plain.Add(1)
	rx.SetInput(func([]byte, bool) { plain.Done() })
	if err := tx.Output(f); err != nil {
		t.Fatal(err)
	}
	plain.Wait()
	time.Sleep(10 * time.Millisecond) // the end of that batch, if it were called
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.batches) != len(want) {
		t.Fatalf("end handler called after SetInput: batches %v", l.batches)
	}
}

// A backend that is not a BatchEnder does not end batches, and says so:
// EndsBatches is false, as it is before the link string is set.
func TestEndsBatchesWithoutBatchEnder(t *testing.T) {
	if err := virtif.RegisterBackend("nobatch", func(virtif.BackendConfig) (virtif.Backend, error) {
		return plainBackend{}, nil
	}); err != nil && !errors.Is(err, unix.EEXIST) { // EEXIST: -count > 1
		t.Fatal(err)
	}
	ifp, err := newCloner(t).Create()
	if err != nil {
		t.Fatal(err)
	}
	if ifp.EndsBatches() {
		t.Fatal("EndsBatches() = true without a backend")
	}
	if err := ifp.SetLinkStr("nobatch:x"); err != nil {
		t.Fatal(err)
	}
	if ifp.EndsBatches() {
		t.Fatal("EndsBatches() = true on a backend that is not a BatchEnder")
	}
}

type plainBackend struct{}

func (plainBackend) Send([][]byte) error { return nil }
func (plainBackend) Dying() error        { return nil }
func (plainBackend) Close() error        { return nil }
