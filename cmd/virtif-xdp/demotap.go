//go:build linux

package main

import (
	"net/netip"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/virtif-xdp/virtif-xdp/virtif"
)

// demoTap watches vif0's frames for the demo's checks. It runs on the data
// path (every receiving goroutine and the sender), so it only counts.
type demoTap struct {
	byPort     [nPorts]atomic.Uint64 // the demo's UDP frames received, by port
	arpReq     atomic.Uint64         // ARP requests for demoVifIP received
	arpRep     atomic.Uint64         // ARP replies for demoVifIP sent
	hostFrames atomic.Uint64         // frames for the host kernel's addresses received
}

var (
	demoHostSNM = solicitedNode(demoHostIP6.Addr()) // where the host kernel's neighbour solicitations go
)

// solicitedNode is addr's solicited-node multicast address ff02::1:ffXX:XXXX.
func solicitedNode(addr netip.Addr) [16]byte {
	a := addr.As16()
	s := [16]byte{0: 0xff, 1: 0x02, 11: 0x01, 12: 0xff}
	copy(s[13:], a[13:])
	return s
}

func (t *demoTap) Tap(f []byte, dir virtif.Direction) {
	if len(f) < header.EthernetMinimumSize {
		return
	}
	vif4, host4 := tcpip.AddrFrom4(demoVifIP.As4()), tcpip.AddrFrom4(demoHostIP.As4())
	if dir == virtif.Out {
		if a, ok := arpOf(f); ok && a.Op() == header.ARPReply && tcpip.AddrFrom4Slice(a.ProtocolAddressSender()) == vif4 {
			t.arpRep.Add(1)
		}
		return
	}
	if p := demoPort(f); p >= 0 {
		t.byPort[p].Add(1)
		return
	}
	payload := f[header.EthernetMinimumSize:]
	switch header.Ethernet(f).Type() {
	case header.ARPProtocolNumber:
		a, ok := arpOf(f)
		if !ok {
			return
		}
		target := tcpip.AddrFrom4Slice(a.ProtocolAddressTarget())
		if a.Op() == header.ARPRequest && target == vif4 {
			t.arpReq.Add(1)
		}
		if target == host4 {
			t.hostFrames.Add(1)
		}
	case header.IPv4ProtocolNumber:
		if ip := header.IPv4(payload); ip.IsValid(len(payload)) && ip.DestinationAddress() == host4 {
			t.hostFrames.Add(1)
		}
	case header.IPv6ProtocolNumber:
		host6, snm := tcpip.AddrFrom16(demoHostIP6.Addr().As16()), tcpip.AddrFrom16(demoHostSNM)
		if ip := header.IPv6(payload); ip.IsValid(len(payload)) && (ip.DestinationAddress() == host6 || ip.DestinationAddress() == snm) {
			t.hostFrames.Add(1)
		}
	}
}

// arpOf returns the ARP packet (Ethernet, IPv4) an Ethernet frame carries.
func arpOf(f []byte) (header.ARP, bool) {
	if len(f) < header.EthernetMinimumSize || header.Ethernet(f).Type() != header.ARPProtocolNumber {
		return nil, false
	}
	a := header.ARP(f[header.EthernetMinimumSize:])
	return a, a.IsValid()
}

// demoPort returns which demo port (0..nPorts-1) a UDP frame is for, or -1.
func demoPort(f []byte) int {
	if len(f) < header.EthernetMinimumSize || header.Ethernet(f).Type() != header.IPv4ProtocolNumber {
		return -1
	}
	ip := header.IPv4(f[header.EthernetMinimumSize:])
	if !ip.IsValid(len(ip)) || ip.TransportProtocol() != header.UDPProtocolNumber {
		return -1
	}
	udp := header.UDP(ip.Payload())
	if len(udp) < header.UDPMinimumSize {
		return -1
	}
	p := int(udp.DestinationPort()) - portToVif
	if p < 0 || p >= nPorts {
		return -1
	}
	return p
}

// sideCounts counts the demo's frames arriving at one side of the lab, as
// the kernel's stack there sees them (a trafficgen.Sniffer calls frame).
type sideCounts struct {
	byPort [nPorts]atomic.Uint64
	arpFor atomic.Uint64 // ARP packets for the vif's address
}

func (c *sideCounts) frame(f []byte) {
	if p := demoPort(f); p >= 0 {
		c.byPort[p].Add(1)
	} else if a, ok := arpOf(f); ok && tcpip.AddrFrom4Slice(a.ProtocolAddressTarget()) == tcpip.AddrFrom4(demoVifIP.As4()) {
		c.arpFor.Add(1)
	}
}
