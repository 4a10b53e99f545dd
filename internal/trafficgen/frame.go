//go:build linux

// Package trafficgen makes test traffic: UDP frames carrying a sequence
// number, and two generators that put them on a wire.
//
//   - Live sends frames with BPF_PROG_RUN in live-frame mode: the kernel runs a
//     tiny XDP_TX program over copies of one frame and transmits every copy out
//     of a veth end, tens of millions of frames a second with no skb and no
//     userspace copy. It needs Linux 5.18 (BPF_F_TEST_XDP_LIVE_FRAMES).
//   - Packet sends skb-borne frames through an AF_PACKET socket with
//     sendmmsg(2), the way ordinary host traffic arrives.
//
// Sink attaches a counting XDP program to the receiving end, which both
// measures the kernel's own XDP_DROP limit and lets veth accept XDP frames.
package trafficgen

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// Frame layout of UDPFrame: Ethernet (14) + IPv4 without options (20) +
// UDP (8), then the payload whose first 8 bytes are the sequence number.
const (
	ethLen    = 14
	ipv4Len   = 20
	udpLen    = 8
	headerLen = ethLen + ipv4Len + udpLen

	// SeqOffset is where the big-endian uint64 sequence number sits in a
	// frame made by UDPFrame.
	SeqOffset = headerLen

	// MinFrame is the smallest frame UDPFrame makes: the Ethernet minimum
	// without FCS.
	MinFrame = 60
	// MaxFrame is the largest: a full IPv4 datagram behind an Ethernet header.
	MaxFrame = ethLen + 65535
)

// UDPFrame returns an Ethernet/IPv4/UDP frame of exactly size bytes, clamped
// to [MinFrame, MaxFrame]. The IPv4 header checksum is correct, the UDP
// checksum is 0 (none), TTL is 64, the payload is zero except for the
// sequence number (0, see SetSeq). srcIP and dstIP should be IPv4 addresses;
// an IPv6 one is written as 0.0.0.0.
func UDPFrame(dst, src net.HardwareAddr, srcIP, dstIP netip.Addr, srcPort, dstPort uint16, size int) []byte {
	size = min(max(size, MinFrame), MaxFrame)
	f := make([]byte, size)
	copy(f[0:6], dst)
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:14], 0x0800)

	ip := f[ethLen : ethLen+ipv4Len]
	ip[0] = 0x45 // version 4, 5 words
	binary.BigEndian.PutUint16(ip[2:4], uint16(size-ethLen))
	ip[6] = 0x40 // don't fragment
	ip[8] = 64   // TTL
	ip[9] = 17   // UDP
	if srcIP.Is4() {
		s := srcIP.As4()
		copy(ip[12:16], s[:])
	}
	if dstIP.Is4() {
		d := dstIP.As4()
		copy(ip[16:20], d[:])
	}
	binary.BigEndian.PutUint16(ip[10:12], ipv4Checksum(ip))

	udp := f[ethLen+ipv4Len : headerLen]
	binary.BigEndian.PutUint16(udp[0:2], srcPort)
	binary.BigEndian.PutUint16(udp[2:4], dstPort)
	binary.BigEndian.PutUint16(udp[4:6], uint16(size-ethLen-ipv4Len))
	return f
}

// ipv4Checksum is the RFC 1071 one's-complement sum over a header whose
// checksum field is zero.
func ipv4Checksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// SetSeq writes n as the sequence number of a frame made by UDPFrame. It
// touches only the payload, so no checksum changes (the UDP checksum is 0).
// It does nothing to a frame too short to hold one.
func SetSeq(frame []byte, n uint64) {
	if len(frame) >= SeqOffset+8 {
		binary.BigEndian.PutUint64(frame[SeqOffset:], n)
	}
}

// Seq reads the sequence number of a frame made by UDPFrame; ok is false if
// the frame is too short or not IPv4/UDP with a 20-byte header.
func Seq(frame []byte) (n uint64, ok bool) {
	if len(frame) < SeqOffset+8 ||
		binary.BigEndian.Uint16(frame[12:14]) != 0x0800 ||
		frame[ethLen] != 0x45 || frame[ethLen+9] != 17 {
		return 0, false
	}
	return binary.BigEndian.Uint64(frame[SeqOffset:]), true
}
