package virtif

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// The send queue. NetBSD queues mbufs on if_snd and virtif_start drains it.
// Here a frame's segments stay owned by the caller, valid only for its
// call, so the queue holds callers, not copies: Output reserves a slot
// (an atomic count of frames waiting for or inside the send lock), takes
// the send lock and runs virtif_start over its own frames. When
// SendQueueLen frames are already waiting, Output fails at once with
// ENOBUFS and counts a drop, as IFQ_ENQUEUE does on a full if_snd, instead
// of piling up goroutines behind a slow backend.

// reserve takes up to n send-queue slots and returns how many it got.
func (i *Interface) reserve(n int) int {
	limit := i.queueLen
	for {
		cur := i.pending.Load()
		k := limit - cur
		if k <= 0 {
			return 0
		}
		if int32(n) < k {
			k = int32(n)
		}
		if i.pending.CompareAndSwap(cur, cur+k) {
			return int(k)
		}
	}
}

// Output sends one frame given as segments (if_output followed by
// virtif_start). Zero-length segments are skipped; a frame of more than
// MaxSegments non-empty segments is coalesced into a per-interface buffer
// so it still leaves as MaxSegments segments (counted in Coalesced).
//
// The frame is counted exactly once, before Output returns: in OPackets
// when the backend's Send committed it, and then Output returns nil (a
// Flush error after it is the backend's to count, not returned: it
// changes no frame's fate); otherwise in ODrops or OErrors with the error
// returned: ENXIO without a backend and ENETDOWN unless the interface is
// running (ODrops, as ether_output drops on a down interface), ENOBUFS
// when the send queue is full (ODrops), EINVAL for a frame with no bytes
// and EMSGSIZE for one longer than MTU plus Ethernet and VLAN headers
// (OErrors), or the backend's Send error (OErrors).
// segs may be reused by the caller once Output returns.
func (i *Interface) Output(segs [][]byte) error {
	if i.reserve(1) == 0 {
		if i.queueLen == 0 { // the zero Interface
			return opErr(i.name, "output", unix.ENXIO)
		}
		i.ctr.add1(nil, cODrops)
		return i.errs.nobufs
	}
	i.sendMu.Lock()
	err := i.startLocked(segs)
	i.publishTx()
	if err == nil {
		i.flush()
	}
	i.sendMu.Unlock()
	i.pending.Add(-1)
	return err
}

// OutputBatch sends frames in order, each as Output would, and calls the
// backend's Flush once per batch instead of once per frame (a Flush error
// is not returned, as for Output). It returns how many frames were sent:
// frames[:n] were committed by the backend and are counted in OPackets. On
// error frames[n] failed and was counted (ODrops or OErrors), and frames
// after it were not tried and are not counted; the caller still owns them.
func (i *Interface) OutputBatch(frames [][][]byte) (int, error) {
	sent := 0
	for sent < len(frames) {
		k := i.reserve(len(frames) - sent)
		if k == 0 && i.queueLen == 0 {
			return 0, opErr(i.name, "output", unix.ENXIO)
		}
		if k == 0 {
			i.ctr.add1(nil, cODrops)
			return sent, i.errs.nobufs
		}
		i.sendMu.Lock()
		var err error
		n := 0
		for ; n < k; n++ {
			if err = i.startLocked(frames[sent+n]); err != nil {
				break
			}
		}
		i.publishTx()
		if n > 0 {
			i.flush()
		}
		i.sendMu.Unlock()
		i.pending.Add(int32(-k))
		sent += n
		if err != nil {
			return sent, fmt.Errorf("frame %d: %w", sent, err)
		}
	}
	return sent, nil
}

// flush ends a batch of Sends (the end of virtif_start). The send lock is
// held. Flush's error is not the caller's: every frame it concerns was
// committed by Send and is counted in OPackets, and the backend counts the
// failure itself (Flusher).
func (i *Interface) flush() {
	if i.flusher != nil {
		_ = i.flusher.Flush()
	}
}

// startLocked sends one frame, mirroring virtif_start's loop body. The
// send lock is held. It counts into txAcc, which the caller publishes
// once per batch (publishTx) to save atomics per frame.
func (i *Interface) startLocked(segs [][]byte) error {
	acc := &i.txAcc
	b := i.tx
	if b == nil {
		acc[cODrops]++
		return i.errs.nxio
	}
	if i.flags.Load()&uint32(FlagRunning|FlagUp) != uint32(FlagRunning|FlagUp) {
		acc[cODrops]++
		return i.errs.netdown
	}
	// Gather like if_virt.c, in one pass; where it would panic("lazy bum")
	// copy the tail from the MaxSegments-th non-empty segment on into
	// scratch, which becomes the last segment.
	n, total, coalesce := 0, 0, false
	for _, s := range segs {
		if len(s) == 0 {
			continue
		}
		total += len(s)
		if n < MaxSegments {
			i.iov[n] = s
			n++
			continue
		}
		if !coalesce {
			coalesce = true
			i.scratch = append(i.scratch[:0], i.iov[MaxSegments-1]...)
		}
		i.scratch = append(i.scratch, s...)
	}
	if n == 0 {
		acc[cOErrors]++
		return i.errs.inval
	}
	if total > int(i.mtu.Load())+ethHeaderLen+vlanTagLen {
		acc[cOErrors]++
		return i.errs.msgsize
	}
	if coalesce {
		i.iov[MaxSegments-1] = i.scratch
	}
	frame := i.iov[:n]
	var dst0 byte
	if len(frame[0]) > 0 {
		dst0 = frame[0][0]
	}
	if tp := i.taps.Load(); tp != nil {
		i.tapOut(*tp, frame, total)
	}
	// iov keeps the caller's segments referenced until a later frame
	// overwrites them or Down clears them: clearing them here costs more
	// than the rest of the send path.
	err := b.Send(frame)
	if err != nil {
		acc[cOErrors]++
	} else {
		acc[cOPackets]++
		acc[cOBytes] += uint64(total)
		if dst0&1 != 0 {
			acc[cOMcasts]++
		}
		if coalesce {
			acc[cCoalesced]++
		}
	}
	if err != nil {
		return opErr(i.name, "output", err)
	}
	return nil
}

// publishTx moves the send path's counts into a shard. The send lock is
// held.
func (i *Interface) publishTx() {
	s := i.ctr.acquire()
	for k := cOPackets; k <= cCoalesced; k++ {
		s.c[k] += i.txAcc[k]
		i.txAcc[k] = 0
	}
	i.ctr.release(s)
}

// tapOut shows a frame being sent to the taps (bpf_mtap before
// VIFHYPER_SEND), flattening segments into tapBuf.
func (i *Interface) tapOut(taps []Tap, frame [][]byte, total int) {
	flat := frame[0]
	if len(frame) > 1 {
		buf := i.tapBuf[:0]
		if cap(buf) < total {
			buf = make([]byte, 0, total)
		}
		for _, s := range frame {
			buf = append(buf, s...)
		}
		i.tapBuf = buf
		flat = buf
	}
	for _, t := range taps {
		t.Tap(flat, Out)
	}
}
