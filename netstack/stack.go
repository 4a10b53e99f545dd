package netstack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/qdisc/fifo"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/virtif-xdp/virtif-xdp/virtif"
)

// NICID is the stack's only NIC, the interface.
const NICID tcpip.NICID = 1

// AllNodesMAC is the Ethernet group of ff02::1, the IPv6 all-nodes address.
var AllNodesMAC = net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}

// StackConfig shapes a Stack; the zero value suits a shared NIC.
type StackConfig struct {
	Endpoint EndpointOptions
	// SendQueues > 0 puts gVisor's FIFO queueing discipline with that many
	// queues (and goroutines) between the stack and the endpoint, so sends
	// are batched up to 47 frames per OutputBatch; 0 sends each packet from
	// the goroutine that produced it.
	SendQueues int
	// AllNodes joins the IPv6 all-nodes group (33:33:00:00:00:01) with the
	// first IPv6 address. On an XDP backend a group is steered to one vif
	// only, and then no longer reaches the host kernel (which loses router
	// advertisements), so it is off by default; neighbour discovery needs
	// only the solicited-node groups. EEXIST (another vif holds it) is
	// tolerated.
	AllNodes bool
}

// Stack is a gVisor TCP/IP stack (IPv4, IPv6, ARP, ICMP, TCP, UDP) whose one
// NIC is a virtif interface. Addresses added through it are registered with
// the interface, so that an XDP backend steers their traffic to it.
type Stack struct {
	s   *stack.Stack
	ep  *Endpoint
	ifc *virtif.Interface
	cfg StackConfig

	mu       sync.Mutex
	addrs    []netip.Prefix
	groups   []net.HardwareAddr // joined by us, left at Close
	allNodes bool
	closed   bool
}

// NewStack creates a stack with one NIC on ifc (NICID), through NewEndpoint.
// The interface is not brought up here.
func NewStack(ifc *virtif.Interface, cfg StackConfig) (*Stack, error) {
	ep, err := NewEndpoint(ifc, cfg.Endpoint)
	if err != nil {
		return nil, err
	}
	s := newGVisorStack()

	opts := stack.NICOptions{Name: ifc.Name()}
	if cfg.SendQueues > 0 {
		opts.QDisc = fifo.New(ep, cfg.SendQueues, 1000)
	}
	if terr := s.CreateNICWithOptions(NICID, ep, opts); terr != nil {
		ep.Close()
		s.Destroy()
		return nil, fmt.Errorf("netstack: %s: create NIC: %w", ifc.Name(), asError(terr))
	}
	return &Stack{s: s, ep: ep, ifc: ifc, cfg: cfg}, nil
}

