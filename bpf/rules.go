//go:build linux

package bpf

import (
	"encoding/binary"
	"maps"
)

// Rules are the program's rules 1-5 as a Go value: Match decides a frame as
// the program does, from the same registrations (AddMAC, AddIPv4,
// SetPromisc), leaving out only the check for a socket on the frame's queue.
// A receiver whose frames arrive untagged although several vifs share its
// sockets (a driver without XDP metadata) finds each frame's vif with it. A
// Rules is immutable and safe for concurrent use; Steering.Rules returns the
// one in force, replaced (not changed) by every registration. Match does not
// allocate.
type Rules struct {
	macs    map[[6]byte]int // unicast and multicast MAC -> vif
	ipv4s   map[[4]byte]int // IPv4 address (as on the wire) -> vif
	promisc int             // the promiscuous vif, -1 for none
}

// NewRules makes Rules from what vifs registered: macs maps unicast and
// multicast MACs to their vif, ipv4s the IPv4 addresses ARP requests are
// steered for, promisc is the vif that takes unclaimed frames (-1 for none).
// The maps are copied.
func NewRules(macs map[[6]byte]int, ipv4s map[[4]byte]int, promisc int) *Rules {
	r := &Rules{macs: maps.Clone(macs), ipv4s: maps.Clone(ipv4s), promisc: promisc}
	if r.macs == nil {
		r.macs = map[[6]byte]int{}
	}
	if r.ipv4s == nil {
		r.ipv4s = map[[4]byte]int{}
	}
	return r
}

// arpIPv4Request is the fixed start of an ARP request for IPv4 over
// Ethernet: htype 1, ptype 0x0800, hlen 6, plen 4, oper 1.
const arpIPv4Request = 0x0001_0800_0604_0001

// Match returns the vif frame belongs to and the rule that says so, in the
// program's order: unicast destination MAC, ARP request target IPv4,
// multicast destination MAC, promiscuous vif. vif is -1 for RulePass (no
// rule matched) and RuleRunt (too short for its Ethernet header, or for the
// ARP header its EtherType announces).
func (r *Rules) Match(frame []byte) (vif int, rule Rule) {
	if len(frame) < 14 {
		return -1, RuleRunt
	}
	owner, found := r.macs[[6]byte(frame[:6])]
	multicast := frame[0]&1 != 0
	if found && !multicast {
		return owner, RuleUnicast
	}
	if binary.BigEndian.Uint16(frame[12:]) == 0x0806 {
		if len(frame) < 42 {
			return -1, RuleRunt
		}
		if binary.BigEndian.Uint64(frame[14:]) == arpIPv4Request {
			if v, ok := r.ipv4s[[4]byte(frame[38:42])]; ok {
				return v, RuleARP
			}
		}
	}
	if found {
		return owner, RuleMulticast
	}
	if r.promisc >= 0 {
		return r.promisc, RulePromisc
	}
	return -1, RulePass
}

// with returns a copy of r with key (a MAC or an IPv4 map key) steered to
// vif, or no longer steered.
func (r *Rules) with(key any, vif int, add bool) *Rules {
	c := *r
	switch k := key.(type) {
	case steerMacKey:
		c.macs = edited(c.macs, k.Addr, vif, add)
	case [4]byte:
		c.ipv4s = edited(c.ipv4s, k, vif, add)
	}
	return &c
}

func edited[K comparable](m map[K]int, k K, vif int, add bool) map[K]int {
	m = maps.Clone(m)
	if add {
		m[k] = vif
	} else {
		delete(m, k)
	}
	return m
}

// Rules returns the rules in force: what the program's maps hold, updated
// right after each change of them. Never nil, also after Close.
func (s *Steering) Rules() *Rules { return s.rules.Load() }
