//go:build linux

package bpf

import (
	"net/netip"
	"reflect"
	"testing"
)

// model is what the program must do for the state setup creates: the
// rules as Go (Rules, which the AF_XDP backend uses itself for a driver
// without XDP metadata, so this test also proves that code matches the
// program), and the sockets. It returns the action and which counter (row
// -1 host, else vif; rule) the program must move.
type model struct {
	rules   *Rules
	sockets map[int]bool // vifs with a socket on queue 0
}

// setupModel is setup's state written out by hand, with vif promisc (-1:
// none) promiscuous.
func setupModel(promisc int) model {
	return model{
		rules: NewRules(map[[6]byte]int{[6]byte(mac0): 0, [6]byte(mcast0): 0, [6]byte(mac1): 1, [6]byte(mcast1): 1},
			map[[4]byte]int{ip0.As4(): 0, ip1.As4(): 1}, promisc),
		sockets: map[int]bool{0: true},
	}
}

type verdict struct {
	action uint32
	vif    int // -1: only the host row moves
	rule   Rule
}

func (m model) steer(f []byte) verdict {
	vif, rule := m.rules.Match(f)
	switch {
	case vif < 0:
		return verdict{xdpPass, -1, rule}
	case m.sockets[vif]:
		return verdict{xdpRedirect, vif, rule}
	}
	return verdict{xdpPass, vif, RuleNoSocket}
}

func column(c RuleCounters, rule Rule) uint64 {
	return [numRules]uint64{c.Unicast, c.Multicast, c.ARP, c.Promisc, c.Pass, c.NoSocket, c.Runt, c.NoMeta}[rule]
}

// FuzzSteer runs arbitrary frames through the real program and checks the
// action and the counters against the model: only XDP_PASS or XDP_REDIRECT,
// exactly the one expected counter moved. BPF_PROG_TEST_RUN refuses frames
// shorter than 14 bytes, so shorter inputs are padded with zeros.
func FuzzSteer(f *testing.F) {
	for _, tc := range steerCases() {
		f.Add(tc.frame, uint8(0))
	}
	f.Add(ether(macOther, 0x0800, nil), uint8(1))
	f.Add(ether(bcast, 0x0806, arp(1, netip.MustParseAddr("198.18.0.11"))), uint8(2))
	f.Add(ether(mac1, 0x0806, nil)[:20], uint8(2))

	s := loadT(f, nil)
	setup(f, s)
	f.Fuzz(func(t *testing.T, frame []byte, promisc uint8) { checkSteer(t, s, frame, promisc) })
}

// checkSteer test-runs the program on frame (zero-padded to 14 bytes, cut
// to 3000) with promiscuous vif promisc%3-1 (-1: none) and checks the
// action and the counters against the model.
func checkSteer(t *testing.T, s *Steering, frame []byte, promisc uint8) {
	if len(frame) < 14 {
		frame = append(frame, make([]byte, 14-len(frame))...)
	}
	if len(frame) > 3000 {
		frame = frame[:3000] // test runs take at most a page, less headroom
	}
	checkSteerFrame(t, s, frame, promisc)
}

// checkSteerFrame is checkSteer without the cut: a frame longer than a page
// runs as a multi-buffer frame.
func checkSteerFrame(t *testing.T, s *Steering, frame []byte, promisc uint8) {
	p := int(promisc%3) - 1
	m := setupModel(p)
	if p >= 0 {
		if err := s.SetPromisc(p, true); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := s.SetPromisc(p, false); err != nil {
				t.Error(err)
			}
		}()
	}
	// The Steering's own Rules are what was registered.
	if !reflect.DeepEqual(s.Rules(), m.rules) {
		t.Fatalf("Steering.Rules %+v, registered %+v", s.Rules(), m.rules)
	}
	want := m.steer(frame)
	before := snap(t, s, 0, 1)
	got := run(t, s, frame)
	after := snap(t, s, 0, 1)
	if got != xdpPass && got != xdpRedirect {
		t.Fatalf("action %d, only XDP_PASS (2) and XDP_REDIRECT (4) may happen", got)
	}
	if got != want.action {
		t.Fatalf("action %d, model says %d (%+v)", got, want.action, want)
	}
	for row := -1; row <= 1; row++ {
		var exp RuleCounters
		if row == want.vif || (row == -1 && want.rule >= RulePass) {
			// The host row counts every pass, the vif row what was its.
			exp = counterOf(want.rule)
		}
		if d := sub(after[row], before[row]); d != exp {
			t.Fatalf("row %d moved by %+v, model expects %+v (%+v)", row, d, exp, want)
		}
	}
}

func counterOf(rule Rule) RuleCounters {
	var c [numRules]uint64
	c[rule] = 1
	return RuleCounters{Unicast: c[RuleUnicast], Multicast: c[RuleMulticast], ARP: c[RuleARP],
		Promisc: c[RulePromisc], Pass: c[RulePass], NoSocket: c[RuleNoSocket], Runt: c[RuleRunt], NoMeta: c[RuleNoMeta]}
}

// Rules after registrations and their removal, as Steering keeps them: the
// state setup made, then promiscuous vif 1 and removals.
func TestIntegrationRulesFollowRegistrations(t *testing.T) {
	s := loadT(t, nil)
	if want := NewRules(nil, nil, -1); !reflect.DeepEqual(s.Rules(), want) {
		t.Fatalf("after Load: %+v", s.Rules())
	}
	setup(t, s)
	if want := setupModel(-1).rules; !reflect.DeepEqual(s.Rules(), want) {
		t.Fatalf("after setup: %+v, want %+v", s.Rules(), want)
	}
	old := s.Rules()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.SetPromisc(1, true))
	must(s.DelMAC(mcast0, 0))
	must(s.DelIPv4(ip1, 1))
	if err := s.AddMAC(mac1, 0); err == nil { // held by vif 1: no change
		t.Fatal("AddMAC of another vif's MAC succeeded")
	}
	want := NewRules(map[[6]byte]int{[6]byte(mac0): 0, [6]byte(mac1): 1, [6]byte(mcast1): 1}, map[[4]byte]int{ip0.As4(): 0}, 1)
	if !reflect.DeepEqual(s.Rules(), want) {
		t.Fatalf("after changes: %+v, want %+v", s.Rules(), want)
	}
	if !reflect.DeepEqual(old, setupModel(-1).rules) {
		t.Fatal("a Rules returned before changed afterwards")
	}
	if v, r := s.Rules().Match(ether(macOther, 0x0800, nil)); v != 1 || r != RulePromisc {
		t.Fatalf("unclaimed frame: vif %d rule %d, want 1 promiscuous", v, r)
	}
	req := ether(bcast, 0x0806, arp(1, ip0))
	if a := testing.AllocsPerRun(100, func() { s.Rules().Match(req) }); a != 0 {
		t.Fatalf("Match allocates %.0f times per frame", a)
	}
}
