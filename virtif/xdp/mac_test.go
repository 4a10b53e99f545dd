//go:build linux

package xdp

import (
	"fmt"
	"net"
	"testing"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// 4. After any sequence of MAC changes — the MAC the vif has already, A to
// B and back — exactly the current MAC is steered to the vif; the others
// reach the host kernel. (Setting the current MAC used to add it again and
// then delete it; in the program's fast table it took a second slot that
// the delete did not free, so an old MAC stayed steered for good.)
func TestIntegrationSetHardwareAddrSequences(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	v := newVif(t, lab, nil, "")
	host := openRaw(t, lab, netlab.Host)
	peer := openRaw(t, lab, netlab.Peer)
	macs := []net.HardwareAddr{
		append(net.HardwareAddr(nil), v.ifc.HardwareAddr()...),
		{0x02, 0xb0, 0, 0, 0, 0x0b},
		{0x02, 0xb0, 0, 0, 0, 0x0c},
	}
	probe := 0
	expect := func(step string, cur int) {
		t.Helper()
		for i, m := range macs {
			probe++
			marker := fmt.Sprintf("MACSEQ%04d", probe)
			before := stat(v.ifc.Stats(), "xdp_unicast")
			peer.send(t, frame(lab, m, marker, 100))
			if i == cur {
				if !waitFor(func() bool { return stat(v.ifc.Stats(), "xdp_unicast") == before+1 }) {
					t.Fatalf("%s: frame to the current MAC %s not steered to the vif", step, m)
				}
				continue
			}
			if !unsteered(t, lab, v, host, peer, m, marker) {
				t.Fatalf("%s: frame to the old MAC %s did not go where an unsteered one must (steered to the vif: %t)",
					step, m, stat(v.ifc.Stats(), "xdp_unicast") != before)
			}
		}
	}
	set := func(i int) {
		t.Helper()
		if err := v.b.SetHardwareAddr(macs[i]); err != nil {
			t.Fatalf("set %s: %v", macs[i], err)
		}
	}
	expect("start", 0)
	for _, seq := range [][]int{{0}, {0, 0}, {0, 1}, {1, 0}, {0, 0, 1, 1, 2}, {2, 1, 2, 0}, {1, 1, 1, 0, 0}} {
		for _, i := range seq {
			set(i)
		}
		expect(fmt.Sprint("after ", seq), seq[len(seq)-1])
	}
}

// unsteered sends a frame from the peer to mac, which no vif has, and says
// whether it went where an unsteered frame must: on veth to the host kernel
// (host, a raw socket on the host side, gets it); on a NIC that filters by
// address (the lab's existing NICs, virtio-net in internal/vmlab) nowhere:
// mac is off the NIC's address list, so the NIC drops the frame before the
// program runs, and no vif is handed it.
func unsteered(t *testing.T, lab *netlab.Lab, v *testVif, host, peer *rawSock, mac net.HardwareAddr, marker string) bool {
	t.Helper()
	if !lab.OnNICs() {
		peer.send(t, frame(lab, mac, marker, 100))
		return len(host.collect([]byte(marker), 1, 5e9)) == 1
	}
	if listed(t, lab, mac) {
		t.Logf("%v is on %s's address list: %v", mac, lab.Link[netlab.Host], fdbSelf(t, lab))
		return false
	}
	before := stat(v.ifc.Stats(), "xdp_unicast")
	peer.send(t, frame(lab, mac, marker, 100))
	settle()
	return stat(v.ifc.Stats(), "xdp_unicast") == before
}
