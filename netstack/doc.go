// Package netstack puts gVisor's userspace TCP/IP stack (gvisor.dev/gvisor/pkg/tcpip)
// on a virtif interface, as the rump kernel puts its TCP/IP stack on if_virt:
// a program gets its own IPv4/IPv6 host on a NIC whose host kernel keeps its
// own traffic.
//
// # Wiring
//
// Three layers, each usable alone:
//
//	Endpoint  a stack.LinkEndpoint over a *virtif.Interface: Ethernet framing,
//	          the interface's MTU and MAC, receive through SetInput, send
//	          through OutputBatch
//	Stack     a gVisor stack (IPv4, IPv6, ARP, ICMP, TCP, UDP) with one NIC on
//	          an Endpoint; AddAddress registers each address with the
//	          interface so the XDP program steers its traffic to the vif
//	Host      a Stack with addresses, a gateway, a TCP echo and discard
//	          service and an HTTP status page: what `virtif-xdp run` serves
//
// A host on a shared NIC, in the NIC's network namespace:
//
//	c, _ := virtif.NewCloner(virtif.ClonerConfig{})
//	ifc, _ := c.Create()
//	_ = ifc.SetLinkStr("xdp:eth0")          // import _ ".../virtif/xdp"
//	h, err := netstack.NewHost(ifc, netstack.HostConfig{
//		Addrs:    []netip.Prefix{netip.MustParsePrefix("198.18.0.3/24")},
//		EchoPort: 7, HTTPAddr: ":80",
//	})
//	...
//	h.Close(); c.Close()
//
// # Receive: one copy
//
// The interface hands a frame up valid only for the duration of the call (on
// the XDP backend it is a slice of the UMEM, returned to the kernel right
// after), while a gVisor PacketBuffer must own its bytes. So each frame is
// copied exactly once, into a pooled gVisor buffer (buffer.MakeWithData), and
// dispatched on the backend's receive goroutine; nothing else copies it.
//
// # Receive: GRO
//
// On an interface whose backend ends its RX batches (both of ours do), the
// endpoint coalesces TCP segments with gVisor's GRO engine by default
// (EndpointOptions.NoGRO turns it off): the segments of one flow that
// arrive in one batch reach the stack as one packet of up to 64 KiB, and
// whatever GRO holds is handed up when the batch ends (virtif's
// SetInputBatch), so nothing waits for a timer. Endpoint.Stats counts the
// frames that went through GRO and the packets it made of them.
// Sends are not copied here: each packet's views become the segments of one
// frame in an OutputBatch (the XDP backend then copies them into its UMEM,
// as the kernel would copy into an skb).
//
// # Addresses and neighbour discovery on a shared NIC
//
// The XDP program gives the host kernel every frame that is not a vif's.
// For the stack to be reachable:
//   - IPv4: AddAddress calls Interface.AddIPv4, so ARP requests for the
//     address (broadcast frames) are steered to the vif; replies to the stack's
//     own ARP requests come to its MAC.
//   - IPv6: AddAddress joins the address's solicited-node group
//     (33:33:ff + the low 24 bits), where neighbour solicitations are sent.
//
// A vif's MAC is random per run, so AddAddress also announces each address
// (a gratuitous ARP, an unsolicited neighbour advertisement with the override
// flag): neighbours that cached the previous run's MAC switch at once instead
// of probing the old one for several seconds.
//
// Multicast limitation: the XDP program can steer a multicast MAC to one
// vif per NIC only, and the host kernel then no longer sees it. Joining a
// group another vif holds fails with EEXIST: two vifs on one NIC cannot have
// IPv6 addresses with the same low 24 bits, and the host kernel's own address
// must not share them either (it would stop hearing its solicitations). For
// the same reason the all-nodes group (ff02::1) is joined only on request
// (StackConfig.AllNodes); without it the stack misses router advertisements
// and unsolicited neighbour advertisements, which a statically configured
// host does not need.
//
// # Checksums
//
// AF_XDP hands over the frame's bytes and nothing of what the driver knew
// of its checksum, so every received checksum is verified in software,
// once: the endpoint verifies those of the TCP segments it gives GRO (a
// merged packet's no longer hold, and the stack is told not to check
// them), the stack those of everything else. A frame with a wrong checksum
// is dropped and counted by the stack (e.g. TCP ChecksumErrors).
//
// A kernel sending through a veth leaves TCP and UDP checksums unfinished
// (CHECKSUM_PARTIAL: the field holds the pseudo-header sum only), and XDP
// sees them that way (TestIntegrationVethPartialChecksum shows both cases
// on real frames). Either turn transmit checksum offload off on the
// sending side (ethtool -K PEER tx off) or set
// EndpointOptions.RXChecksumOffload to make the stack trust received
// checksums, which is right only on a link that cannot corrupt frames.
// Real NICs deliver finished checksums.
//
// # Requirements
//
// The package makes no system call of its own: it needs what the interface's
// backend needs (for "xdp:", root or CAP_NET_ADMIN + CAP_BPF + CAP_NET_RAW and
// a kernel with AF_XDP and bpf_link for XDP, 5.9+); over "mem:" it needs
// nothing.
package netstack
