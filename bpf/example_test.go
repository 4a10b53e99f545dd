//go:build linux

package bpf_test

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"

	"github.com/virtif-xdp/virtif-xdp/bpf"
)

// Steer one vif's frames on a NIC into its AF_XDP sockets, one per queue.
// xskFDs are AF_XDP sockets bound to queues 0..n-1 of the NIC (package xsk).
func Example() {
	var (
		ifindex = 2 // the NIC, in this thread's network namespace
		vif     = 0
		mac, _  = net.ParseMAC("b2:0a:42:0b:0e:00")
		addr    = netip.MustParseAddr("198.18.0.10")
		xskFDs  = []int{} // one per queue
	)
	s, err := bpf.Load(nil)
	if err != nil {
		fmt.Println(err) // e.g. os.ErrPermission without CAP_BPF and CAP_NET_ADMIN
		return
	}
	defer s.Close() // detaches too

	// Attach resolves ifindex in the calling thread's namespace.
	runtime.LockOSThread()
	mode, err := s.Attach(ifindex, bpf.AttachAuto)
	runtime.UnlockOSThread()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("XDP attached in", mode, "mode")

	for q, fd := range xskFDs {
		if err := s.SetSocket(vif, q, fd); err != nil {
			fmt.Println(err)
			return
		}
	}
	_ = s.AddMAC(mac, vif)                                   // unicast
	_ = s.AddMAC(net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}, vif) // joined multicast group
	_ = s.AddIPv4(addr, vif)                                 // ARP requests for addr
	_ = s.SetPromisc(vif, false)

	c, _ := s.Counters(vif)
	fmt.Println("redirected:", c.Redirected(), "missed for want of a socket:", c.NoSocket)
}
