package virtif

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/gopacket/pcapgo"
	"golang.org/x/sys/unix"
)

// gateTap blocks every call until open is closed and records the frames it
// got (copies) in order.
type gateTap struct {
	open   chan struct{}
	mu     sync.Mutex
	frames [][]byte
	calls  atomic.Int64
}

func newGateTap() *gateTap { return &gateTap{open: make(chan struct{})} }

func (g *gateTap) Tap(frame []byte, _ Direction) {
	g.calls.Add(1)
	<-g.open
	g.mu.Lock()
	g.frames = append(g.frames, bytes.Clone(frame))
	g.mu.Unlock()
}

func (g *gateTap) got() [][]byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.frames
}

// balanced checks the queue's promise: every frame offered is delivered,
// dropped for a reason, or still queued.
func balanced(t *testing.T, st TapQueueStats) {
	t.Helper()
	if !st.balanced() {
		t.Fatalf("unbalanced: %+v", st)
	}
}

func (st TapQueueStats) balanced() bool {
	return st.Offered == st.Delivered+st.Full+st.Closed+st.Cut+st.Queued
}

// seqFrame is size bytes, each the low byte of i.
func seqFrame(i int, size int) []byte { return bytes.Repeat([]byte{byte(i)}, size) }

// A full queue drops and counts, never waits; what it held reaches the
// consumer in order once it moves, and Close then returns nil.
func TestTapQueueFullCountsDrops(t *testing.T) {
	g := newGateTap()
	q, err := NewTapQueue(g, TapQueueOptions{Frames: 4, FrameSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		q.Tap(seqFrame(i, 60), In) // returns although the consumer is blocked
	}
	st := q.Stats()
	balanced(t, st)
	if st.Offered != 10 || st.Full != 6 || st.Queued != 4 || st.Delivered != 0 {
		t.Fatalf("with the consumer blocked: %+v, want 10 offered, 6 full, 4 queued", st)
	}
	close(g.open)
	if err := q.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	st = q.Stats()
	balanced(t, st)
	if st.Delivered != 4 || st.Dropped() != 6 || st.Queued != 0 || st.Abandoned {
		t.Fatalf("after Close: %+v, want 4 delivered, 6 dropped", st)
	}
	got := g.got()
	if len(got) != 4 {
		t.Fatalf("consumer got %d frames, want 4", len(got))
	}
	for i, f := range got {
		if !bytes.Equal(f, seqFrame(i, 60)) {
			t.Errorf("frame %d: % x..., want frame %d", i, f[:4], i)
		}
	}
	q.Tap(seqFrame(0, 60), In)
	if st := q.Stats(); st.Closed != 1 || st.Offered != 11 {
		t.Errorf("a frame after Close: %+v, want it counted Closed", st)
	}
	if err := q.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// A consumer blocked for good (a pipe nobody reads) does not hold Close past
// its bound: the queued frames are cut and counted, the consumer abandoned,
// and it does nothing more when it finally returns.
func TestTapQueueCloseBlockedConsumer(t *testing.T) {
	g := newGateTap()
	defer close(g.open)
	q, err := NewTapQueue(g, TapQueueOptions{Frames: 8, CloseTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		q.Tap(seqFrame(i, 100), In)
	}
	if !waitUntil(func() bool { return g.calls.Load() == 1 }) {
		t.Fatal("the consumer never took the first frame")
	}
	errc := make(chan error, 1)
	go func() { errc <- q.Close() }()
	select {
	case err = <-errc:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return with its consumer blocked")
	}
	if !errors.Is(err, unix.ETIMEDOUT) {
		t.Fatalf("Close: %v, want ETIMEDOUT", err)
	}
	st := q.Stats()
	balanced(t, st)
	if !st.Abandoned || st.Cut != 5 || st.Delivered != 0 || st.Queued != 0 {
		t.Fatalf("after Close: %+v, want 5 cut, abandoned", st)
	}
	if err2 := q.Close(); err2 == nil || err2.Error() != err.Error() {
		t.Errorf("second Close: %v, want the first's %v", err2, err)
	}
	q.Tap(seqFrame(9, 100), In)
	g.open <- struct{}{} // let the abandoned call return
	time.Sleep(50 * time.Millisecond)
	st = q.Stats()
	balanced(t, st)
	if st.Delivered != 0 || st.Closed != 1 || g.calls.Load() != 1 {
		t.Fatalf("after the abandoned consumer returned: %+v, %d calls; want it to do nothing more", st, g.calls.Load())
	}
}

// Many taps at once (one per RX queue) against a consumer that stalls now
// and then: every snapshot balances, and at the end the consumer got exactly
// Delivered frames, each intact.
func TestTapQueueCountsExactUnderLoad(t *testing.T) {
	var got atomic.Uint64
	var bad atomic.Uint64
	slow := tapFunc(func(f []byte, _ Direction) {
		for _, b := range f {
			if b != f[0] {
				bad.Add(1)
				break
			}
		}
		if got.Add(1)%64 == 0 {
			time.Sleep(time.Millisecond)
		}
	})
	q, err := NewTapQueue(slow, TapQueueOptions{Frames: 32, FrameSize: 256, CloseTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	const producers, each = 4, 5000
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var unbalanced atomic.Pointer[TapQueueStats]
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				if st := q.Stats(); !st.balanced() {
					unbalanced.Store(&st)
				}
			}
		}
	}()
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				q.Tap(seqFrame(p*each+i, 64+i%192), In)
			}
		}()
	}
	wg.Wait()
	close(stop)
	if st := unbalanced.Load(); st != nil {
		t.Fatalf("a snapshot under load did not balance: %+v", *st)
	}
	if err := q.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	st := q.Stats()
	balanced(t, st)
	if st.Offered != producers*each || st.Delivered != got.Load() || st.Cut != 0 || st.Queued != 0 {
		t.Fatalf("%+v; the consumer counted %d", st, got.Load())
	}
	if bad.Load() != 0 {
		t.Fatalf("%d frames reached the consumer corrupted", bad.Load())
	}
	t.Logf("offered %d: delivered %d, dropped full %d", st.Offered, st.Delivered, st.Full)
}

