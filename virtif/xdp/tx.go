//go:build linux

package xdp

import (
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/xsk"
)

// Send is VIFHYPER_SEND: it copies the frame's segments into a free UMEM
// frame and stages it on the TX ring of the vif's queue; the kernel gets
// the staged frames every txBatch frames and at Flush. A nil error means
// the frame has its ring slot: the backend never drops it later (only the
// kernel can, and counts it). Errors, all before anything is staged:
// ENOBUFS when no UMEM frame or no TX ring slot is free even after kicking
// the kernel and reaping completions (back-pressure, counted in tx_no_frame
// or tx_ring_full; the caller counts the drop), EMSGSIZE for a frame larger
// than a UMEM frame on a NIC bound without multi-buffer (or than maxChain
// frames with it), net.ErrClosed after Close. Safe for concurrent use,
// also with Close.
//
// On a NIC bound with multi-buffer (Info().SG) a frame longer than a UMEM
// frame goes out as a chain of descriptors, one UMEM frame each, staged
// whole or not at all.
func (b *Backend) Send(segs [][]byte) error {
	q := b.txq
	if h := sendLocking.Load(); h != nil {
		(*h)(b)
	}
	q.txMu.Lock()
	var err error
	// Checked under txMu: Close sets closed before it takes txMu, and the
	// UMEM is unmapped only after that, so a Send that finds closed false
	// here finishes before the unmap.
	if b.closed.Load() {
		err = net.ErrClosed
	} else {
		err = b.sendLocked(segs)
	}
	q.txMu.Unlock()
	return err
}

func (b *Backend) sendLocked(segs [][]byte) error {
	q := b.txq
	addr, buf, ok := q.sock.NextFrame()
	if !ok {
		// Everything is in flight: push out what is staged and retry once.
		_ = b.pushLocked()
		if addr, buf, ok = q.sock.NextFrame(); !ok {
			b.txNoFrame.Add(1)
			return fmt.Errorf("xdp: %s: no free TX frame: %w", b.name, unix.ENOBUFS)
		}
	}
	n := 0
	for _, s := range segs {
		if n+len(s) > len(buf) {
			q.sock.FreeFrame(addr)
			if b.nic.sg {
				return b.sendChainLocked(segs)
			}
			b.txTooBig.Add(1)
			return fmt.Errorf("xdp: %s: frame longer than the %d-byte UMEM frame: %w", b.name, len(buf), unix.EMSGSIZE)
		}
		n += copy(buf[n:], s)
	}
	d := [1]xsk.Desc{{Addr: addr, Len: uint32(n)}}
	if q.sock.Stage(d[:]) == 0 {
		// The ring is full: let the kernel take some and retry once.
		_ = b.pushLocked()
		if q.sock.Stage(d[:]) == 0 {
			q.sock.FreeFrame(addr)
			b.txRingFull.Add(1)
			return fmt.Errorf("xdp: %s: TX ring full: %w", b.name, unix.ENOBUFS)
		}
	}
	if q.staged++; q.staged >= txBatch {
		_ = b.pushLocked() // the frame is staged: a kick error is only counted
	}
	return nil
}

// sendChainLocked is sendLocked for a frame longer than a UMEM frame on a
// NIC bound with multi-buffer: the frame is copied into as many UMEM frames
// as it needs (at most maxChain) and staged as one chain, PktContd on all
// descriptors but the last; the same back-pressure and errors as
// sendLocked, nothing staged on error.
func (b *Backend) sendChainLocked(segs [][]byte) error {
	q := b.txq
	fs := q.sock.FrameSize()
	total := 0
	for _, s := range segs {
		total += len(s)
	}
	k := (total + fs - 1) / fs
	if k > maxChain {
		b.txTooBig.Add(1)
		return fmt.Errorf("xdp: %s: frame of %d bytes longer than %d UMEM frames of %d: %w", b.name, total, maxChain, fs, unix.EMSGSIZE)
	}
	var descs [maxChain]xsk.Desc
	var bufs [maxChain][]byte
	free := func(n int) {
		for _, d := range descs[:n] {
			q.sock.FreeFrame(d.Addr)
		}
	}
	for got, pushed := 0, false; got < k; {
		addr, buf, ok := q.sock.NextFrame()
		if !ok {
			if pushed {
				free(got)
				b.txNoFrame.Add(1)
				return fmt.Errorf("xdp: %s: no %d free TX frames: %w", b.name, k, unix.ENOBUFS)
			}
			// Everything is in flight: push out what is staged and retry once.
			_ = b.pushLocked()
			pushed = true
			continue
		}
		descs[got], bufs[got] = xsk.Desc{Addr: addr, Options: xsk.PktContd}, buf
		got++
	}
	j, off := 0, 0
	for _, s := range segs {
		for len(s) > 0 {
			c := copy(bufs[j][off:], s)
			s, off = s[c:], off+c
			if off == fs {
				descs[j].Len = uint32(off)
				j, off = j+1, 0
			}
		}
	}
	if off > 0 {
		descs[j].Len = uint32(off)
	}
	descs[k-1].Options = 0
	if q.sock.Stage(descs[:k]) == 0 {
		// The ring is full: let the kernel take some and retry once.
		_ = b.pushLocked()
		if q.sock.Stage(descs[:k]) == 0 {
			free(k)
			b.txRingFull.Add(1)
			return fmt.Errorf("xdp: %s: TX ring full: %w", b.name, unix.ENOBUFS)
		}
	}
	b.txChains.Add(1)
	if q.staged++; q.staged >= txBatch {
		_ = b.pushLocked() // the frame is staged: a kick error is only counted
	}
	return nil
}

