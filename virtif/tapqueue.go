package virtif

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/gopacket"
	"golang.org/x/sys/unix"
)

// TapQueue is a Tap that keeps a slow consumer off the data path: Tap copies
// the frame into one of a fixed set of preallocated buffers and returns at
// once, and a goroutine of its own hands the copies, oldest first, to the
// wrapped Tap (a PcapWriter writing to a pipe, say). When every buffer is
// taken the frame is dropped and counted, so a consumer that cannot keep up
// costs frames, never the receive path's time; nothing is allocated per
// frame. Close stops it within a bounded time whatever the consumer does.
//
// The wrapped Tap is called from that one goroutine only. It sees a frame cut
// to TapQueueOptions.FrameSize; one that implements QueuedTap learns the
// frame's length and the time it was tapped as well. One that has a
// Flush() error method (a PcapWriter's buffered file, say, behind a small
// adapter) is flushed whenever the queue runs empty, so output waits in a
// buffer only while frames keep coming, and once more when Close drains it.
//
// Nothing is lost without being counted: at every Stats snapshot,
// Offered == Delivered + Full + Closed + Cut + Queued.
type TapQueue struct {
	next    Tap
	queued  QueuedTap    // next, when it takes the length and the time
	flush   func() error // next's Flush, when it has one
	timeout time.Duration

	mu      sync.Mutex
	slots   []tapSlot
	head, n int  // slots[head] is the oldest of n queued; while holding, the consumer has it
	busy    bool // the consumer is inside a call of next (Tap, TapQueued or Flush)
	waiting bool // the consumer sleeps on wake
	dirty   bool // frames delivered since the last flush
	closing bool // Close began: Tap takes no more frames
	cut     bool // Close gave up waiting: the consumer must not touch anything again
	st      TapQueueStats
	err     error // first Flush error

	wake     chan struct{} // one token: the consumer has work or must stop
	done     chan struct{} // closed when the consumer returns of its own accord
	closed   chan struct{} // closed when the first Close has its result
	closeErr error
}

// QueuedTap is a Tap that, behind a TapQueue, takes what the queue's copy of a
// frame does not keep: length is the frame's length before the queue cut it
// to its frame size, at is when the frame was tapped (not when the consumer
// got to it). PcapWriter implements it.
type QueuedTap interface {
	Tap
	TapQueued(frame []byte, dir Direction, at time.Time, length int)
}

// TapQueueOptions shape a TapQueue; the zero value holds 1024 frames of up
// to 2048 bytes (2 MiB) and waits up to a second in Close.
type TapQueueOptions struct {
	// Frames is how many frames the queue holds (default 1024).
	Frames int
	// FrameSize is the bytes kept of each frame (default 2048, enough for
	// an MTU of 1500); the rest of a longer frame is cut.
	FrameSize int
	// CloseTimeout bounds how long Close waits for the consumer to take
	// what is queued (default 1s).
	CloseTimeout time.Duration
}

// TapQueueStats count what became of the frames given to a TapQueue.
type TapQueueStats struct {
	Offered   uint64 // frames given to Tap
	Delivered uint64 // handed to the wrapped tap, whose call returned
	Full      uint64 // dropped: every buffer was taken (the consumer is behind)
	Closed    uint64 // dropped: given to Tap after Close began
	Cut       uint64 // dropped: still queued, or in the stuck consumer's hands, when Close stopped waiting
	Queued    uint64 // waiting for the consumer, or in its hands, now (0 after Close)
	// Abandoned says Close stopped waiting for a consumer blocked inside a
	// call of the wrapped tap: that goroutine is left to return whenever it
	// does, and then does nothing more. Its output may end in the middle of
	// a record.
	Abandoned bool
}

// Dropped is every frame the queue dropped, for whatever reason.
func (s TapQueueStats) Dropped() uint64 { return s.Full + s.Closed + s.Cut }

// tapSlot is one preallocated buffer and what the queue knows of its frame.
type tapSlot struct {
	buf    []byte // FrameSize bytes, fixed
	data   []byte // the frame's copy in buf
	length int    // the frame's length before the cut
	dir    Direction
	at     time.Time
}

// NewTapQueue starts a queue in front of next. Close must be called to stop
// its goroutine. Errors: EINVAL for a nil next or a negative option.
func NewTapQueue(next Tap, opts TapQueueOptions) (*TapQueue, error) {
	if next == nil {
		return nil, opErr("tap queue", "new: nil Tap", unix.EINVAL)
	}
	if opts.Frames < 0 || opts.FrameSize < 0 || opts.CloseTimeout < 0 {
		return nil, opErr("tap queue", fmt.Sprintf("new: negative option %+v", opts), unix.EINVAL)
	}
	if opts.Frames == 0 {
		opts.Frames = 1024
	}
	if opts.FrameSize == 0 {
		opts.FrameSize = 2048
	}
	if opts.CloseTimeout == 0 {
		opts.CloseTimeout = time.Second
	}
	q := &TapQueue{
		next:    next,
		timeout: opts.CloseTimeout,
		slots:   make([]tapSlot, opts.Frames),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		closed:  make(chan struct{}),
	}
	q.queued, _ = next.(QueuedTap)
	if f, ok := next.(interface{ Flush() error }); ok {
		q.flush = f.Flush
	}
	mem := make([]byte, opts.Frames*opts.FrameSize)
	for i := range q.slots {
		q.slots[i].buf = mem[i*opts.FrameSize : (i+1)*opts.FrameSize : (i+1)*opts.FrameSize]
	}
	go q.run()
	return q, nil
}

