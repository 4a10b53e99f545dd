package virtif

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// faultBackend (scheme "fault") refuses every third Send (EIO) and fails
// every second Flush (EAGAIN), and remembers each frame's fate by the id
// in its bytes 14..21.
type faultBackend struct {
	sends, flushes atomic.Uint64

	mu       sync.Mutex
	accepted map[uint64]bool // id -> Send returned nil (false: refused)
}

func (b *faultBackend) Send(segs [][]byte) error {
	var f []byte
	for _, s := range segs {
		f = append(f, s...)
	}
	id := binary.BigEndian.Uint64(f[14:])
	ok := b.sends.Add(1)%3 != 0
	b.mu.Lock()
	b.accepted[id] = ok
	b.mu.Unlock()
	if !ok {
		return unix.EIO
	}
	return nil
}

func (b *faultBackend) Flush() error {
	if b.flushes.Add(1)%2 == 0 {
		return unix.EAGAIN
	}
	return nil
}

func (b *faultBackend) Dying() error { return nil }
func (b *faultBackend) Close() error { return nil }

// fate is what the backend did with frame id: seen, and accepted.
func (b *faultBackend) fate(id uint64) (seen, accepted bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	accepted, seen = b.accepted[id]
	return seen, accepted
}

var _ Flusher = (*faultBackend)(nil)

func init() {
	if err := RegisterBackend("fault", func(BackendConfig) (Backend, error) {
		return &faultBackend{accepted: make(map[uint64]bool)}, nil
	}); err != nil {
		panic(err) // test setup only
	}
}

// Every frame given to Output ends in exactly one of OPackets, OErrors,
// ODrops, in every snapshot taken after the call returns, while Sends and
// Flushes fail concurrently; an error is returned exactly for the frames
// the backend did not take, never for one counted as sent, whatever Flush
// said (its error changes no frame's fate). OutputBatch: frames[:n] were
// taken, frames[n] failed and is counted, later ones never reached the
// backend and are not counted.
func TestOutputCountsEveryFrameOnce(t *testing.T) {
	c := newCloner(t, ClonerConfig{SendQueueLen: 3}) // small: ENOBUFS happens too
	ifp, _ := c.Create()
	if err := ifp.SetLinkStr("fault:x"); err != nil {
		t.Fatal(err)
	}
	fb := ifp.Backend().(*faultBackend)
	_ = ifp.Up()
	var given, settled, ids, nobufs atomic.Uint64
	const G, calls = 6, 400
	var wg sync.WaitGroup
	errs := make(chan string, 10)
	for g := range G {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fail := func(format string, args ...any) {
				select { // keep the first few, never block
				case errs <- fmt.Sprintf("goroutine %d: "+format, append([]any{g}, args...)...):
				default:
				}
			}
			for k := range calls {
				nf := 1 + k%5
				frames := make([][][]byte, nf)
				first := ids.Add(uint64(nf)) - uint64(nf)
				for j := range frames {
					f := frameTo(bcast, 60)
					binary.BigEndian.PutUint64(f[14:], first+uint64(j))
					frames[j] = [][]byte{f[:20], f[20:]}
				}
				given.Add(uint64(nf))
				var n int
				var err error
				if k%2 == 0 {
					frames = frames[:1]
					if err = ifp.Output(frames[0]); err == nil {
						n = 1
					}
				} else {
					n, err = ifp.OutputBatch(frames)
				}
				counted := n
				if err != nil {
					counted++ // frames[n] failed and was counted
					if isErrno(err, unix.ENOBUFS) {
						nobufs.Add(1)
					}
				}
				settled.Add(uint64(counted))
				for j := range frames {
					seen, ok := fb.fate(first + uint64(j))
					switch {
					case j < n && !ok:
						fail("frame %d reported sent, but the backend refused it (seen %v)", j, seen)
					case j == n && err == nil:
					case j == n && ok:
						fail("error %v returned for frame %d, which the backend accepted (counted as sent)", err, j)
					case j > n && seen:
						fail("frame %d after the failed one reached the backend", j)
					}
				}
				if err != nil && n >= len(frames) {
					fail("error %v returned after all %d frames were sent", err, n)
				}
				low := settled.Load()
				st := ifp.Stats()
				high := given.Load()
				if tot := st.OPackets + st.OErrors + st.ODrops; tot < low || tot > high {
					fail("snapshot counts %d frames (%d sent, %d errors, %d drops); %d settled, %d given", tot, st.OPackets, st.OErrors, st.ODrops, low, high)
				}
				if len(errs) == cap(errs) {
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	st := ifp.Stats()
	fb.mu.Lock()
	var sent, refused uint64
	for _, ok := range fb.accepted {
		if ok {
			sent++
		} else {
			refused++
		}
	}
	fb.mu.Unlock()
	if st.OPackets+st.OErrors+st.ODrops != settled.Load() || st.OPackets != sent || st.OErrors != refused || st.ODrops != nobufs.Load() {
		t.Errorf("stats %+v; want %d frames: %d sent, %d refused by the backend, %d ENOBUFS", st, settled.Load(), sent, refused, nobufs.Load())
	}
	if fb.flushes.Load() < 2 {
		t.Errorf("only %d flushes: the failing ones were not exercised", fb.flushes.Load())
	}
	t.Logf("%d frames given, %d settled: %d sent, %d refused, %d dropped; %d flushes", given.Load(), settled.Load(), sent, refused, nobufs.Load(), fb.flushes.Load())
	_ = ifp.Down()
}
