package bpf

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// model is the steering rules written plainly in Go, for the state setup
// creates: it returns the action and which counter (row -1 host, else vif;
// rule) the program must move.
type model struct {
	macs    map[[6]byte]int
	ipv4s   map[[4]byte]int
	sockets map[int]bool // vifs with a socket on queue 0
	promisc int          // -1 for none
}

func setupModel() model {
	return model{
		macs:    map[[6]byte]int{[6]byte(mac0): 0, [6]byte(mcast0): 0, [6]byte(mac1): 1, [6]byte(mcast1): 1},
		ipv4s:   map[[4]byte]int{ip0.As4(): 0, ip1.As4(): 1},
		sockets: map[int]bool{0: true},
		promisc: -1,
	}
}

type verdict struct {
	action uint32
	vif    int // -1: only the host row moves
	rule   int
}

func (m model) deliver(vif, rule int) verdict {
	if m.sockets[vif] {
		return verdict{xdpRedirect, vif, rule}
	}
	return verdict{xdpPass, vif, ruleNoSocket}
}

func (m model) steer(f []byte) verdict {
	if len(f) < 14 {
		return verdict{xdpPass, -1, ruleRunt}
	}
	owner, joined := m.macs[[6]byte(f[:6])]
	if joined && f[0]&1 == 0 {
		return m.deliver(owner, ruleUnicast)
	}
	if binary.BigEndian.Uint16(f[12:]) == 0x0806 {
		if len(f) < 42 {
			return verdict{xdpPass, -1, ruleRunt}
		}
		a := f[14:]
		if bytes.Equal(a[:8], []byte{0, 1, 8, 0, 6, 4, 0, 1}) {
			if v, ok := m.ipv4s[[4]byte(a[24:28])]; ok {
				return m.deliver(v, ruleARP)
			}
		}
	}
	if joined {
		return m.deliver(owner, ruleMulticast)
	}
	if m.promisc >= 0 {
		return m.deliver(m.promisc, rulePromisc)
	}
	return verdict{xdpPass, -1, rulePass}
}

func column(c RuleCounters, rule int) uint64 {
	return [numRules]uint64{c.Unicast, c.Multicast, c.ARP, c.Promisc, c.Pass, c.NoSocket, c.Runt}[rule]
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
	f.Fuzz(func(t *testing.T, frame []byte, promisc uint8) {
		if len(frame) < 14 {
			frame = append(frame, make([]byte, 14-len(frame))...)
		}
		if len(frame) > 3000 {
			frame = frame[:3000] // test runs take at most a page, less headroom
		}
		m := setupModel()
		m.promisc = int(promisc%3) - 1
		if m.promisc >= 0 {
			if err := s.SetPromisc(m.promisc, true); err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := s.SetPromisc(m.promisc, false); err != nil {
					t.Error(err)
				}
			}()
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
			if row == want.vif || (row == -1 && want.rule >= rulePass) {
				// The host row counts every pass, the vif row what was its.
				exp = counterOf(want.rule)
			}
			if d := sub(after[row], before[row]); d != exp {
				t.Fatalf("row %d moved by %+v, model expects %+v (%+v)", row, d, exp, want)
			}
		}
	})
}

func counterOf(rule int) RuleCounters {
	var c [numRules]uint64
	c[rule] = 1
	return RuleCounters{Unicast: c[ruleUnicast], Multicast: c[ruleMulticast], ARP: c[ruleARP],
		Promisc: c[rulePromisc], Pass: c[rulePass], NoSocket: c[ruleNoSocket], Runt: c[ruleRunt]}
}
