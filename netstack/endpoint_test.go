package netstack

import (
	"bytes"
	"sync"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/virtif-xdp/virtif-xdp/virtif"
)

// memPair is an endpoint on one interface of a segment and a second
// interface on it that records what arrives.
type memPair struct {
	ep   *Endpoint
	ifc  *virtif.Interface
	dst  tcpip.LinkAddress // the recording interface's MAC
	mu   sync.Mutex
	got  [][]byte
	keep bool
}

func newMemPair(t testing.TB, keep bool) *memPair {
	t.Helper()
	c := newCloner(t)
	seg := segName(t)
	p := &memPair{ifc: memIfc(t, c, seg), keep: keep}
	other := memIfc(t, c, seg)
	p.dst = tcpip.LinkAddress(other.HardwareAddr())
	other.SetInput(func(f []byte, _ bool) {
		if p.keep {
			p.mu.Lock()
			p.got = append(p.got, append([]byte(nil), f...))
			p.mu.Unlock()
		}
	})
	for _, ifc := range []*virtif.Interface{p.ifc, other} {
		if err := ifc.Up(); err != nil {
			t.Fatal(err)
		}
	}
	ep, err := NewEndpoint(p.ifc, EndpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ep.Close)
	p.ep = ep
	return p
}

// packet builds a PacketBuffer as the stack hands it to WritePackets:
// headers in the reserved front, the payload in views of its own, the
// Ethernet header pushed by AddHeader.
func packet(ep *Endpoint, dst tcpip.LinkAddress, payload ...[]byte) *stack.PacketBuffer {
	var buf buffer.Buffer
	for _, p := range payload {
		buf.Append(buffer.NewViewWithData(p))
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: 64, Payload: buf})
	copy(pkt.NetworkHeader().Push(4), "IPV4")
	pkt.NetworkProtocolNumber = header.IPv4ProtocolNumber
	pkt.EgressRoute.LocalLinkAddress = ep.LinkAddress()
	pkt.EgressRoute.RemoteLinkAddress = dst
	ep.AddHeader(pkt)
	return pkt
}

// WritePackets sends each packet as one frame, its views gathered in order.
func TestWritePackets(t *testing.T) {
	p := newMemPair(t, true)
	dst := p.dst
	var list stack.PacketBufferList
	for i := range 3 {
		list.PushBack(packet(p.ep, dst, []byte{'a' + byte(i)}, bytes.Repeat([]byte{'x'}, 100*i)))
	}
	if n, err := p.ep.WritePackets(list); n != 3 || err != nil {
		t.Fatalf("WritePackets = %d, %v", n, err)
	}
	list.Reset()
	deadline := testCtx(t)
	for {
		p.mu.Lock()
		n := len(p.got)
		p.mu.Unlock()
		if n == 3 {
			break
		}
		select {
		case <-deadline.Done():
			t.Fatalf("%d of 3 frames arrived", n)
		default:
		}
	}
	for i, f := range p.got {
		want := append([]byte(dst), p.ifc.HardwareAddr()...)
		want = append(want, 0x08, 0x00)
		want = append(want, "IPV4"...)
		want = append(want, 'a'+byte(i))
		want = append(want, bytes.Repeat([]byte{'x'}, 100*i)...)
		if !bytes.Equal(f, want) {
			t.Errorf("frame %d\n got % x\nwant % x", i, f, want)
		}
	}
	if st := p.ifc.Stats(); st.OPackets != 3 {
		t.Errorf("OPackets %d, want 3", st.OPackets)
	}
}

