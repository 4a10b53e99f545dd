package netstack

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/stack/gro"

	"github.com/virtif-xdp/virtif-xdp/virtif"
)

// EndpointOptions shape an Endpoint; the zero value is what a real NIC needs.
type EndpointOptions struct {
	// RXChecksumOffload makes the stack trust the checksums of received
	// frames. Only for links that never corrupt frames and may deliver
	// unfinished checksums, such as a veth whose sender offloads them
	// (CHECKSUM_PARTIAL frames reach XDP with the checksum not yet filled in).
	RXChecksumOffload bool
	// NoGRO turns generic receive offload off. GRO is on by default on an
	// interface whose backend ends its RX batches (virtif's EndsBatches;
	// both of ours do) and off on any other: the TCP segments of one flow
	// that arrive in one batch reach the stack coalesced into one packet
	// of up to 64 KiB (gVisor's stack/gro), as a NIC's GRO hands the
	// kernel, and are handed up at the end of the batch, so the stack
	// processes one segment where it would process dozens. Off, every
	// frame is handed up as it arrives.
	NoGRO bool
}

// EndpointStats are an endpoint's receive counters.
type EndpointStats struct {
	GRO        bool   // GRO is on
	GROFrames  uint64 // frames that went through GRO
	GROPackets uint64 // packets GRO handed to the stack: GROFrames-GROPackets were merged into others
	GRODropped uint64 // frames GRO held when the stack detached, dropped
}

// Endpoint is a gVisor link endpoint (stack.LinkEndpoint) over a virtif
// interface, with Ethernet framing (ARPHRD_ETHER). Its MTU and MAC are the
// interface's. It does not own the interface: Close detaches from it and
// leaves it open.
//
// Receive: each frame the interface hands up is copied once into a gVisor
// buffer (buffer.MakeWithData), because the frame is valid only during the
// call while a PacketBuffer must own its bytes; no other copy is made.
// With GRO (EndpointOptions.NoGRO) the packets go through one gVisor GRO
// engine, under a lock, and whatever it holds is handed up at the end of
// each RX batch (virtif's SetInputBatch). Checksums are verified once:
// GRO verifies those of the TCP segments it takes (a merged packet's
// checksums no longer hold, so the stack must not check them again) and
// the stack verifies every other packet's; see Capabilities.
// Send: WritePackets hands each packet's views to OutputBatch as segments, so
// a batch reaches the backend with one Flush and is never copied here.
type Endpoint struct {
	ifc  *virtif.Interface
	caps stack.LinkEndpointCapabilities

	// disp is the attached dispatcher, nil when detached. Swapped without
	// inMu so that Attach(nil), which the stack calls holding its own lock,
	// never waits for a delivery that may need that lock.
	disp atomic.Pointer[stack.NetworkDispatcher]
	// inMu is read-held for each delivery; Close write-locks it to wait
	// until none is in flight.
	inMu   sync.RWMutex
	closed bool // under inMu

	mu      sync.Mutex
	onClose func()

	// groMu serialises the GRO engine and every delivery made through it:
	// rxValid, which Capabilities reports while the stack takes the
	// packet, is the packet's. groOn is fixed at NewEndpoint.
	groOn                     bool
	groMu                     sync.Mutex
	gro                       gro.GRO
	rxValid                   atomic.Bool
	groIn, groOut, groDropped atomic.Uint64

	// wmu guards the send scratch, reused so that WritePackets allocates
	// nothing once it has seen its largest batch.
	wmu    sync.Mutex
	frames [][][]byte
	segs   [][][]byte
}

var _ stack.LinkEndpoint = (*Endpoint)(nil)

// NewEndpoint makes a link endpoint over ifc and becomes its input handler
// (SetInput), replacing any other: one endpoint per interface. ifc must have its backend (link string set): ENXIO otherwise.
// Bring the interface up before traffic is expected; frames arriving while no
// stack is attached are dropped.
func NewEndpoint(ifc *virtif.Interface, opts EndpointOptions) (*Endpoint, error) {
	if ifc == nil {
		return nil, fmt.Errorf("netstack: new endpoint: nil interface: %w", unix.EINVAL)
	}
	if ifc.Backend() == nil {
		return nil, fmt.Errorf("netstack: new endpoint on %s: no link string set: %w", ifc.Name(), unix.ENXIO)
	}
	e := &Endpoint{ifc: ifc, caps: stack.CapabilityResolutionRequired}
	if opts.RXChecksumOffload {
		e.caps |= stack.CapabilityRXChecksumOffload
	}
	e.groOn = !opts.NoGRO && ifc.EndsBatches()
	if !e.groOn {
		ifc.SetInput(e.input)
		return e, nil
	}
	e.gro.Init(true)
	e.gro.Dispatcher = groSink{e}
	ifc.SetInputBatch(e.input, e.endBatch)
	return e, nil
}