// newGVisorStack is the gVisor stack every Stack gets (and the benchmarks'
// comparators): IPv4, IPv6, ARP, TCP with SACK and receive-buffer
// auto-tuning, UDP, ICMP.
func newGVisorStack() *stack.Stack {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	sack := tcpip.TCPSACKEnabled(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	moderate := tcpip.TCPModerateReceiveBufferOption(true)
	s.SetTransportProtocolOption(tcp.ProtocolNumber, &moderate)
	return s
}

// Netstack is the gVisor stack, for whatever this package does not wrap.
// Addresses added to it directly are not registered with the interface.
func (s *Stack) Netstack() *stack.Stack { return s.s }

// Endpoint is the link endpoint of the NIC.
func (s *Stack) Endpoint() *Endpoint { return s.ep }

// Interface is the interface the stack sits on.
func (s *Stack) Interface() *virtif.Interface { return s.ifc }

// AddAddress adds an address with its subnet route. An IPv4 address is
// registered with the interface (AddIPv4: the XDP backend then steers ARP
// requests for it); an IPv6 address makes the interface join its
// solicited-node group 33:33:ff:XX:YY:ZZ, so neighbour solicitations reach the
// stack, not the host kernel. EEXIST if the address is there already, EINVAL
// for an invalid prefix; the interface's errors pass through (EEXIST from
// JoinMulticast means another vif on the NIC holds the group). EINVAL for an
// IPv4-mapped IPv6 address (give the IPv4 address). If the
// interface is up, the address is announced (gratuitous ARP, unsolicited
// neighbour advertisement) so that neighbours which cached another MAC for
// it, such as a previous run's (a vif's MAC is random), switch at once.
func (s *Stack) AddAddress(p netip.Prefix) error {
	if !p.IsValid() || p.Addr().Zone() != "" || p.Addr().Is4In6() {
		return fmt.Errorf("netstack: add address %s: %w", p, unix.EINVAL)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("netstack: add address %s: %w", p, net.ErrClosed)
	}
	if slices.Contains(s.addrs, p) {
		return fmt.Errorf("netstack: add address %s: %w", p, unix.EEXIST)
	}
	addr := p.Addr()
	var joined []net.HardwareAddr
	undo := func() {
		for _, g := range joined {
			_ = s.ifc.LeaveMulticast(g)
		}
	}
	if addr.Is4() {
		if err := s.ifc.AddIPv4(addr); err != nil {
			return fmt.Errorf("netstack: add address %s: %w", p, err)
		}
	} else {
		g := SolicitedNodeMAC(addr)
		if err := s.ifc.JoinMulticast(g); err != nil {
			return fmt.Errorf("netstack: add address %s: join solicited-node group %s: %w", p, g, err)
		}
		joined = append(joined, g)
		if s.cfg.AllNodes && !s.allNodes {
			switch err := s.ifc.JoinMulticast(AllNodesMAC); {
			case err == nil:
				joined = append(joined, AllNodesMAC)
				s.allNodes = true
			case errors.Is(err, unix.EEXIST):
				// Another vif on the NIC holds it; NDP works without it.
			default:
				undo()
				return fmt.Errorf("netstack: add address %s: join all-nodes group: %w", p, err)
			}
		}
	}
	proto := ipv4.ProtocolNumber
	if addr.Is6() {
		proto = ipv6.ProtocolNumber
	}
	pa := tcpip.ProtocolAddress{
		Protocol:          proto,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFromSlice(addr.AsSlice()), PrefixLen: p.Bits()},
	}
	if terr := s.s.AddProtocolAddress(NICID, pa, stack.AddressProperties{}); terr != nil {
		if addr.Is4() {
			_ = s.ifc.DelIPv4(addr)
		}
		undo()
		return fmt.Errorf("netstack: add address %s: %w", p, asError(terr))
	}
	s.s.AddRoute(tcpip.Route{Destination: pa.AddressWithPrefix.Subnet(), NIC: NICID})
	s.groups = append(s.groups, joined...)
	s.addrs = append(s.addrs, p)
	if addr.Is4() {
		s.announce(addr)
	} else {
		s.announce6(addr)
	}
	return nil
}

// announce sends a gratuitous ARP request (an ARP announcement, RFC 5227
// section 3) for addr, so neighbours that cached another MAC for it (a vif's
// MAC is random per run) move to ours instead of timing out first. Best
// effort: an interface that is not up yet sends nothing.
func (s *Stack) announce(addr netip.Addr) {
	mac := s.ifc.HardwareAddr()
	if len(mac) != 6 {
		return
	}
	a := addr.As4()
	f := make([]byte, 0, 42)
	f = append(f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	f = append(f, mac...)
	f = append(f, 0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1) // ARP, Ethernet/IPv4, request
	f = append(f, mac...)
	f = append(f, a[:]...)
	f = append(f, 0, 0, 0, 0, 0, 0)
	f = append(f, a[:]...)
	_ = s.ifc.Output([][]byte{f})
}

// RemoveAddress removes an address AddAddress added, with its registration
// and subnet route: EADDRNOTAVAIL if it is not there.
func (s *Stack) RemoveAddress(p netip.Prefix) error {
	p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits())
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.Index(s.addrs, p)
	if i < 0 || s.closed {
		return fmt.Errorf("netstack: remove address %s: %w", p, unix.EADDRNOTAVAIL)
	}
	s.addrs = slices.Delete(s.addrs, i, i+1)
	a := tcpip.AddrFromSlice(p.Addr().AsSlice())
	var first error
	if terr := s.s.RemoveAddress(NICID, a); terr != nil {
		first = asError(terr)
	}
	subnet := tcpip.AddressWithPrefix{Address: a, PrefixLen: p.Bits()}.Subnet()
	if !slices.ContainsFunc(s.addrs, func(q netip.Prefix) bool { return q.Masked() == p.Masked() }) {
		s.s.RemoveRoutes(func(r tcpip.Route) bool { return r.Destination == subnet && r.Gateway.Len() == 0 })
	}
	if p.Addr().Is4() {
		if err := s.ifc.DelIPv4(p.Addr()); err != nil && first == nil {
			first = err
		}
	} else {
		g := SolicitedNodeMAC(p.Addr())
		if j := slices.IndexFunc(s.groups, func(h net.HardwareAddr) bool { return string(h) == string(g) }); j >= 0 {
			s.groups = slices.Delete(s.groups, j, j+1)
			if err := s.ifc.LeaveMulticast(g); err != nil && first == nil {
				first = err
			}
		}
	}
	if first != nil {
		return fmt.Errorf("netstack: remove address %s: %w", p, first)
	}
	return nil
}

