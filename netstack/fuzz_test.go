package netstack

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// fuzzSeeds are frames a stranger on the segment could send the host:
// ARP, ping, TCP to its services, neighbour discovery, a VLAN tag, runts.
func fuzzSeeds(mac net.HardwareAddr) [][]byte {
	peer := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x09}
	eth := func(dst net.HardwareAddr, typ layers.EthernetType) *layers.Ethernet {
		return &layers.Ethernet{SrcMAC: peer, DstMAC: dst, EthernetType: typ}
	}
	ip4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP,
		SrcIP: net.IP{198, 18, 0, 2}, DstIP: srv4.Addr().AsSlice()}
	ip6 := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: layers.IPProtocolICMPv6,
		SrcIP: net.ParseIP("fd00:198:18::2"), DstIP: net.ParseIP("ff02::1:ff00:3")}
	syn := func(port layers.TCPPort) *layers.TCP {
		t := &layers.TCP{SrcPort: 40000, DstPort: port, SYN: true, Seq: 1, Window: 65535}
		_ = t.SetNetworkLayerForChecksum(ip4)
		return t
	}
	icmp6 := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborSolicitation, 0)}
	_ = icmp6.SetNetworkLayerForChecksum(ip6)
	ser := func(ls ...gopacket.SerializableLayer) []byte {
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
			panic(err) // test seeds only
		}
		return buf.Bytes()
	}
	ping := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4,
		SrcIP: net.IP{198, 18, 0, 2}, DstIP: srv4.Addr().AsSlice()}
	frames := [][]byte{
		ser(eth(net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, layers.EthernetTypeARP),
			&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
				Operation: layers.ARPRequest, SourceHwAddress: peer, SourceProtAddress: []byte{198, 18, 0, 2},
				DstHwAddress: make([]byte, 6), DstProtAddress: srv4.Addr().AsSlice()}),
		ser(eth(mac, layers.EthernetTypeIPv4), ping, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 1, Seq: 1},
			gopacket.Payload("ping")),
		ser(eth(mac, layers.EthernetTypeIPv4), ip4, syn(7)),
		ser(eth(mac, layers.EthernetTypeIPv4), ip4, syn(80)),
		ser(eth(net.HardwareAddr{0x33, 0x33, 0xff, 0, 0, 3}, layers.EthernetTypeIPv6), ip6, icmp6,
			gopacket.Payload(append(srv6.Addr().AsSlice(), 1, 1, 2, 0, 0, 0, 0, 9))),
		ser(eth(mac, layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 100, Type: layers.EthernetTypeIPv4}, ping,
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0)}),
	}
	frames = append(frames, frames[2][:20], frames[4][:40], mac[:])
	return frames
}

// FuzzStackInput feeds arbitrary frames, as the interface hands them up
// (to the vif's MAC or promiscuously), through the endpoint into a host's
// stack with its services running: nothing panics, every frame of a whole
// Ethernet header reaches the stack and is counted once (no other), and the
// services stay within their connection limit.
func FuzzStackInput(f *testing.F) {
	c := newCloner(f)
	ifc := memIfc(f, c, "fuzz-"+segName(f))
	h, err := NewHost(ifc, HostConfig{Addrs: []netip.Prefix{srv4, srv6}, EchoPort: 7, DiscardPort: 9, HTTPAddr: ":80",
		Limits: Limits{MaxConns: 4}, Probe: ProbeConfig{Off: true}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { h.Close() })
	for _, fr := range fuzzSeeds(ifc.HardwareAddr()) {
		f.Add(fr, false)
	}
	f.Add([]byte{}, true)
	ep := h.Stack().Endpoint()
	rx := func() (uint64, uint64) {
		st := h.Stack().Netstack().NICInfo()[NICID].Stats.Rx
		return st.Packets.Value(), st.Bytes.Value()
	}
	f.Fuzz(func(t *testing.T, frame []byte, promisc bool) {
		p0, b0 := rx()
		start := time.Now()
		ep.input(frame, promisc)
		if d := time.Since(start); d > 10*time.Second { // must not hang: generous on a loaded machine
			t.Fatalf("input of % x took %v", frame, d)
		}
		p1, b1 := rx()
		var wantP, wantB uint64
		if len(frame) >= 14 {
			wantP, wantB = 1, uint64(len(frame)-14)
		}
		if p1-p0 != wantP || b1-b0 != wantB {
			t.Fatalf("%d-byte frame: the stack counted %d packets of %d bytes, want %d of %d", len(frame), p1-p0, b1-b0, wantP, wantB)
		}
		if c := h.Counters(); c.ConnsOpen > 4 {
			t.Fatalf("%d service connections open, limit 4", c.ConnsOpen)
		}
	})
}