// Stats returns the endpoint's counters.
func (e *Endpoint) Stats() EndpointStats {
	return EndpointStats{GRO: e.groOn, GROFrames: e.groIn.Load(), GROPackets: e.groOut.Load(), GRODropped: e.groDropped.Load()}
}

// Interface returns the interface the endpoint sits on.
func (e *Endpoint) Interface() *virtif.Interface { return e.ifc }

// input is the interface's input handler (VIF_DELIVERPKT's if_input).
func (e *Endpoint) input(frame []byte, promisc bool) {
	e.inMu.RLock()
	defer e.inMu.RUnlock()
	dp := e.disp.Load()
	if dp == nil || e.closed || len(frame) < header.EthernetMinimumSize {
		return
	}
	// The one copy: frame belongs to the backend (UMEM) after we return.
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(frame)})
	defer pkt.DecRef()
	if !e.ParseHeader(pkt) {
		return
	}
	eth := header.Ethernet(pkt.LinkHeader().Slice())
	switch dst := eth.DestinationAddress(); {
	case promisc:
		pkt.PktType = tcpip.PacketOtherHost
	case dst == header.EthernetBroadcastAddress:
		pkt.PktType = tcpip.PacketBroadcast
	case header.IsMulticastEthernetAddress(dst):
		pkt.PktType = tcpip.PacketMulticast
	default:
		pkt.PktType = tcpip.PacketHost
	}
	if !e.groOn {
		(*dp).DeliverNetworkPacket(eth.Type(), pkt)
		return
	}
	e.groInput(eth.Type(), pkt)
}

// WritePackets sends pkts as one OutputBatch, each packet's views being the
// frame's segments. A frame the interface refuses is counted by the interface
// and skipped; the others still go. It returns how many were sent and the
// first error: ErrNoBufferSpace for back-pressure (ENOBUFS), ErrClosedForSend
// when the interface is down, ErrMessageTooLong for EMSGSIZE.
func (e *Endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	list := pkts.AsSlice()
	if len(list) == 0 {
		return 0, nil
	}
	e.wmu.Lock()
	defer e.wmu.Unlock()
	for len(e.segs) < len(list) {
		e.segs = append(e.segs, make([][]byte, 0, 4))
	}
	frames := e.frames[:0]
	for i, pkt := range list {
		segs := e.segs[i][:0]
		views, off := pkt.AsViewList()
		for v := views.Front(); v != nil; v = v.Next() {
			b := v.AsSlice()
			if off >= len(b) {
				off -= len(b)
				continue
			}
			segs = append(segs, b[off:])
			off = 0
		}
		e.segs[i] = segs
		frames = append(frames, segs)
	}
	e.frames = frames

	sent := 0
	var first error
	for rest := frames; len(rest) > 0; {
		n, err := e.ifc.OutputBatch(rest)
		sent += n
		if err == nil {
			break
		}
		if first == nil {
			first = err
		}
		if errors.Is(err, unix.ENETDOWN) || errors.Is(err, unix.ENXIO) {
			break // every other frame would fail the same way
		}
		if n >= len(rest) { // Flush failed after all were handed over
			break
		}
		rest = rest[n+1:]
	}
	// Drop references to the packets' views so pooled buffers are not pinned.
	for i := range list {
		clear(e.segs[i])
	}
	clear(e.frames)
	if first != nil {
		return sent, translate(first)
	}
	return sent, nil
}

// translate maps an interface send error to the stack's error.
func translate(err error) tcpip.Error {
	var errno unix.Errno
	if errors.As(err, &errno) {
		switch errno {
		case unix.ENOBUFS:
			return &tcpip.ErrNoBufferSpace{}
		case unix.ENETDOWN, unix.ENXIO:
			return &tcpip.ErrClosedForSend{}
		case unix.EMSGSIZE:
			return &tcpip.ErrMessageTooLong{}
		}
		return translateErrno(errno)
	}
	return &tcpip.ErrAborted{}
}

