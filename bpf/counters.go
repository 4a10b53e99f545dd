package bpf

import (
	"fmt"
)

// Columns of the stats map, in step with enum rule in steer.c.
const (
	ruleUnicast = iota
	ruleMulticast
	ruleARP
	rulePromisc
	rulePass
	ruleNoSocket
	ruleRunt
	numRules
)

// RuleCounters count frames by the rule that decided them, summed over all
// CPUs. A vif's counters (Counters) fill Unicast, Multicast, ARP, Promisc
// (frames redirected to its sockets) and NoSocket (frames it should have had
// but that passed to the host for want of a socket on their queue). The host's
// counters (HostCounters) fill Pass, NoSocket (all vifs together) and Runt:
// their sum is every frame the program passed to the host kernel.
type RuleCounters struct {
	Unicast   uint64 // rule 1: destination is the vif's unicast MAC
	Multicast uint64 // rule 3: destination is a multicast MAC the vif joined
	ARP       uint64 // rule 2: ARP request for the vif's IPv4 address
	Promisc   uint64 // rule 4: unclaimed frame to the promiscuous vif
	Pass      uint64 // no rule matched: passed to the host
	NoSocket  uint64 // matched a vif without a socket on that queue: passed
	Runt      uint64 // too short for its headers: passed
}

// Redirected is the number of frames sent to sockets.
func (c RuleCounters) Redirected() uint64 {
	return c.Unicast + c.Multicast + c.ARP + c.Promisc
}

// Passed is the number of frames passed to the host kernel.
func (c RuleCounters) Passed() uint64 {
	return c.Pass + c.NoSocket + c.Runt
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

func (s *Steering) row(row int) (RuleCounters, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	objs, err := s.loaded()
	if err != nil {
		return RuleCounters{}, err
	}
	var sums [numRules]uint64
	var percpu []uint64
	for r := range sums {
		if err := objs.Stats.Lookup(uint32(row*numRules+r), &percpu); err != nil {
			return RuleCounters{}, fmt.Errorf("bpf: read counters: %w", err)
		}
		for _, v := range percpu {
			sums[r] += v
		}
	}
	return RuleCounters{
		Unicast:   sums[ruleUnicast],
		Multicast: sums[ruleMulticast],
		ARP:       sums[ruleARP],
		Promisc:   sums[rulePromisc],
		Pass:      sums[rulePass],
		NoSocket:  sums[ruleNoSocket],
		Runt:      sums[ruleRunt],
	}, nil
}
