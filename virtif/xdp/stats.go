//go:build linux

package xdp

import (
	"strconv"
	"sync/atomic"

	"github.com/virtif-xdp/virtif-xdp/virtif"
	"github.com/virtif-xdp/virtif-xdp/xsk"
)

// AppendStats adds the vif's program counters (xdp_*; xdp_nometa counts
// its frames that passed to the host because the driver could not tag
// them), the NIC's socket counters (shared by the vifs on it), how the NIC's
// RX goroutines found the vif of the frames they handed out (rx_demux_solo:
// a lone vif's untagged frames, rx_demux_tag: by the program's tag,
// rx_demux_mac: by MAC on a driver without XDP metadata; all vifs of the
// NIC together), the multi-buffer frames they gathered from descriptor
// chains (rx_chains) and dropped (rx_chain_too_long: more than 18
// descriptors; rx_chain_truncated: cut off at the RX ring's end), and this
// backend's drops and chains sent (tx_chains).
func (b *Backend) AppendStats(dst []virtif.Stat) []virtif.Stat {
	n := b.nic
	add := func(name string, v uint64) { dst = append(dst, virtif.Stat{Name: name, Value: v}) }
	dst = b.appendSlotStats(dst)
	if c, err := n.steer.HostCounters(); err == nil {
		add("xdp_host_pass", c.Pass)
		add("xdp_host_nosocket", c.NoSocket)
		add("xdp_host_runt", c.Runt)
		add("xdp_host_nometa", c.NoMeta)
	}
	var ks xsk.Stats
	for i, q := range n.queues {
		if s, err := q.sock.Stats(); err == nil {
			if len(n.queues) > 1 {
				pfx := "q" + strconv.Itoa(q.id) + "_"
				add(pfx+"rx_frames", b.rxFrames[i].n.Load())
				add(pfx+"xsk_rx_dropped", s.RXDropped)
				add(pfx+"xsk_rx_ring_full", s.RXRingFull)
				add(pfx+"xsk_rx_fill_ring_empty", s.RXFillRingEmptyDescs)
			}
			ks.RXDropped += s.RXDropped
			ks.RXInvalidDescs += s.RXInvalidDescs
			ks.TXInvalidDescs += s.TXInvalidDescs
			ks.RXRingFull += s.RXRingFull
			ks.RXFillRingEmptyDescs += s.RXFillRingEmptyDescs
			ks.TXRingEmptyDescs += s.TXRingEmptyDescs
		}
	}
	add("xsk_rx_dropped", ks.RXDropped)
	add("xsk_rx_invalid_descs", ks.RXInvalidDescs)
	add("xsk_tx_invalid_descs", ks.TXInvalidDescs)
	add("xsk_rx_ring_full", ks.RXRingFull)
	add("xsk_rx_fill_ring_empty", ks.RXFillRingEmptyDescs)
	add("xsk_tx_ring_empty", ks.TXRingEmptyDescs)
	add("rx_frames", b.rxTotal())
	// Counters of the NIC's RX goroutines, summed over its queues.
	sum := func(name string, c func(q *queue) *paddedCounter) {
		var v uint64
		for _, q := range n.queues {
			v += c(q).n.Load()
		}
		add(name, v)
	}
	sum("rx_demux_solo", func(q *queue) *paddedCounter { return &q.bySolo })
	sum("rx_demux_tag", func(q *queue) *paddedCounter { return &q.byTag })
	sum("rx_demux_mac", func(q *queue) *paddedCounter { return &q.byMAC })
	sum("rx_chains", func(q *queue) *paddedCounter { return &q.chains })
	sum("rx_chain_too_long", func(q *queue) *paddedCounter { return &q.tooLong })
	sum("rx_chain_truncated", func(q *queue) *paddedCounter { return &q.truncated })
	sum("tx_idle_kicks", func(q *queue) *paddedCounter { return &q.idleKicks })
	add("rx_untagged", n.untagged.Load())
	add("rx_unclaimed", n.unclaimed.Load())
	return b.appendTXStats(dst)
}

// AppendOwnStats adds the counters that are the vif's alone, nothing the
// other vifs of the NIC or the host kernel share: its program counters
// (xdp_*, not xdp_host_*), the frames it received (rx_frames, not per
// queue) and its drops and chains sent (tx_*). No socket, queue or demux
// counter of the NIC: they count the other vifs' frames too, and their
// names give the NIC's queues away. What a stranger may read (the status
// page of virtif-xdp run) is this.
func (b *Backend) AppendOwnStats(dst []virtif.Stat) []virtif.Stat {
	dst = b.appendSlotStats(dst)
	dst = append(dst, virtif.Stat{Name: "rx_frames", Value: b.rxTotal()})
	return b.appendTXStats(dst)
}

// appendSlotStats adds the program's counters of the vif's slot.
func (b *Backend) appendSlotStats(dst []virtif.Stat) []virtif.Stat {
	add := func(name string, v uint64) { dst = append(dst, virtif.Stat{Name: name, Value: v}) }
	// After Close the slot may be another vif's: its counters are not ours.
	if c, err := b.nic.steer.Counters(b.slot); err == nil && !b.closed.Load() {
		add("xdp_unicast", c.Unicast)
		add("xdp_multicast", c.Multicast)
		add("xdp_arp", c.ARP)
		add("xdp_promisc", c.Promisc)
		add("xdp_nosocket", c.NoSocket)
		add("xdp_nometa", c.NoMeta)
	}
	return dst
}

// appendTXStats adds the backend's own send counters.
func (b *Backend) appendTXStats(dst []virtif.Stat) []virtif.Stat {
	add := func(name string, v uint64) { dst = append(dst, virtif.Stat{Name: name, Value: v}) }
	add("tx_ring_full", b.txRingFull.Load())
	add("tx_no_frame", b.txNoFrame.Load())
	add("tx_too_big", b.txTooBig.Load())
	add("tx_chains", b.txChains.Load())
	add("tx_kick_errors", b.txKickErrors.Load())
	add("tx_unsent_at_close", b.txUnsent.Load())
	return dst
}

// rxTotal is the frames the vif received, over all queues.
func (b *Backend) rxTotal() uint64 {
	var rx uint64
	for i := range b.rxFrames {
		rx += b.rxFrames[i].n.Load()
	}
	return rx
}

// paddedCounter is a counter alone on its cache line: each RX goroutine
// bumps its own.
type paddedCounter struct {
	n atomic.Uint64
	_ [56]byte
}

// add adds v; only the counter's one writer may call it.
func (c *paddedCounter) add(v uint64) {
	if v != 0 {
		c.n.Store(c.n.Load() + v)
	}
}