// flushTap counts flushes and fails them when told to.
type flushTap struct {
	frames, flushes atomic.Int64
	err             error
}

func (f *flushTap) Tap([]byte, Direction) { f.frames.Add(1) }
func (f *flushTap) Flush() error          { f.flushes.Add(1); return f.err }

// A tap with Flush is flushed when the queue runs empty (so a buffered file
// is current while traffic pauses), and Close reports a failed flush.
func TestTapQueueFlush(t *testing.T) {
	ft := &flushTap{}
	q, err := NewTapQueue(ft, TapQueueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	q.Tap(seqFrame(1, 60), In)
	if !waitUntil(func() bool { return ft.flushes.Load() == 1 }) {
		t.Fatalf("not flushed after the queue ran empty: %d flushes", ft.flushes.Load())
	}
	if err := q.Close(); err != nil || ft.flushes.Load() != 1 {
		t.Fatalf("Close: %v, %d flushes (nothing new to flush)", err, ft.flushes.Load())
	}

	ft = &flushTap{err: unix.EPIPE}
	if q, err = NewTapQueue(ft, TapQueueOptions{}); err != nil {
		t.Fatal(err)
	}
	q.Tap(seqFrame(1, 60), In)
	if err := q.Close(); !errors.Is(err, unix.EPIPE) {
		t.Fatalf("Close after a failed flush: %v, want EPIPE", err)
	}
}

// Behind a queue a PcapWriter still records when the frame was tapped and
// its whole length, though the queue kept only FrameSize bytes of it.
func TestTapQueuePcapKeepsTimeAndLength(t *testing.T) {
	var buf bytes.Buffer
	pw, err := NewPcapWriter(&buf, PcapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	g := newGateTap()
	// The consumer is held at the gate until after the frame was tapped.
	q, err := NewTapQueue(gatedQueued{QueuedTap: pw, g: g}, TapQueueOptions{FrameSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().Truncate(time.Microsecond)
	q.Tap(seqFrame(7, 300), In)
	time.Sleep(20 * time.Millisecond)
	released := time.Now()
	close(g.open)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := pcapgo.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	data, ci, err := r.ReadPacketData()
	if err != nil {
		t.Fatal(err)
	}
	if ci.Length != 300 || ci.CaptureLength != 100 || !bytes.Equal(data, seqFrame(7, 100)) {
		t.Errorf("record: length %d, caplen %d; want 300, 100", ci.Length, ci.CaptureLength)
	}
	if ci.Timestamp.Before(before) || !ci.Timestamp.Before(released) {
		t.Errorf("timestamp %v: want the time of Tap (between %v and %v), not of the write", ci.Timestamp, before, released)
	}
}

// gatedQueued waits at g's gate before passing the frame on with its time.
type gatedQueued struct {
	QueuedTap
	g *gateTap
}

func (q gatedQueued) TapQueued(frame []byte, dir Direction, at time.Time, length int) {
	<-q.g.open
	q.QueuedTap.TapQueued(frame, dir, at, length)
}

func TestTapQueueNoAllocation(t *testing.T) {
	q, err := NewTapQueue(tapFunc(func([]byte, Direction) {}), TapQueueOptions{Frames: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	f := seqFrame(1, 1500)
	if n := testing.AllocsPerRun(1000, func() { q.Tap(f, In) }); n != 0 {
		t.Errorf("Tap allocates %v times a frame, want 0", n)
	}
}

func TestTapQueueBadOptions(t *testing.T) {
	_, err := NewTapQueue(nil, TapQueueOptions{})
	wantErrno(t, "nil tap", err, unix.EINVAL)
	_, err = NewTapQueue(&countTap{}, TapQueueOptions{Frames: -1})
	wantErrno(t, "negative frames", err, unix.EINVAL)
}

// waitUntil polls cond for up to 10 s; the bound only ends a failing test.
func waitUntil(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// blockedFlush takes frames at once and blocks in Flush until open closes.
type blockedFlush struct {
	open    chan struct{}
	flushes atomic.Int64
}

func (b *blockedFlush) Tap([]byte, Direction) {}
func (b *blockedFlush) Flush() error          { b.flushes.Add(1); <-b.open; return nil }

// A consumer stuck flushing (a buffered writer on a full pipe) is abandoned
// at the bound as well: nothing was queued, so nothing is cut.
func TestTapQueueCloseBlockedFlush(t *testing.T) {
	b := &blockedFlush{open: make(chan struct{})}
	defer close(b.open)
	q, err := NewTapQueue(b, TapQueueOptions{CloseTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	q.Tap(seqFrame(1, 60), In)
	if !waitUntil(func() bool { return b.flushes.Load() == 1 }) {
		t.Fatal("never flushed")
	}
	errc := make(chan error, 1)
	go func() { errc <- q.Close() }()
	select {
	case err = <-errc:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return with its consumer blocked in Flush")
	}
	st := q.Stats()
	balanced(t, st)
	if !errors.Is(err, unix.ETIMEDOUT) || !st.Abandoned || st.Delivered != 1 || st.Cut != 0 {
		t.Fatalf("Close: %v, %+v; want ETIMEDOUT, abandoned, 1 delivered, none cut", err, st)
	}
}
