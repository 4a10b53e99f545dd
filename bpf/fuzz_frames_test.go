//go:build linux

package bpf

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
)

// steerFrame builds a frame for FuzzSteerFrames from a few choices: the
// destination (a vif's MAC, a joined group, broadcast, a stranger's), zero
// to three VLAN tags (802.1Q or 802.1ad, any VID), the ethertype behind
// them (ARP with a request or a reply for a vif's address or another, IPv4,
// IPv6, a stray tag type, anything), the payload, then cut anywhere
// (truncated headers) or grown past the MTU up to 3000 bytes (oversized).
func steerFrame(dst, tags uint8, vid uint16, typ, arpSel uint8, payload []byte, cut, grow uint16) []byte {
	dsts := []net.HardwareAddr{mac0, mac1, mcast0, mcast1, bcast, macOther, macSrc}
	b := append([]byte(nil), dsts[int(dst)%len(dsts)]...)
	b = append(b, macSrc...)
	for i := range int(tags % 4) {
		tpid := uint16(0x8100)
		if tags>>(2+i)&1 != 0 {
			tpid = 0x88a8
		}
		b = binary.BigEndian.AppendUint16(b, tpid)
		b = binary.BigEndian.AppendUint16(b, vid+uint16(i))
	}
	switch typ % 5 {
	case 0:
		b = binary.BigEndian.AppendUint16(b, 0x0806)
		targets := []netip.Addr{ip0, ip1, netip.MustParseAddr("198.18.0.99")}
		b = append(b, arp(uint16(arpSel%2)+1, targets[int(arpSel/2)%len(targets)])...)
	case 1:
		b = binary.BigEndian.AppendUint16(b, 0x0800)
	case 2:
		b = binary.BigEndian.AppendUint16(b, 0x86dd)
	case 3:
		b = binary.BigEndian.AppendUint16(b, 0x8100)
	default:
		b = binary.BigEndian.AppendUint16(b, vid)
	}
	b = append(b, payload...)
	for len(b) < 60 {
		b = append(b, 0)
	}
	if grow > 0 {
		for n := 1515 + int(grow)%1486; len(b) < n; {
			b = append(b, byte(len(b)))
		}
	}
	if cut > 0 {
		b = b[:int(cut)%(len(b)+1)]
	}
	return b
}

// FuzzSteerFrames runs frames built from a VLAN-tagged, truncated or
// oversized corpus through the real program and checks them against the
// model (Rules) as FuzzSteer does: the verdict and exactly the one counter
// the model names.
func FuzzSteerFrames(f *testing.F) {
	for _, c := range []struct {
		dst, tags uint8
		vid       uint16
		typ, arp  uint8
		cut, grow uint16
	}{
		{dst: 4, typ: 0},                  // ARP request for vif 0, broadcast
		{dst: 4, tags: 1, vid: 100},       // the same behind an 802.1Q tag
		{dst: 0, tags: 2, vid: 7, typ: 1}, // QinQ IPv4 to vif 0
		{dst: 4, tags: 1 | 4, typ: 0},     // 802.1ad then ARP
		{dst: 4, typ: 0, cut: 30},         // ARP cut inside its body
		{dst: 4, typ: 0, cut: 41},         // one byte short of a whole ARP
		{dst: 1, cut: 13},                 // shorter than a header
		{dst: 2, typ: 2, grow: 1},         // oversized IPv6 to a group
		{dst: 5, typ: 3, grow: 1485},      // 3000 bytes to a stranger
		{dst: 6, tags: 3, vid: 0xffff, typ: 4},
	} {
		f.Add(c.dst, c.tags, c.vid, c.typ, c.arp, []byte{0x45, 0, 0, 20}, c.cut, c.grow, uint8(0))
	}
	s := loadT(f, nil)
	setup(f, s)
	f.Fuzz(func(t *testing.T, dst, tags uint8, vid uint16, typ, arpSel uint8, payload []byte, cut, grow uint16, promisc uint8) {
		if len(payload) > 3000 {
			payload = payload[:3000]
		}
		checkSteer(t, s, steerFrame(dst, tags, vid, typ, arpSel, payload, cut, grow), promisc)
	})
}
