package netstack

import (
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// groInput takes a received IP packet (its link header consumed) when GRO
// is on. A TCP segment GRO can coalesce has its checksums verified here,
// once, and goes to the GRO engine marked verified; anything else, and a
// segment whose checksums are wrong, goes to the stack at once with its
// checksums unverified, for the stack to check (and count).
//
// The engine is never left to verify a checksum itself: gVisor's GRO
// (stack/gro at this module version) sums from the start of the packet's
// buffer, which holds the consumed Ethernet header, not from the network
// header, so it finds every correct checksum wrong (and would pass the odd
// corrupt one). Nor is it given a frame with Ethernet padding, which it
// would count as TCP payload and merge: only the stack trims that.
func (e *Endpoint) groInput(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	pkt.NetworkProtocolNumber = proto
	trusted := e.caps&stack.CapabilityRXChecksumOffload != 0
	ok := groSegment(proto, pkt, trusted)
	e.groMu.Lock()
	if ok {
		pkt.RXChecksumValidated = true
		e.groIn.Add(1)
		e.gro.Enqueue(pkt)
	} else {
		pkt.RXChecksumValidated = trusted
		e.deliver(proto, pkt)
	}
	e.groMu.Unlock()
}

// groSegment reports whether pkt is a TCP segment over IPv4 without
// options or fragmentation, or directly over IPv6, whose lengths hold and
// whose checksums are right (not checked when trusted), with nothing after
// its IP length.
func groSegment(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer, trusted bool) bool {
	d := pkt.Data()
	var ipLen, total int
	var src, dst tcpip.Address
	switch proto {
	case header.IPv4ProtocolNumber:
		b, ok := d.PullUp(header.IPv4MinimumSize)
		if !ok {
			return false
		}
		ip := header.IPv4(b)
		if header.IPVersion(b) != header.IPv4Version || ip.HeaderLength() != header.IPv4MinimumSize ||
			ip.Protocol() != uint8(header.TCPProtocolNumber) || ip.FragmentOffset() != 0 || ip.Flags()&header.IPv4FlagMoreFragments != 0 {
			return false
		}
		if !trusted && !ip.IsChecksumValid() {
			return false
		}
		ipLen, total, src, dst = header.IPv4MinimumSize, int(ip.TotalLength()), ip.SourceAddress(), ip.DestinationAddress()
	case header.IPv6ProtocolNumber:
		b, ok := d.PullUp(header.IPv6MinimumSize)
		if !ok {
			return false
		}
		ip := header.IPv6(b)
		if header.IPVersion(b) != header.IPv6Version || ip.TransportProtocol() != header.TCPProtocolNumber {
			return false
		}
		ipLen, total, src, dst = header.IPv6MinimumSize, header.IPv6MinimumSize+int(ip.PayloadLength()), ip.SourceAddress(), ip.DestinationAddress()
	default:
		return false
	}
	if total < ipLen+header.TCPMinimumSize || total != d.Size() {
		return false // too short, or Ethernet padding (a tiny frame) to leave to the stack
	}
	b, ok := d.PullUp(total) // one view: a frame is copied into one buffer chunk
	if !ok {
		return false
	}
	tcp := header.TCP(b[ipLen:])
	if off := int(tcp.DataOffset()); off < header.TCPMinimumSize || off > len(tcp) {
		return false
	}
	if trusted {
		return true
	}
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(tcp)))
	return checksum.Checksum(tcp, xsum) == 0xffff
}

// endBatch is the interface's end-of-batch handler: GRO hands up what it
// holds.
func (e *Endpoint) endBatch() {
	e.inMu.RLock()
	defer e.inMu.RUnlock()
	if e.closed {
		return
	}
	e.groMu.Lock()
	e.gro.Flush()
	e.groMu.Unlock()
}

// groSink is the GRO engine's dispatcher: it hands a packet to the stack,
// saying through rxValid whether its checksums were verified (by GRO: for
// a packet it merged they are stale and must not be checked again) or are
// for the stack to verify.
type groSink struct{ e *Endpoint }

func (g groSink) DeliverNetworkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if !g.e.deliver(proto, pkt) {
		g.e.groDropped.Add(1)
		return
	}
	g.e.groOut.Add(1)
}

// deliver hands pkt to the stack with groMu held, telling it through
// rxValid whether pkt's checksums were verified (Capabilities); false when
// no stack is attached.
func (e *Endpoint) deliver(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) bool {
	dp := e.disp.Load()
	if dp == nil {
		return false
	}
	e.rxValid.Store(pkt.RXChecksumValidated)
	(*dp).DeliverNetworkPacket(proto, pkt)
	e.rxValid.Store(false)
	return true
}

func (g groSink) DeliverLinkPacket(proto tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	if dp := g.e.disp.Load(); dp != nil {
		(*dp).DeliverLinkPacket(proto, pkt)
	}
}
