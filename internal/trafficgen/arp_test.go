//go:build linux

package trafficgen

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
)

func TestARPRequest(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	got := ARPRequest(mac, netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3"))
	want := make([]byte, MinFrame)
	copy(want, []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06, // Ethernet, ARP
		0, 1, 0x08, 0x00, 6, 4, 0, 1, // Ethernet/IPv4, request
		2, 0, 0, 0, 0, 1, 198, 18, 0, 2, // sender
		0, 0, 0, 0, 0, 0, 198, 18, 0, 3, // target
	})
	if !bytes.Equal(got, want) {
		t.Fatalf("got  %x\nwant %x", got, want)
	}
}
