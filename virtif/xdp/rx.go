//go:build linux

package xdp

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/bpf"
	"github.com/virtif-xdp/virtif-xdp/xsk"
)

// rxLoop drains one queue: it takes a batch of descriptors, hands each frame
// to the vif the program tagged it for (VIF_DELIVERPKT), and gives the frames
// back to the fill ring.
func (n *nic) rxLoop(q *queue) {
	defer n.wg.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	q.tid.Store(int32(unix.Gettid()))
	defer q.tid.Store(0)
	var descs [rxBatch]xsk.Desc
	spin := n.cfg.BusyPoll > 0 || n.cfg.RXWait == RXWaitSpin
	var (
		lastTX    = n.txSeq.Load()
		txAtRX    = lastTX  // txSeq after the last batch of frames
		txSeen    time.Time // when txSeq was last seen moving
		rxSeen    time.Time // when frames last arrived
		nap       = minNap
		idle      uint
		lastCheck = time.Now()
		napiRead  = n.cfg.BusyPoll == 0
	)
	cur := &n.era0 // the era of the next frame on the ring
	for !n.stop.Load() {
		at := q.sock.RXConsumed()
		got := q.sock.Receive(descs[:])
		if got == 0 {
			// Every mode checks that the NIC is still there and up, at
			// most every checkEvery: a spinning loop never reaches Wait,
			// where poll mode would see the socket's error, and a NIC set
			// down reports nothing to its sockets. Spinning looks at the
			// clock only every spinChecks empty polls.
			if idle++; (!spin || idle%spinChecks == 0) && time.Since(lastCheck) >= checkEvery {
				lastCheck = time.Now()
				if err := n.alive(q); err != nil {
					if !n.stop.Load() {
						n.fail(err)
					}
					return
				}
				n.checkMeta()
				n.kickStranded(q)
			}
			if spin {
				continue
			}
			// While the NIC transmits and nothing arrives, nap instead of
			// sleeping in poll(2); see txSeq.
			now := time.Now()
			if seq := n.txSeq.Load(); seq != lastTX {
				lastTX, txSeen = seq, now
			}
			txBusy := now.Sub(txSeen) < quietTime
			if txBusy && now.Sub(rxSeen) >= rxQuiet && lastTX-txAtRX >= napTX {
				rxNaps.Add(1)
				time.Sleep(nap)
				nap = min(2*nap, maxNap)
				continue
			}
			wait := pollWait
			if txBusy {
				// Receiving and transmitting: poll, but come back to nap
				// once nothing has arrived for rxQuiet.
				wait = rxQuiet
			} else {
				n.pollers.Add(1)
				if n.txSeq.Load() != lastTX { // TX started meanwhile
					n.pollers.Add(-1)
					continue
				}
			}
			// A finite timeout: a NIC that goes away stops poll(2) from
			// reporting anything, and Wait then returns its SO_ERROR.
			_, err := q.sock.Wait(wait)
			if !txBusy {
				n.pollers.Add(-1)
			}
			if err != nil {
				if !errors.Is(err, net.ErrClosed) && !n.stop.Load() {
					n.fail(n.queueErr(q, err))
				}
				return
			}
			continue
		}
		nap, rxSeen = minNap, time.Now()
		if !napiRead {
			napiRead = true
			q.napiID.Store(napiIDOf(q.sock))
		}
		q.batch.Add(1)
		n.rxDepth.Add(1)
		cur = n.demux(q, cur, descs[:got], at)
		n.endBatches()
		q.rxDone.Store(at + uint32(got))
		q.batch.Add(1)
		q.sock.Release(descs[:got])
		n.rxDepth.Add(-1)
		if set := n.flushBits.Swap(0); set != 0 {
			n.flushDeferred(set)
		}
		txAtRX = n.txSeq.Load()
	}
}

// endBatches tells every vif of the NIC that an RX batch has ended
// (virtif's EndBatch), inside the batch, so a departing vif is not told
// after its release and sends it causes are kicked once (flushBits).
func (n *nic) endBatches() {
	for i := range n.vifs {
		if b := n.vifs[i].Load(); b != nil && b.endBatch != nil {
			b.endBatch()
		}
	}
}