// pushLocked hands the staged frames to the kernel, kicks it and reaps
// completions. A kick error is counted (tx_kick_errors) and returned; the
// frames stay on the ring.
func (b *Backend) pushLocked() error {
	q := b.txq
	b.nic.noteTX()
	q.sock.Complete()
	err := q.sock.Kick()
	q.staged = 0
	q.sock.Complete()
	if err != nil {
		b.txKickErrors.Add(1)
		return fmt.Errorf("xdp: %s: transmit: %w", b.name, err)
	}
	return nil
}

// Flush hands the staged frames to the kernel and kicks it until it has
// taken them all (or has taken none for drainStall: then they wait on the
// ring, and the NIC's idle RX goroutine kicks them on every checkEvery,
// counted in tx_idle_kicks, until the next Send or Flush). Every frame Send accepted is already on the TX ring, so
// an error here (a kick the kernel refused, e.g. ENXIO when the NIC went
// away; counted in tx_kick_errors) changes no frame's fate: the frames stay
// on the ring for the next kick. It is returned for direct users of the
// Backend; net.ErrClosed after Close.
//
// Called while an RX goroutine of the NIC is delivering a batch — typically
// from an input handler that answers or forwards — it returns at once and
// the RX goroutine flushes at the end of its batch: one kick per batch, not
// per frame. A failure there is counted, not returned.
func (b *Backend) Flush() error {
	if b.closed.Load() {
		return net.ErrClosed
	}
	n := b.nic
	if b.slot < flushBitsLen {
		n.flushBits.Or(1 << b.slot)
		if n.rxDepth.Load() > 0 {
			return nil
		}
		if n.flushBits.And(^(uint64(1)<<b.slot))&(1<<b.slot) == 0 {
			return nil // an RX goroutine took it meanwhile
		}
	}
	return b.flushNow()
}

func (b *Backend) flushNow() error {
	b.txq.txMu.Lock()
	defer b.txq.txMu.Unlock()
	if b.closed.Load() {
		return net.ErrClosed // Close flushed what b staged
	}
	return b.drainLocked()
}

// drainLocked pushes the staged frames and kicks until the kernel has
// taken every descriptor: in copy mode one kick sends only a budget of
// frames, and frames left on the ring would wait for the next send. While
// the device is busy (a slow receiver behind a veth) it keeps kicking as
// long as the kernel takes frames; after drainStall without progress it
// gives up, and the frames wait on the ring for the next Send or Flush.
func (b *Backend) drainLocked() error {
	q := b.txq
	err := b.pushLocked()
	if drainOnce.Load() {
		return err // a test playing a device that stalled at once
	}
	last, idle := -1, 0
	var since time.Time
	for err == nil {
		left := q.sock.TXPending()
		if left == 0 {
			break
		}
		if left != last {
			last, idle = left, 0
		} else if idle++; idle == drainSpins {
			since = time.Now()
		} else if idle > drainSpins && idle%drainClockEvery == 0 && time.Since(since) > drainStall {
			break
		}
		if err = q.sock.Kick(); err != nil {
			b.txKickErrors.Add(1)
			err = fmt.Errorf("xdp: %s: transmit: %w", b.name, err)
		}
		q.sock.Complete()
	}
	return err
}

// drainStall is how long Flush kicks a TX ring the kernel takes nothing
// from before it returns. It counts from the
// drainSpins-th kick without progress, and the clock is read every
// drainClockEvery kicks: a busy device usually takes frames again within a
// few kicks, so the common case reads no clock at all.
const drainStall = 100 * time.Millisecond

// drainOnce, set by tests, makes Flush give up after its first kick, as
// it does on a device that takes nothing for drainStall.
var drainOnce atomic.Bool

const (
	drainSpins      = 1024
	drainClockEvery = 256
)
