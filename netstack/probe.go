package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// ProbeConfig shapes the check that nobody on the segment holds an address
// before the stack takes it: for IPv4 ARP probes (RFC 5227 section 2.1:
// sender address 0.0.0.0), for IPv6 duplicate address detection (RFC 4862
// section 5.4: neighbour solicitations from ::). The zero value is the
// RFCs' defaults.
type ProbeConfig struct {
	// Off skips the check.
	Off bool
	// Interval is the time between probes and, after the last, the time
	// an answer may take (default DefaultProbeInterval: RFC 5227's
	// PROBE_MIN and ANNOUNCE_WAIT are 1 and 2 s, RFC 4862's RetransTimer
	// is 1 s).
	Interval time.Duration
	// IPv4Probes and IPv6Probes are how many probes are sent (defaults 3,
	// RFC 5227's PROBE_NUM, and 1, RFC 4862's DupAddrDetectTransmits).
	IPv4Probes, IPv6Probes int
}

// DefaultProbeInterval is ProbeConfig.Interval's default.
const DefaultProbeInterval = time.Second

// defaultProbeInterval is what a zero Interval means: DefaultProbeInterval,
// shorter in this package's tests.
var defaultProbeInterval = DefaultProbeInterval

// ConflictError says an address is someone else's: who answered a probe.
// It wraps EADDRINUSE.
type ConflictError struct {
	Addr   netip.Addr
	Holder net.HardwareAddr
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("netstack: %s is in use on the segment: %s answered our probe", e.Addr, e.Holder)
}

func (e *ConflictError) Unwrap() error { return unix.EADDRINUSE }

// Probe checks that nobody on the segment answers for addrs (see
// ProbeConfig), all at once, and returns a *ConflictError for the first
// that someone does. The interface must be up. For IPv6 it joins the
// all-nodes group while it waits (answers to duplicate address detection go
// to ff02::1), unless another vif on the NIC holds it: then answers are not
// seen. ctx bounds the wait.
func (s *Stack) Probe(ctx context.Context, addrs []netip.Addr, cfg ProbeConfig) error {
	if cfg.Off || len(addrs) == 0 {
		return nil
	}
	if cfg.Interval <= 0 {
		cfg.Interval = defaultProbeInterval
	}
	if cfg.IPv4Probes <= 0 {
		cfg.IPv4Probes = 3
	}
	if cfg.IPv6Probes <= 0 {
		cfg.IPv6Probes = 1
	}
	var has6 bool
	for _, a := range addrs {
		has6 = has6 || a.Is6()
	}
	if has6 {
		s.mu.Lock()
		have := s.allNodes
		s.mu.Unlock()
		if !have {
			if err := s.ifc.JoinMulticast(AllNodesMAC); err == nil {
				defer func() { _ = s.ifc.LeaveMulticast(AllNodesMAC) }()
			} else if !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("netstack: probe: join all-nodes group: %w", err)
			}
		}
	}
	set := func(proto tcpip.NetworkProtocolNumber, n int) error {
		ep, terr := s.s.GetNetworkEndpoint(NICID, proto)
		if terr != nil {
			return asError(terr)
		}
		d, ok := ep.(stack.DuplicateAddressDetector)
		if !ok {
			return fmt.Errorf("netstack: probe: protocol %d has no duplicate address detection: %w", proto, unix.EOPNOTSUPP)
		}
		d.SetDADConfigurations(stack.DADConfigurations{DupAddrDetectTransmits: uint8(n), RetransmitTimer: cfg.Interval})
		return nil
	}
	protos := map[tcpip.NetworkProtocolNumber]int{arp.ProtocolNumber: cfg.IPv4Probes, ipv6.ProtocolNumber: cfg.IPv6Probes}
	for p, n := range protos {
		if err := set(p, n); err != nil {
			return err
		}
	}
	// Addresses added later are not probed again by gVisor.
	defer func() {
		for p := range protos {
			_ = set(p, 0)
		}
	}()
	type result struct {
		addr netip.Addr
		res  stack.DADResult
	}
	results := make(chan result, len(addrs))
	var wg sync.WaitGroup
	for _, a := range addrs {
		// ARP detects for IPv4: the NIC knows its detector by IPv4's number.
		proto := ipv4.ProtocolNumber
		if a.Is6() {
			proto = ipv6.ProtocolNumber
		}
		wg.Add(1)
		disp, terr := s.s.CheckDuplicateAddress(NICID, proto, tcpip.AddrFromSlice(a.AsSlice()), func(r stack.DADResult) {
			results <- result{a, r}
			wg.Done()
		})
		if terr != nil {
			wg.Done()
			return fmt.Errorf("netstack: probe %s: %w", a, asError(terr))
		}
		if disp == stack.DADDisabled {
			wg.Done()
			results <- result{a, &stack.DADSucceeded{}}
		}
	}
	var first error
	for range addrs {
		select {
		case r := <-results:
			switch res := r.res.(type) {
			case *stack.DADSucceeded:
			case *stack.DADDupAddrDetected:
				if first == nil {
					first = &ConflictError{Addr: r.addr, Holder: net.HardwareAddr(res.HolderLinkAddress)}
				}
			case *stack.DADError:
				if first == nil {
					first = fmt.Errorf("netstack: probe %s: %w", r.addr, asError(res.Err))
				}
			default: // DADAborted: the NIC went away
				if first == nil {
					first = fmt.Errorf("netstack: probe %s: aborted: %w", r.addr, unix.ENETDOWN)
				}
			}
		case <-ctx.Done():
			return fmt.Errorf("netstack: probe: %w", context.Cause(ctx))
		}
	}
	wg.Wait()
	return first
}