// A refused frame is skipped and the rest of the batch still goes.
func TestWritePacketsSkipsRefused(t *testing.T) {
	p := newMemPair(t, true)
	dst := p.dst
	var list stack.PacketBufferList
	list.PushBack(packet(p.ep, dst, []byte("one")))
	list.PushBack(packet(p.ep, dst, make([]byte, 3000))) // beyond the MTU: EMSGSIZE
	list.PushBack(packet(p.ep, dst, []byte("three")))
	n, err := p.ep.WritePackets(list)
	list.Reset()
	if _, ok := err.(*tcpip.ErrMessageTooLong); n != 2 || !ok {
		t.Fatalf("WritePackets = %d, %v; want 2, ErrMessageTooLong", n, err)
	}
	if st := p.ifc.Stats(); st.OPackets != 2 || st.OErrors != 1 {
		t.Errorf("OPackets %d OErrors %d, want 2 and 1", st.OPackets, st.OErrors)
	}
	if err := p.ifc.Down(); err != nil {
		t.Fatal(err)
	}
	list.PushBack(packet(p.ep, dst, []byte("down")))
	list.PushBack(packet(p.ep, dst, []byte("down")))
	n, err = p.ep.WritePackets(list)
	list.Reset()
	if _, ok := err.(*tcpip.ErrClosedForSend); n != 0 || !ok {
		t.Fatalf("WritePackets on a down interface = %d, %v; want 0, ErrClosedForSend", n, err)
	}
}

// Once warm, WritePackets allocates nothing of its own.
func TestWritePacketsAllocs(t *testing.T) {
	p := newMemPair(t, false)
	dst := p.dst
	var list stack.PacketBufferList
	for range 8 {
		list.PushBack(packet(p.ep, dst, make([]byte, 1000), make([]byte, 400)))
	}
	defer list.Reset()
	// Warm up past the mem backend's receive queue, whose buffers grow to
	// the frame size on first use.
	for range 2 * 1024 / 8 {
		if n, err := p.ep.WritePackets(list); n != 8 || err != nil {
			t.Fatal(n, err)
		}
	}
	if a := testing.AllocsPerRun(100, func() { _, _ = p.ep.WritePackets(list) }); a != 0 {
		t.Errorf("WritePackets allocates %.1f times per batch", a)
	}
}

// nullDispatcher takes packets and drops them.
type nullDispatcher struct{ n int }

func (d *nullDispatcher) DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {
	d.n++
}
func (*nullDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

func BenchmarkEndpointInput(b *testing.B) {
	p := newMemPair(b, false)
	var d nullDispatcher
	p.ep.Attach(&d)
	frame := make([]byte, 1514)
	copy(frame, p.ifc.HardwareAddr())
	frame[12], frame[13] = 0x08, 0x00
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		p.ep.input(frame, false)
	}
	if d.n == 0 {
		b.Fatal("nothing delivered")
	}
}

func BenchmarkEndpointWritePackets(b *testing.B) {
	p := newMemPair(b, false)
	dst := p.dst
	var list stack.PacketBufferList
	for range 32 {
		list.PushBack(packet(p.ep, dst, make([]byte, 1000), make([]byte, 400)))
	}
	defer list.Reset()
	b.ReportAllocs()
	b.SetBytes(32 * 1418)
	for b.Loop() {
		if _, err := p.ep.WritePackets(list); err != nil {
			b.Fatal(err)
		}
	}
}

// MTU and MAC are the interface's, and follow it.
func TestEndpointMTUAndMAC(t *testing.T) {
	p := newMemPair(t, false)
	if got := p.ep.MTU(); got != uint32(p.ifc.MTU()) || got != virtif.DefaultMTU {
		t.Errorf("MTU %d, interface %d", got, p.ifc.MTU())
	}
	p.ep.SetMTU(9000)
	if got := p.ifc.MTU(); got != 9000 || p.ep.MTU() != 9000 {
		t.Errorf("after SetMTU(9000): interface %d, endpoint %d", got, p.ep.MTU())
	}
	p.ep.SetMTU(1 << 20) // refused by the interface
	if got := p.ep.MTU(); got != 9000 {
		t.Errorf("after a refused SetMTU: %d, want 9000", got)
	}
	if got := p.ep.LinkAddress(); string(got) != string(p.ifc.HardwareAddr()) {
		t.Errorf("link address %s, interface %s", got, p.ifc.HardwareAddr())
	}
	if p.ep.ARPHardwareType() != header.ARPHardwareEther || p.ep.MaxHeaderLength() != header.EthernetMinimumSize {
		t.Error("not an Ethernet endpoint")
	}
}
