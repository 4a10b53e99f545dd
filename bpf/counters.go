//go:build linux

package bpf

import (
	"fmt"
)

// Rule is the rule that decided a frame's fate: a column of the program's
// counters (in step with enum rule in steer.c), and what Rules.Match says.
type Rule int

// The rules, and the counter columns, in the order of the stats map.
const (
	RuleUnicast   Rule = iota // rule 1: the vif's unicast MAC
	RuleMulticast             // rule 3: a multicast MAC the vif joined
	RuleARP                   // rule 2: an ARP request for the vif's IPv4 address
	RulePromisc               // rule 4: unclaimed, to the promiscuous vif
	RulePass                  // rule 5: no rule matched, passed to the host
	RuleNoSocket              // the vif has no socket on the frame's queue: passed
	RuleRunt                  // too short for its headers: passed
	RuleNoMeta                // could not carry its vif's tag (no XDP metadata): passed
	numRules
)

// RuleCounters count frames by the rule that decided them, summed over all
// CPUs. A vif's counters (Counters) fill Unicast, Multicast, ARP, Promisc
// (frames redirected to its sockets), NoSocket (frames it should have had
// but that passed to the host for want of a socket on their queue) and
// NoMeta (frames it should have had but that passed to the host because
// they could not be tagged: a driver without XDP metadata, while tagging is
// on). The host's counters (HostCounters) fill Pass, NoSocket and NoMeta
// (all vifs together) and Runt: their sum is every frame the program passed
// to the host kernel.
type RuleCounters struct {
	Unicast   uint64 // rule 1: destination is the vif's unicast MAC
	Multicast uint64 // rule 3: destination is a multicast MAC the vif joined
	ARP       uint64 // rule 2: ARP request for the vif's IPv4 address
	Promisc   uint64 // rule 4: unclaimed frame to the promiscuous vif
	Pass      uint64 // no rule matched: passed to the host
	NoSocket  uint64 // matched a vif without a socket on that queue: passed
	Runt      uint64 // too short for its headers: passed
	NoMeta    uint64 // matched a vif but could not be tagged: passed
}

// Redirected is the number of frames sent to sockets.
func (c RuleCounters) Redirected() uint64 {
	return c.Unicast + c.Multicast + c.ARP + c.Promisc
}

// Passed is the number of frames passed to the host kernel.
func (c RuleCounters) Passed() uint64 {
	return c.Pass + c.NoSocket + c.Runt + c.NoMeta
}

// Counters returns vif's counters. Errors: unix.EINVAL for a bad vif.
func (s *Steering) Counters(vif int) (RuleCounters, error) {
	if err := s.checkVif(vif); err != nil {
		return RuleCounters{}, err
	}
	return s.row(vif + 1)
}

// HostCounters returns the counters of frames passed to the host.
func (s *Steering) HostCounters() (RuleCounters, error) {
	return s.row(0)
}

// NoMeta is HostCounters().NoMeta, read alone (one map lookup): the frames
// the program could not tag, all vifs together. Non-zero means the driver
// cannot carry XDP metadata (or Options.NoMeta simulates one): a receiver
// that relies on tags should turn tagging off and find the vif itself
// (Rules).
func (s *Steering) NoMeta() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	objs, err := s.loaded()
	if err != nil {
		return 0, err
	}
	return sumColumn(objs, 0, RuleNoMeta)
}

// sumColumn sums one counter over all CPUs; s.mu is held.
func sumColumn(objs *steerObjects, row int, r Rule) (uint64, error) {
	var percpu []uint64
	if err := objs.Stats.Lookup(uint32(row*int(numRules)+int(r)), &percpu); err != nil {
		return 0, fmt.Errorf("bpf: read counters: %w", err)
	}
	var sum uint64
	for _, v := range percpu {
		sum += v
	}
	return sum, nil
}

func (s *Steering) row(row int) (RuleCounters, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	objs, err := s.loaded()
	if err != nil {
		return RuleCounters{}, err
	}
	var sums [numRules]uint64
	for r := range sums {
		if sums[r], err = sumColumn(objs, row, Rule(r)); err != nil {
			return RuleCounters{}, err
		}
	}
	return RuleCounters{
		Unicast:   sums[RuleUnicast],
		Multicast: sums[RuleMulticast],
		ARP:       sums[RuleARP],
		Promisc:   sums[RulePromisc],
		Pass:      sums[RulePass],
		NoSocket:  sums[RuleNoSocket],
		Runt:      sums[RuleRunt],
		NoMeta:    sums[RuleNoMeta],
	}, nil
}