// Tap queues a copy of frame, or counts it dropped when the queue is full
// or closing. It never blocks on the consumer.
func (q *TapQueue) Tap(frame []byte, dir Direction) {
	at := time.Now()
	q.mu.Lock()
	q.st.Offered++
	switch {
	case q.closing:
		q.st.Closed++
	case q.n == len(q.slots):
		q.st.Full++
	default:
		s := &q.slots[(q.head+q.n)%len(q.slots)]
		s.data = s.buf[:copy(s.buf, frame)]
		s.length, s.dir, s.at = len(frame), dir, at
		q.n++
		q.wakeLocked()
	}
	q.mu.Unlock()
}

// wakeLocked wakes the consumer if it sleeps; q.mu is held.
func (q *TapQueue) wakeLocked() {
	if q.waiting {
		q.waiting = false
		q.wake <- struct{}{} // never blocks: only a sleeping consumer is woken, once
	}
}

// run is the consumer: it hands the queued frames to next until Close, then
// drains what is left and returns; once Close has given up on it (cut) it
// returns without touching the queue.
func (q *TapQueue) run() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for !q.cut {
		if q.n > 0 {
			s := &q.slots[q.head]
			q.busy = true
			q.mu.Unlock()
			if q.queued != nil {
				q.queued.TapQueued(s.data, s.dir, s.at, s.length)
			} else {
				q.next.Tap(s.data, s.dir)
			}
			q.mu.Lock()
			if q.cut {
				return // Close counted this frame as cut
			}
			q.busy, q.dirty = false, q.flush != nil
			q.st.Delivered++
			q.head = (q.head + 1) % len(q.slots)
			q.n--
			continue
		}
		if q.dirty && q.flush != nil {
			q.busy, q.dirty = true, false
			q.mu.Unlock()
			err := q.flush()
			q.mu.Lock()
			q.busy = false
			if err != nil && q.err == nil {
				q.err = err
			}
			continue
		}
		if q.closing {
			close(q.done)
			return
		}
		q.waiting = true
		q.mu.Unlock()
		<-q.wake
		q.mu.Lock()
	}
}

// Close stops the queue: Tap drops (and counts) what it is given from now
// on, and Close waits up to TapQueueOptions.CloseTimeout for the consumer to
// take what is queued (and flush it). At the deadline the frames still queued
// are dropped and counted as Cut, and a consumer blocked inside the wrapped
// tap is abandoned (Stats().Abandoned): Close returns anyway, with an error
// wrapping ETIMEDOUT. It also returns the first error of the wrapped tap's
// Flush. Later calls wait for the first and return the same. The wrapped tap
// is not closed: it belongs to the caller, who must not use it after an
// abandonment (the consumer may still be inside it).
func (q *TapQueue) Close() error {
	q.mu.Lock()
	if q.closing {
		q.mu.Unlock()
		<-q.closed
		return q.closeErr
	}
	q.closing = true
	q.wakeLocked()
	q.mu.Unlock()

	t := time.NewTimer(q.timeout)
	defer t.Stop()
	var errs []error
	select {
	case <-q.done:
	case <-t.C:
		q.mu.Lock()
		select {
		case <-q.done: // it finished while the timer fired
		default:
			// From here on the consumer touches nothing, even one that
			// was about to return.
			q.cut = true
			q.wakeLocked()
			cut, abandoned := q.n, q.busy
			q.st.Cut += uint64(cut)
			q.st.Abandoned = abandoned
			q.n = 0
			if cut > 0 || abandoned || q.dirty {
				what := fmt.Sprintf("close: after %v, %d frames still queued dropped", q.timeout, cut)
				if abandoned {
					what += "; the consumer is blocked in the wrapped tap, abandoned"
				} else if q.dirty {
					what += "; the last frames delivered were not flushed"
				}
				errs = append(errs, opErr("tap queue", what, unix.ETIMEDOUT))
			}
		}
		q.mu.Unlock()
	}
	q.mu.Lock()
	if q.err != nil {
		errs = append(errs, opErr("tap queue", "flush", q.err))
	}
	q.mu.Unlock()
	q.closeErr = errors.Join(errs...)
	close(q.closed)
	return q.closeErr
}

// Stats is a consistent snapshot of the counts (see TapQueue).
func (q *TapQueue) Stats() TapQueueStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	st := q.st
	st.Queued = uint64(q.n)
	return st
}

// TapQueued writes a frame a TapQueue held: with its arrival time, and its
// length before the queue cut it (which the record keeps as the frame's
// length, as tcpdump shows a frame cut by the snaplen).
func (p *PcapWriter) TapQueued(frame []byte, dir Direction, at time.Time, length int) {
	if p.dirs&dir == 0 {
		return
	}
	data := frame
	if len(data) > p.snaplen {
		data = data[:p.snaplen]
	}
	ci := gopacket.CaptureInfo{Timestamp: at, CaptureLength: len(data), Length: max(length, len(frame))}
	p.mu.Lock()
	err := p.w.WritePacket(ci, data)
	if err != nil && p.err == nil {
		p.err = err
		if p.ew.err != nil {
			p.err = p.ew.err
		}
	}
	p.mu.Unlock()
	if err != nil {
		p.failed.Add(1)
	} else {
		p.written.Add(1)
	}
}