// demux hands each frame of a batch to the vif it was steered to
// (VIF_DELIVERPKT), or counts it: rx_unclaimed for a tag whose vif is gone,
// rx_untagged for an untagged frame whose vif is gone or unknown (by MAC:
// no rule names a vif on the NIC). descs[i] sat at RX ring index at+i and e
// is the era of descs[0]; it returns the era of the frame after the batch.
// How each frame's vif was found is counted per queue (bySolo, byTag,
// byMAC), once per batch.
//
// A frame in a chain of descriptors (multi-buffer) is gathered into the
// queue's buffer and delivered as one (see chain); it belongs to the era
// of its first descriptor.
func (n *nic) demux(q *queue, e *era, descs []xsk.Desc, at uint32) *era {
	var solo, byTag, byMAC uint64
	i := 0
	if q.skipRest {
		// The rest of a chain dropped at the end of the last batch.
		k, whole := xsk.Packet(descs)
		i, q.skipRest = k, !whole
	}
	for i < len(descs) {
		end := len(descs)
		nx := e.next.Load()
		if nx != nil && nx.ready.Load() {
			d := int32(nx.start[q.idx] - (at + uint32(i)))
			if d <= 0 {
				e = nx
				continue
			}
			end = min(end, i+int(d))
		}
		if o := e.owner; o != nil && nx == nil && !n.readTags.Load() {
			// The lone vif's era and no change coming: its frames, untagged.
			if n.vifs[o.slot].Load() != o {
				n.untagged.Add(uint64(end - i))
				i = end
				continue
			}
			c, deliver := &o.rxFrames[q.idx].n, o.delivers[q.idx]
			for ; i < end; i++ {
				f := q.sock.Frame(descs[i])
				if descs[i].Options&xsk.PktContd != 0 {
					var ok bool
					if f, i, ok = q.chain(descs, i); !ok {
						continue
					}
				}
				solo++
				c.Store(c.Load() + 1) // one writer: no locked add
				deliver(f)
			}
			continue
		}
		// Untagged frames are the owner's, or found by MAC; in a tagging
		// era, those the program steered after it stopped tagging for the
		// next era: the next era's owner's, or found by MAC.
		untagged, lookup := e.owner, e.mac
		if untagged == nil && !e.mac && nx != nil {
			untagged, lookup = nx.owner, nx.mac
		}
		if untagged != nil && n.vifs[untagged.slot].Load() != untagged {
			untagged = nil
		}
		var rules *bpf.Rules
		if lookup {
			rules = n.steer.Rules()
		}
		// A MAC era's frames carry no tag: the program stopped tagging
		// before the era began, and the eras before wiped what they read.
		readTags := !e.mac || n.readTags.Load()
		for ; i < end; i++ {
			b := untagged
			var meta []byte
			if readTags {
				meta = q.sock.Metadata(descs[i], bpf.MetaLen)
			}
			f, ok := q.sock.Frame(descs[i]), true
			if descs[i].Options&xsk.PktContd != 0 {
				f, i, ok = q.chain(descs, i)
			}
			vif, tagged := bpf.VifFromMeta(meta)
			if tagged {
				// Wipe the tag: a frame received into this UMEM frame
				// later without one must not look tagged.
				clear(meta)
			}
			if !ok {
				continue // a chain dropped and counted
			}
			if tagged {
				if b = nil; vif < len(n.vifs) {
					b = n.vifs[vif].Load()
				}
				if b == nil {
					n.unclaimed.Add(1)
					continue
				}
				byTag++
			} else if lookup {
				b = nil
				if vif, _ := rules.Match(f); vif >= 0 && vif < len(n.vifs) {
					b = n.vifs[vif].Load()
				}
				if b != nil {
					byMAC++
				}
			} else if b != nil {
				solo++
			}
			if b == nil {
				n.untagged.Add(1)
				continue
			}
			c := &b.rxFrames[q.idx].n
			c.Store(c.Load() + 1)
			b.delivers[q.idx](f)
		}
	}
	q.bySolo.add(solo)
	q.byTag.add(byTag)
	q.byMAC.add(byMAC)
	return e
}