// MTU is the interface's MTU.
func (e *Endpoint) MTU() uint32 { return uint32(e.ifc.MTU()) }

// SetMTU sets the interface's MTU. The interface may refuse it (e.g. above
// the backend's MaxMTU); gVisor's interface has no way to report that, and
// MTU keeps telling the truth.
func (e *Endpoint) SetMTU(mtu uint32) { _ = e.ifc.SetMTU(int(mtu)) }

// MaxHeaderLength is the Ethernet header.
func (*Endpoint) MaxHeaderLength() uint16 { return header.EthernetMinimumSize }

// LinkAddress is the interface's MAC.
func (e *Endpoint) LinkAddress() tcpip.LinkAddress {
	return tcpip.LinkAddress(e.ifc.HardwareAddr())
}

// SetLinkAddress changes the interface's MAC; the interface allows that only
// while it is down.
func (e *Endpoint) SetLinkAddress(addr tcpip.LinkAddress) {
	_ = e.ifc.SetHardwareAddr(net.HardwareAddr(addr))
}

// Capabilities: link resolution (ARP, NDP) is required; checksums are computed
// by the stack unless EndpointOptions.RXChecksumOffload. With GRO, the
// RX checksum offload bit also stands, while GRO hands the stack a packet
// whose checksums GRO verified, for that packet: gVisor's NIC sets each
// received packet's RXChecksumValidated from this bit as it takes it, and
// GRO's deliveries are serialised (groMu), so the bit read then is the
// packet's. No other part of the stack reads the bit.
func (e *Endpoint) Capabilities() stack.LinkEndpointCapabilities {
	if e.rxValid.Load() {
		return e.caps | stack.CapabilityRXChecksumOffload
	}
	return e.caps
}

// Attach starts delivering received frames to d; nil stops it (the NIC is
// being removed). It does not wait for a delivery in flight: Close does.
func (e *Endpoint) Attach(d stack.NetworkDispatcher) {
	if d == nil {
		e.disp.Store(nil)
		return
	}
	e.disp.Store(&d)
}

// IsAttached reports whether a dispatcher is attached.
func (e *Endpoint) IsAttached() bool { return e.disp.Load() != nil }

// Wait returns at once: the endpoint owns no goroutine (the interface's
// backend does the receiving).
func (*Endpoint) Wait() {}

// ARPHardwareType is Ethernet.
func (*Endpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }

// AddHeader pushes the Ethernet header.
func (*Endpoint) AddHeader(pkt *stack.PacketBuffer) {
	eth := header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize))
	eth.Encode(&header.EthernetFields{
		SrcAddr: pkt.EgressRoute.LocalLinkAddress,
		DstAddr: pkt.EgressRoute.RemoteLinkAddress,
		Type:    pkt.NetworkProtocolNumber,
	})
}

// ParseHeader consumes the Ethernet header.
func (*Endpoint) ParseHeader(pkt *stack.PacketBuffer) bool {
	_, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	return ok
}

// Close detaches the endpoint from its interface: it removes its input
// handler and waits until no frame is being delivered to the stack. The
// interface stays open. Calling it twice is fine. The stack calls it when the
// NIC is removed (Stack.RemoveNIC, Stack.Destroy).
func (e *Endpoint) Close() {
	e.disp.Store(nil)
	e.inMu.Lock()
	wasClosed := e.closed
	e.closed = true
	if !wasClosed && e.groOn {
		e.groMu.Lock()
		e.gro.Flush() // no dispatcher: counted in GRODropped, released
		e.groMu.Unlock()
	}
	e.inMu.Unlock()
	if wasClosed {
		return
	}
	e.ifc.SetInput(nil)
	e.mu.Lock()
	fn := e.onClose
	e.onClose = nil
	e.mu.Unlock()
	if fn != nil {
		fn()
	}
}

// SetOnCloseAction sets a function Close runs once.
func (e *Endpoint) SetOnCloseAction(fn func()) {
	e.mu.Lock()
	e.onClose = fn
	e.mu.Unlock()
}
