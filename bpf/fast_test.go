//go:build linux

package bpf

import (
	"net"
	"testing"
)

// More unicast MACs than the fast map holds: every one is still steered to
// its vif (by the fast map or the hash map behind it), also after MACs in
// the fast map are deleted and others take their place; deleted ones pass.
func TestIntegrationFastMACs(t *testing.T) {
	s := loadT(t, nil)
	const n = 7 // > FAST_MACS (4)
	macs := make([]net.HardwareAddr, n)
	for i := range macs {
		macs[i] = net.HardwareAddr{0x02, 0xfa, 0x57, 0, 0, byte(i + 1)}
		if err := s.AddMAC(macs[i], i); err != nil {
			t.Fatal(err)
		}
	}
	// No sockets: a frame steered to vif v passes and counts NoSocket in
	// v's row, which tells which vif the program chose.
	expect := func(mac net.HardwareAddr, vif int) {
		t.Helper()
		before := snap(t, s, 0, 1, 2, 3, 4, 5, 6)
		if got := run(t, s, ether(mac, 0x0800, nil)); got != xdpPass {
			t.Fatalf("%s: action %d, want XDP_PASS (no socket)", mac, got)
		}
		after := snap(t, s, 0, 1, 2, 3, 4, 5, 6)
		for v := range n {
			d := sub(after[v], before[v])
			want := RuleCounters{}
			if v == vif {
				want.NoSocket = 1
			}
			if d != want {
				t.Fatalf("%s: vif %d counters moved by %+v, want %+v", mac, v, d, want)
			}
		}
		if vif < 0 {
			if d := sub(after[-1], before[-1]); d != (RuleCounters{Pass: 1}) {
				t.Fatalf("%s: host counters moved by %+v, want one Pass", mac, d)
			}
		}
	}
	for i, m := range macs {
		expect(m, i)
	}
	for _, i := range []int{0, 2, 5} {
		if err := s.DelMAC(macs[i], i); err != nil {
			t.Fatal(err)
		}
	}
	for i, m := range macs {
		if i == 0 || i == 2 || i == 5 {
			expect(m, -1)
		} else {
			expect(m, i)
		}
	}
	// Re-adding fills the fast map again; every MAC still lands right.
	if err := s.AddMAC(macs[2], 2); err != nil {
		t.Fatal(err)
	}
	expect(macs[2], 2)
	expect(net.HardwareAddr{0x02, 0xfa, 0x57, 0, 0, 0x99}, -1)
	if s.extra < 0 || s.extra > n {
		t.Fatalf("extra = %d", s.extra)
	}
}