// chain gathers the frame whose chain of descriptors begins at descs[i]
// into the queue's buffer and returns it, with the index of the chain's last
// descriptor; ok is false when the chain is dropped, counted: longer than maxChain
// descriptors or the buffer (tooLong), or cut off at the ring's end
// (truncated). A chain that runs to the end of descs goes on in the next
// batch (xsk's Receive returns a longer chain alone): its rest is skipped.
func (q *queue) chain(descs []xsk.Desc, i int) (frame []byte, last int, ok bool) {
	k, whole := xsk.Packet(descs[i:])
	last = i + k - 1
	if !whole {
		q.skipRest = true
		if k >= maxChain {
			q.tooLong.add(1)
		} else {
			q.truncated.add(1)
		}
		return nil, last, false
	}
	if k > maxChain {
		q.tooLong.add(1)
		return nil, last, false
	}
	g := q.gather[:0]
	for _, d := range descs[i : i+k] {
		f := q.sock.Frame(d)
		if len(g)+len(f) > cap(g) {
			q.tooLong.add(1)
			return nil, last, false
		}
		g = append(g, f...)
	}
	q.chains.add(1)
	return g, last, true
}

const (
	checkEvery = 100 * time.Millisecond // how often an idle RX goroutine checks the NIC
	goneGrace  = 50 * time.Millisecond  // how long a NIC found down may take to vanish (being deleted)
	spinChecks = 1024                   // empty polls between clock reads when spinning
)

const (
	hintGone = " (the NIC was removed or its driver detached the socket; close the vif)"
	hintDown = " (the NIC was set down; close the vif, and open it again once the NIC is up)"
)

// alive checks the socket's pending error (ENETDOWN once the NIC was
// removed) and the NIC's IFF_UP: a NIC set down is an error too, as it is for
// an AF_PACKET socket (libpcap's "The interface went down"). A NIC that is
// up without carrier (its cable, or its veth peer, down) is not: it may come
// back, and then frames arrive again.
func (n *nic) alive(q *queue) error {
	if err := faultAt("rx", q.id); err != nil {
		return n.queueErr(q, err)
	}
	if _, err := q.sock.Wait(0); err != nil {
		return n.queueErr(q, err)
	}
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return nil
	}
	ifr.SetUint32(uint32(n.ifindex))
	if err := unix.IoctlIfreq(n.probe, unix.SIOCGIFNAME, ifr); err != nil {
		if errors.Is(err, unix.ENODEV) {
			return n.queueErr(q, unix.ENETDOWN)
		}
		return nil // nothing said about the NIC: look again later
	}
	if err := unix.IoctlIfreq(n.probe, unix.SIOCGIFFLAGS, ifr); err != nil {
		return nil
	}
	if ifr.Uint16()&unix.IFF_UP == 0 {
		// Deleting a NIC sets it down before it unregisters it: look again
		// after a moment, so a NIC on its way out is reported removed.
		time.Sleep(goneGrace)
		ifr.SetUint32(uint32(n.ifindex))
		if err := unix.IoctlIfreq(n.probe, unix.SIOCGIFNAME, ifr); errors.Is(err, unix.ENODEV) {
			return n.queueErr(q, unix.ENETDOWN)
		}
		return fmt.Errorf("xdp: %s queue %d: %w%s", n.cfg.Ifname, q.id, unix.ENETDOWN, hintDown)
	}
	if n.sg {
		if err := unix.IoctlIfreq(n.probe, unix.SIOCGIFMTU, ifr); err == nil {
			n.linkMTU.Store(int32(ifr.Uint32())) // what MaxMTU allows
		}
	}
	return nil
}

// kickStranded, from an idle RX goroutine's check, kicks the kernel for
// frames still on q's TX ring. Flush gives up after drainStall on a ring the
// kernel takes nothing from (a stalled device queue), and in copy mode the
// kernel sends only when kicked: without this, frames Send accepted would
// wait for the next Send, for ever if none comes. A vif holding the TX lock
// is sending, and will kick itself.
func (n *nic) kickStranded(q *queue) {
	if !q.txMu.TryLock() {
		return
	}
	defer q.txMu.Unlock()
	if q.staged != 0 || q.sock.TXPending() == 0 {
		return // staged frames belong to a Send batch not yet pushed
	}
	if err := q.sock.Kick(); err == nil {
		q.idleKicks.add(1)
	}
	q.sock.Complete()
}

// queueErr says which NIC queue failed, and what to do when the NIC went.
func (n *nic) queueErr(q *queue, err error) error {
	hint := ""
	if errors.Is(err, unix.ENETDOWN) {
		hint = hintGone
	}
	return fmt.Errorf("xdp: %s queue %d: %w%s", n.cfg.Ifname, q.id, err, hint)
}
