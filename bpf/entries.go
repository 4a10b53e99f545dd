//go:build linux

package bpf

import "fmt"

// Entries counts what the program's maps hold, read from the kernel (not
// from the Go side's own bookkeeping), so that a leak in either shows.
type Entries struct {
	MACs    int // unicast and multicast MACs in the hash map
	IPv4s   int // IPv4 addresses steered for ARP
	Fast    int // occupied slots of the fast unicast table
	Sockets int // socket map slots set (the kernel cannot list an XSKMAP: the Go side's count)
	Promisc bool
	Tagging bool
}

// Entries reads the map contents. net.ErrClosed once closed.
func (s *Steering) Entries() (Entries, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	objs, err := s.loaded()
	if err != nil {
		return Entries{}, err
	}
	var e Entries
	var mk steerMacKey
	var owner uint32
	it := objs.Macs.Iterate()
	for it.Next(&mk, &owner) {
		e.MACs++
	}
	if err := it.Err(); err != nil {
		return e, fmt.Errorf("bpf: read macs: %w", err)
	}
	var ik, iv uint32
	it = objs.Ipv4s.Iterate()
	for it.Next(&ik, &iv) {
		e.IPv4s++
	}
	if err := it.Err(); err != nil {
		return e, fmt.Errorf("bpf: read ipv4s: %w", err)
	}
	var fast steerFastMacs
	if err := objs.Fast.Lookup(uint32(0), &fast); err != nil {
		return e, fmt.Errorf("bpf: read fast: %w", err)
	}
	for _, f := range fast.E {
		if f.Vif1 != 0 {
			e.Fast++
		}
	}
	var v uint32
	if err := objs.Promisc.Lookup(uint32(0), &v); err != nil {
		return e, fmt.Errorf("bpf: read promisc: %w", err)
	}
	e.Promisc = v != 0
	if err := objs.Tagging.Lookup(uint32(0), &v); err != nil {
		return e, fmt.Errorf("bpf: read tagging: %w", err)
	}
	e.Tagging = v != 0
	e.Sockets = len(s.sockets)
	return e, nil
}