// Addresses lists the addresses AddAddress added, in order.
func (s *Stack) Addresses() []netip.Prefix {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.addrs)
}

// SetGateway adds a default route (0.0.0.0/0 or ::/0, by gw's family) via
// gw. EINVAL for an invalid address.
func (s *Stack) SetGateway(gw netip.Addr) error {
	if !gw.IsValid() {
		return fmt.Errorf("netstack: set gateway: %w", unix.EINVAL)
	}
	gw = gw.Unmap()
	dst := header.IPv4EmptySubnet
	if gw.Is6() {
		dst = header.IPv6EmptySubnet
	}
	s.s.AddRoute(tcpip.Route{Destination: dst, Gateway: tcpip.AddrFromSlice(gw.AsSlice()), NIC: NICID})
	return nil
}

// ListenTCP listens on the stack; an unspecified or invalid address of ap
// listens on every address of ap's family (IPv4 when ap's address is
// invalid).
func (s *Stack) ListenTCP(ap netip.AddrPort) (net.Listener, error) {
	fa, proto := fullAddr(ap)
	l, err := gonet.ListenTCP(s.s, fa, proto)
	if err != nil {
		return nil, fmt.Errorf("netstack: listen tcp %s: %w", ap, err)
	}
	return l, nil
}

// DialTCP connects from the stack to ap.
func (s *Stack) DialTCP(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
	fa, proto := fullAddr(ap)
	c, err := gonet.DialContextTCP(ctx, s.s, fa, proto)
	if err != nil {
		return nil, fmt.Errorf("netstack: dial tcp %s: %w", ap, err)
	}
	return c, nil
}

// Ping sends one ICMP echo request (v4 or v6 by dst's family) from the stack
// and waits for the reply or ctx's end; it returns the round-trip time.
func (s *Stack) Ping(ctx context.Context, dst netip.Addr, payload []byte) (time.Duration, error) {
	dst = dst.Unmap()
	netProto, transProto, typ := ipv4.ProtocolNumber, icmp.ProtocolNumber4, byte(header.ICMPv4Echo)
	if dst.Is6() {
		netProto, transProto, typ = ipv6.ProtocolNumber, icmp.ProtocolNumber6, byte(header.ICMPv6EchoRequest)
	}
	var wq waiter.Queue
	ep, terr := s.s.NewEndpoint(transProto, netProto, &wq)
	if terr != nil {
		return 0, fmt.Errorf("netstack: ping %s: %w", dst, asError(terr))
	}
	defer ep.Close()
	we, ready := waiter.NewChannelEntry(waiter.ReadableEvents)
	wq.EventRegister(&we)
	defer wq.EventUnregister(&we)
	if terr := ep.Connect(tcpip.FullAddress{NIC: NICID, Addr: tcpip.AddrFromSlice(dst.AsSlice())}); terr != nil {
		return 0, fmt.Errorf("netstack: ping %s: %w", dst, asError(terr))
	}
	// Type, code, checksum, ident (the endpoint fills in ident and checksum), sequence.
	req := append([]byte{typ, 0, 0, 0, 0, 0, 0, 1}, payload...)
	start := time.Now()
	if _, terr := ep.Write(bytes.NewReader(req), tcpip.WriteOptions{}); terr != nil {
		return 0, fmt.Errorf("netstack: ping %s: %w", dst, asError(terr))
	}
	for {
		var reply bytes.Buffer
		_, terr := ep.Read(&reply, tcpip.ReadOptions{})
		if terr == nil {
			return time.Since(start), nil
		}
		if _, ok := terr.(*tcpip.ErrWouldBlock); !ok {
			return 0, fmt.Errorf("netstack: ping %s: %w", dst, asError(terr))
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return 0, fmt.Errorf("netstack: ping %s: %w", dst, ctx.Err())
		}
	}
}

func fullAddr(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	fa := tcpip.FullAddress{NIC: NICID, Port: ap.Port()}
	a := ap.Addr().Unmap()
	if a.IsValid() && !a.IsUnspecified() {
		fa.Addr = tcpip.AddrFromSlice(a.AsSlice())
	}
	if a.Is6() {
		return fa, ipv6.ProtocolNumber
	}
	return fa, ipv4.ProtocolNumber
}

