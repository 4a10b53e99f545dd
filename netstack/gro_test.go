//go:build linux

package netstack

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/virtif"
)

// receiveOne reads the first connection l accepts to its end (within two
// minutes: generous, on a shared and slow machine), answers one byte (a
// sender waiting for it knows everything arrived) and sends what it read.
func receiveOne(l net.Listener) <-chan []byte {
	got := make(chan []byte, 1)
	go func() {
		defer close(got)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
		b, _ := io.ReadAll(c)
		_, _ = c.Write([]byte{1})
		got <- b
	}()
	return got
}

// A TCP transfer from the peer's kernel into the vif's stack arrives byte
// for byte with GRO on (the default) and off (NoGRO). On, GRO took every
// frame and handed the stack fewer packets than frames: segments were
// merged; off, it took none.
func TestIntegrationGRO(t *testing.T) {
	labtest.RequireRoot(t)
	const size = 8 << 20
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	for _, noGRO := range []bool{false, true} {
		lab := labtest.NewT(t, netlab.Options{})
		peerTxChecksumOff(t, lab)
		ifc := xdpIfc(t, lab, "")
		if err := ifc.Up(); err != nil {
			t.Fatal(err)
		}
		st, err := NewStack(ifc, StackConfig{Endpoint: EndpointOptions{NoGRO: noGRO}})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.AddAddress(srv4); err != nil {
			t.Fatal(err)
		}
		l, err := st.ListenTCP(netip.AddrPortFrom(netip.Addr{}, sinkPort))
		if err != nil {
			t.Fatal(err)
		}
		got := receiveOne(l)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // generous: a shared, slow machine
		c, err := lab.DialContext(netlab.Peer)(ctx, "tcp", netip.AddrPortFrom(srv4.Addr(), sinkPort).String())
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
		if _, err := io.Copy(c, bytes.NewReader(data)); err != nil {
			t.Errorf("NoGRO=%v: send: %v", noGRO, err)
		}
		_ = c.(*net.TCPConn).CloseWrite()
		var one [1]byte
		_, _ = io.ReadFull(c, one[:])
		c.Close()
		cancel()
		if b := <-got; !bytes.Equal(b, data) {
			t.Errorf("NoGRO=%v: received %d bytes, not the %d sent", noGRO, len(b), len(data))
		}
		s := st.Endpoint().Stats()
		t.Logf("NoGRO=%v: %+v, interface rx %d frames", noGRO, s, ifc.Stats().IPackets)
		switch {
		case noGRO && (s.GRO || s.GROFrames != 0):
			t.Errorf("NoGRO: %+v, want GRO off and no frames through it", s)
		case !noGRO && !s.GRO:
			t.Errorf("GRO off by default on an xdp vif (EndsBatches %v)", ifc.EndsBatches())
		case !noGRO && (s.GROFrames < size/1500 || s.GROPackets >= s.GROFrames/2):
			t.Errorf("GRO: %d frames in, %d packets to the stack; want at least %d frames, merged to fewer than half", s.GROFrames, s.GROPackets, size/1500)
		}
		l.Close()
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	}
}

// peerTCPTap classifies the checksums of the peer's TCP frames to the
// stack (dst 198.18.0.3): full (they verify), partial (the field holds the
// pseudo-header sum only, CHECKSUM_PARTIAL's), or neither.
type peerTCPTap struct {
	mu                     sync.Mutex
	full, partial, neither int
}

