//go:build linux

package trafficgen

import (
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

var (
	testDst = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	testSrc = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
	testSIP = netip.MustParseAddr("198.18.0.2")
	testDIP = netip.MustParseAddr("198.18.0.1")
)

func TestUDPFrame(t *testing.T) {
	for _, tc := range []struct{ size, want int }{
		{0, 60}, {42, 60}, {60, 60}, {64, 64}, {1514, 1514}, {1 << 20, MaxFrame},
	} {
		f := UDPFrame(testDst, testSrc, testSIP, testDIP, 1234, 5678, tc.size)
		if len(f) != tc.want {
			t.Errorf("size %d: got %d bytes, want %d", tc.size, len(f), tc.want)
			continue
		}
		SetSeq(f, 0x0102030405060708)
		pkt := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
		if el := pkt.ErrorLayer(); el != nil {
			t.Fatalf("size %d: decode: %v", tc.size, el.Error())
		}
		eth := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		if eth.DstMAC.String() != testDst.String() || eth.SrcMAC.String() != testSrc.String() {
			t.Errorf("size %d: MACs %s > %s", tc.size, eth.SrcMAC, eth.DstMAC)
		}
		ip, ok := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if !ok {
			t.Fatalf("size %d: no IPv4 layer", tc.size)
		}
		if !ip.SrcIP.Equal(testSIP.AsSlice()) || !ip.DstIP.Equal(testDIP.AsSlice()) {
			t.Errorf("size %d: IPs %s > %s", tc.size, ip.SrcIP, ip.DstIP)
		}
		if int(ip.Length) != tc.want-14 {
			t.Errorf("size %d: IP length %d", tc.size, ip.Length)
		}
		// Recompute the checksum with gopacket and compare.
		want := ip.Checksum
		buf := gopacket.NewSerializeBuffer()
		if err := ip.SerializeTo(buf, gopacket.SerializeOptions{ComputeChecksums: true}); err != nil {
			t.Fatal(err)
		}
		got := gopacket.NewPacket(buf.Bytes(), layers.LayerTypeIPv4, gopacket.Default).Layer(layers.LayerTypeIPv4).(*layers.IPv4).Checksum
		if got != want {
			t.Errorf("size %d: IPv4 checksum %#04x, want %#04x", tc.size, want, got)
		}
		udp := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if udp.SrcPort != 1234 || udp.DstPort != 5678 || int(udp.Length) != tc.want-34 {
			t.Errorf("size %d: UDP %d>%d len %d", tc.size, udp.SrcPort, udp.DstPort, udp.Length)
		}
		if n, ok := Seq(f); !ok || n != 0x0102030405060708 {
			t.Errorf("size %d: Seq = %#x, %v", tc.size, n, ok)
		}
	}
}

func TestSeqRejectsOtherFrames(t *testing.T) {
	if _, ok := Seq(make([]byte, 20)); ok {
		t.Error("Seq accepted a short frame")
	}
	f := UDPFrame(testDst, testSrc, testSIP, testDIP, 1, 2, 64)
	f[12] = 0x86 // not IPv4
	if _, ok := Seq(f); ok {
		t.Error("Seq accepted a non-IPv4 frame")
	}
	SetSeq(make([]byte, 10), 1) // must not panic
}

func BenchmarkUDPFrameSetSeq(b *testing.B) {
	f := UDPFrame(testDst, testSrc, testSIP, testDIP, 1, 2, 64)
	b.ReportAllocs()
	for i := range b.N {
		SetSeq(f, uint64(i))
	}
}