// Close destroys the stack (aborting its connections and waiting for its
// goroutines), detaches the endpoint and undoes the address registrations on
// the interface, which stays open. Calling it twice is fine.
func (s *Stack) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	addrs, groups := s.addrs, s.groups
	s.addrs, s.groups = nil, nil
	s.mu.Unlock()

	s.s.Destroy() // removes the NIC: Attach(nil), then the endpoint's Close
	s.ep.Close()
	var first error
	for _, p := range addrs {
		if p.Addr().Is4() {
			if err := s.ifc.DelIPv4(p.Addr()); err != nil && first == nil {
				first = err
			}
		}
	}
	for _, g := range groups {
		if err := s.ifc.LeaveMulticast(g); err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return fmt.Errorf("netstack: close: %w", first)
	}
	return nil
}

// announce6 sends an unsolicited neighbour advertisement for addr to all
// nodes with the override flag (RFC 4861 section 7.2.6), the IPv6 side of
// announce. Best effort, as announce.
func (s *Stack) announce6(addr netip.Addr) {
	mac := s.ifc.HardwareAddr()
	if len(mac) != 6 {
		return
	}
	const optLen = 8 // target link-layer address option: type, length, MAC
	icmpLen := header.ICMPv6NeighborAdvertMinimumSize + optLen
	f := make([]byte, header.EthernetMinimumSize+header.IPv6MinimumSize+icmpLen)
	allNodes := header.IPv6AllNodesMulticastAddress
	src := tcpip.AddrFrom16(addr.As16())
	header.Ethernet(f).Encode(&header.EthernetFields{
		SrcAddr: tcpip.LinkAddress(mac),
		DstAddr: tcpip.LinkAddress(AllNodesMAC),
		Type:    header.IPv6ProtocolNumber,
	})
	ip := header.IPv6(f[header.EthernetMinimumSize:])
	ip.Encode(&header.IPv6Fields{
		PayloadLength:     uint16(icmpLen),
		TransportProtocol: header.ICMPv6ProtocolNumber,
		HopLimit:          header.NDPHopLimit,
		SrcAddr:           src,
		DstAddr:           allNodes,
	})
	icmp := header.ICMPv6(ip[header.IPv6MinimumSize:])
	icmp.SetType(header.ICMPv6NeighborAdvert)
	na := header.NDPNeighborAdvert(icmp.MessageBody())
	na.SetOverrideFlag(true)
	na.SetTargetAddress(src)
	opt := na[header.NDPNAMinimumSize:]
	opt[0], opt[1] = 2, 1 // target link-layer address, 8 bytes
	copy(opt[2:], mac)
	icmp.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: icmp, Src: src, Dst: allNodes}))
	_ = s.ifc.Output([][]byte{f})
}

// SolicitedNodeMAC is the Ethernet group of addr's solicited-node multicast
// address ff02::1:ffXX:YYZZ: 33:33:ff:XX:YY:ZZ, the low 24 bits of addr
// (RFC 4291 2.7.1, RFC 2464 7).
func SolicitedNodeMAC(addr netip.Addr) net.HardwareAddr {
	b := addr.As16()
	return net.HardwareAddr{0x33, 0x33, 0xff, b[13], b[14], b[15]}
}

// tcpipError carries a gVisor error, with the errno it stands for where
// there is one, so errors.Is(err, unix.EEXIST) works.
type tcpipError struct {
	err   tcpip.Error
	errno unix.Errno
}

func (e *tcpipError) Error() string { return e.err.String() }
func (e *tcpipError) Unwrap() error {
	if e.errno == 0 {
		return nil
	}
	return e.errno
}

func asError(err tcpip.Error) error {
	te := &tcpipError{err: err}
	switch err.(type) {
	case *tcpip.ErrDuplicateAddress, *tcpip.ErrDuplicateNICID, *tcpip.ErrPortInUse:
		te.errno = unix.EEXIST
	case *tcpip.ErrBadLocalAddress:
		te.errno = unix.EADDRNOTAVAIL
	case *tcpip.ErrUnknownNICID:
		te.errno = unix.ENODEV
	case *tcpip.ErrInvalidEndpointState, *tcpip.ErrBadAddress:
		te.errno = unix.EINVAL
	case *tcpip.ErrNoBufferSpace:
		te.errno = unix.ENOBUFS
	case *tcpip.ErrNotSupported:
		te.errno = unix.EOPNOTSUPP
	}
	return te
}
