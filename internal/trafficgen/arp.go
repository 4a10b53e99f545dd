//go:build linux

package trafficgen

import (
	"net"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// ARPRequest returns a broadcast ARP request (who-has target, tell ip) from
// mac, padded to MinFrame. ip and target should be IPv4 addresses.
func ARPRequest(mac net.HardwareAddr, ip, target netip.Addr) []byte {
	f := make([]byte, MinFrame)
	header.Ethernet(f).Encode(&header.EthernetFields{
		SrcAddr: tcpip.LinkAddress(mac),
		DstAddr: header.EthernetBroadcastAddress,
		Type:    header.ARPProtocolNumber,
	})
	a := header.ARP(f[header.EthernetMinimumSize:])
	a.SetIPv4OverEthernet()
	a.SetOp(header.ARPRequest)
	copy(a.HardwareAddressSender(), mac)
	s, t := ip.As4(), target.As4()
	copy(a.ProtocolAddressSender(), s[:])
	copy(a.ProtocolAddressTarget(), t[:])
	return f
}