func (p *peerTCPTap) Tap(f []byte, dir virtif.Direction) {
	if dir != virtif.In || len(f) < header.EthernetMinimumSize+header.IPv4MinimumSize+header.TCPMinimumSize ||
		header.Ethernet(f).Type() != header.IPv4ProtocolNumber {
		return
	}
	ip := header.IPv4(f[header.EthernetMinimumSize:])
	if ip.Protocol() != uint8(header.TCPProtocolNumber) || ip.DestinationAddress() != tcpip.AddrFrom4(srv4.Addr().As4()) ||
		int(ip.TotalLength()) > len(ip) || ip.HeaderLength() != header.IPv4MinimumSize {
		return
	}
	tcp := header.TCP(ip[header.IPv4MinimumSize:ip.TotalLength()])
	if int(tcp.DataOffset()) >= len(tcp) {
		// No payload: the kernel sends some of these (a TIME_WAIT ACK, a
		// RST: ip_send_unicast_reply) with a full checksum whatever the
		// offload; the claim is about the segments of the stream.
		return
	}
	pseudo := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(tcp)))
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case checksum.Checksum(tcp, pseudo) == 0xffff:
		p.full++
	case tcp.Checksum() == pseudo:
		p.partial++
	default:
		p.neither++
	}
}

// What a vif on a veth receives, on real frames: with the peer's transmit
// checksum offload on, every TCP segment with payload from the peer's kernel carries the
// unfinished checksum of CHECKSUM_PARTIAL (the pseudo-header sum), none a
// full one; with it off, every frame's checksum verifies. So the default
// (verify) is right with offload off, and only RXChecksumOffload makes
// offload on work; the connection here trusts checksums to see both.
func TestIntegrationVethPartialChecksum(t *testing.T) {
	labtest.RequireRoot(t)
	for _, peerOffload := range []bool{true, false} {
		lab := labtest.NewT(t, netlab.Options{})
		if err := lab.SetTxChecksum(netlab.Peer, peerOffload); err != nil {
			t.Fatal(err)
		}
		ifc := xdpIfc(t, lab, "")
		tap := &peerTCPTap{}
		if err := ifc.AddTap(tap); err != nil {
			t.Fatal(err)
		}
		h, err := NewHost(ifc, HostConfig{
			Addrs: []netip.Prefix{srv4}, EchoPort: 7,
			Stack: StackConfig{Endpoint: EndpointOptions{RXChecksumOffload: true}},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		c, err := lab.DialContext(netlab.Peer)(ctx, "tcp", "198.18.0.3:7")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		echoCheck(t, c, 100000)
		c.Close()
		if err := h.Close(); err != nil {
			t.Error(err)
		}
		tap.mu.Lock()
		full, partial, neither := tap.full, tap.partial, tap.neither
		tap.mu.Unlock()
		t.Logf("peer tx offload %v: %d frames with full checksums, %d partial, %d neither", peerOffload, full, partial, neither)
		switch {
		case neither != 0:
			t.Errorf("peer tx offload %v: %d frames with a checksum neither full nor partial", peerOffload, neither)
		case peerOffload && (partial < 10 || full != 0):
			t.Errorf("peer tx offload on: %d partial, %d full; want only partial checksums", partial, full)
		case !peerOffload && (full < 10 || partial != 0):
			t.Errorf("peer tx offload off: %d full, %d partial; want only full checksums", full, partial)
		}
	}
}

// Between two stacks on the mem backend, a bulk transfer over IPv4 and
// over IPv6 arrives byte for byte through GRO, which merged segments.
func TestGROMem(t *testing.T) {
	c := newCloner(t)
	seg := segName(t)
	var sts [2]*Stack
	for i, ps := range [][]netip.Prefix{{srv4, srv6}, {cli4, cli6}} {
		ifc := memIfc(t, c, seg)
		if err := ifc.Up(); err != nil {
			t.Fatal(err)
		}
		st, err := NewStack(ifc, StackConfig{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		for _, p := range ps {
			if err := st.AddAddress(p); err != nil {
				t.Fatal(err)
			}
		}
		sts[i] = st
	}
	data := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyz"), (4<<20)/36)
	for _, dst := range []netip.Addr{srv4.Addr(), srv6.Addr()} {
		l, err := sts[0].ListenTCP(netip.AddrPortFrom(dst, sinkPort))
		if err != nil {
			t.Fatal(err)
		}
		got := receiveOne(l)
		before := sts[0].Endpoint().Stats()
		conn, err := sts[1].DialTCP(testCtx(t), netip.AddrPortFrom(dst, sinkPort))
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetWriteDeadline(time.Now().Add(time.Minute))
		if _, err := conn.Write(data); err != nil {
			t.Fatal(err)
		}
		conn.Close()
		if b := <-got; !bytes.Equal(b, data) {
			t.Errorf("%s: received %d bytes, not the %d sent", dst, len(b), len(data))
		}
		l.Close()
		s := sts[0].Endpoint().Stats()
		frames, pkts := s.GROFrames-before.GROFrames, s.GROPackets-before.GROPackets
		t.Logf("%s: GRO %d frames -> %d packets", dst, frames, pkts)
		if !s.GRO || frames < uint64(len(data)/1500) || pkts >= frames {
			t.Errorf("%s: GRO %v, %d frames -> %d packets; want GRO on and segments merged", dst, s.GRO, frames, pkts)
		}
	}
}

// tcpFrame is an Ethernet frame to dst carrying a TCP segment of one flow
// (198.18.0.4:40000 -> 198.18.0.3:5001) with seq and n payload bytes, its
// checksums finished.
func tcpFrame(dst tcpip.LinkAddress, seq uint32, n int) []byte {
	const hl = header.EthernetMinimumSize + header.IPv4MinimumSize + header.TCPMinimumSize
	f := make([]byte, hl+n)
	for i := range n {
		f[hl+i] = byte(seq) + byte(i)
	}
	header.Ethernet(f).Encode(&header.EthernetFields{SrcAddr: "\x02\x00\x00\x00\x00\x04", DstAddr: dst, Type: header.IPv4ProtocolNumber})
	ip := header.IPv4(f[header.EthernetMinimumSize:])
	src, dstIP := tcpip.AddrFrom4(cli4.Addr().As4()), tcpip.AddrFrom4(srv4.Addr().As4())
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(ip)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: src, DstAddr: dstIP})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(ip[header.IPv4MinimumSize:])
	tcp.Encode(&header.TCPFields{SrcPort: 40000, DstPort: sinkPort, SeqNum: seq, AckNum: 1, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagAck, WindowSize: 65535})
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dstIP, uint16(len(tcp)))
	tcp.SetChecksum(^checksum.Checksum(tcp, xsum))
	return f
}

// The receive path with GRO allocates nothing per frame once warm: 32
// segments of one flow merged into one packet, handed up at the batch's
// end. A segment with a wrong checksum is not merged: the stack gets it
// on its own, unverified.
func TestGROInputAllocs(t *testing.T) {
	p := newMemPair(t, false)
	if !p.ep.Stats().GRO {
		t.Fatal("GRO off on a mem interface")
	}
	var d nullDispatcher
	p.ep.Attach(&d)
	mac := tcpip.LinkAddress(p.ifc.HardwareAddr())
	frames := make([][]byte, 32)
	for i := range frames {
		frames[i] = tcpFrame(mac, uint32(1000+i*1000), 1000)
	}
	batch := func() {
		for _, f := range frames {
			p.ep.input(f, false)
		}
		p.ep.endBatch()
	}
	batch()
	if s := p.ep.Stats(); d.n != 1 || s.GROFrames != 32 || s.GROPackets != 1 {
		t.Fatalf("one batch: %d packets delivered, %+v; want 32 frames merged into 1", d.n, s)
	}
	if !raceEnabled { // the race detector changes allocation behaviour (sync.Pool drops items)
		if a := testing.AllocsPerRun(100, batch); a != 0 {
			t.Errorf("a batch of 32 segments allocates %.1f times", a)
		}
	}
	bad := tcpFrame(mac, 1000, 1000)
	bad[len(bad)-1]++
	before := p.ep.Stats()
	p.ep.input(bad, false)
	p.ep.endBatch()
	if s := p.ep.Stats(); s.GROFrames != before.GROFrames {
		t.Errorf("a segment with a wrong checksum went through GRO: %+v", s)
	}
}
