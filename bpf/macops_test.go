//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// macPool: more unicast MACs than the fast map holds (FAST_MACS is 4), and a
// multicast group, so sequences exercise promotion from the hash map.
var macPool = []net.HardwareAddr{
	{0x02, 0xa0, 0, 0, 0, 1}, {0x02, 0xa0, 0, 0, 0, 2}, {0x02, 0xa0, 0, 0, 0, 3},
	{0x02, 0xa0, 0, 0, 0, 4}, {0x02, 0xa0, 0, 0, 0, 5}, {0x02, 0xa0, 0, 0, 0, 6},
	{0x01, 0x00, 0x5e, 0, 0, 7},
}

const macOpVifs = 3

// macOps applies the operations ops encodes (one byte each: add or delete,
// which MAC of macPool, which vif) to s and to a Go model of who owns
// which MAC, and after each checks the error against the model, that the
// fast map holds no MAC twice nor one the model does not, and, through
// test runs of the real program, that every MAC of the pool is steered to
// exactly its owner and a MAC nobody owns passes to the host.
func macOps(t *testing.T, s *Steering, ops []byte) {
	t.Helper()
	owner := map[int]int{} // index in macPool -> vif
	vifs := make([]int, macOpVifs)
	for i := range vifs {
		vifs[i] = i
	}
	for step, op := range ops {
		add, m, vif := op&1 == 0, int(op>>1)%len(macPool), int(op>>4)%macOpVifs
		var err error
		var want error
		cur, held := owner[m]
		if add {
			err = s.AddMAC(macPool[m], vif)
			switch {
			case !held:
				owner[m] = vif
			case cur != vif:
				want = unix.EEXIST
			}
		} else {
			err = s.DelMAC(macPool[m], vif)
			if held && cur == vif {
				delete(owner, m)
			} else {
				want = unix.ENOENT
			}
		}
		if (want == nil) != (err == nil) || (want != nil && !errors.Is(err, want)) {
			t.Fatalf("step %d: add=%t %s vif %d: error %v, want %v", step, add, macPool[m], vif, err, want)
		}
		// The fast map: each entry once, each one the model's.
		seen := map[[6]byte]bool{}
		inFast := 0
		for _, e := range s.fast.E {
			if e.Vif1 == 0 {
				continue
			}
			var mac [6]byte
			mac[0], mac[1], mac[2], mac[3] = byte(e.Hi), byte(e.Hi>>8), byte(e.Hi>>16), byte(e.Hi>>24)
			mac[4], mac[5] = byte(e.Lo), byte(e.Lo>>8)
			if seen[mac] {
				t.Fatalf("step %d: fast map holds %s twice: %+v", step, net.HardwareAddr(mac[:]), s.fast)
			}
			seen[mac] = true
			inFast++
			found := false
			for i, pm := range macPool {
				if [6]byte(pm) == mac {
					if o, ok := owner[i]; !ok || o != int(e.Vif1)-1 {
						t.Fatalf("step %d: fast map steers %s to vif %d; model: owner %d (held %t)", step, pm, e.Vif1-1, o, ok)
					}
					found = true
				}
			}
			if !found {
				t.Fatalf("step %d: fast map holds unknown MAC %x", step, mac)
			}
		}
		unicast := 0
		for i := range owner {
			if macPool[i][0]&1 == 0 {
				unicast++
			}
		}
		if inFast+s.extra != unicast {
			t.Fatalf("step %d: %d MACs in the fast map + %d extra, model has %d unicast", step, inFast, s.extra, unicast)
		}
		// Real frames: no sockets are set, so a frame steered to vif v
		// passes and counts NoSocket in v's row.
		for i, mac := range macPool {
			before := snap(t, s, vifs...)
			if got := run(t, s, ether(mac, 0x0800, nil)); got != xdpPass {
				t.Fatalf("step %d: %s: action %d, want XDP_PASS (no sockets)", step, mac, got)
			}
			after := snap(t, s, vifs...)
			o, held := owner[i]
			for _, v := range vifs {
				want := RuleCounters{}
				if held && v == o {
					want.NoSocket = 1
				}
				if d := sub(after[v], before[v]); d != want {
					t.Fatalf("step %d: frame to %s moved vif %d's counters by %+v, want %+v (owner %d, held %t)", step, mac, v, d, want, o, held)
				}
			}
			if want := (RuleCounters{Pass: 1}); !held && sub(after[-1], before[-1]) != want {
				t.Fatalf("step %d: frame to unowned %s: host counters moved by %+v, want one Pass", step, mac, sub(after[-1], before[-1]))
			}
		}
	}
}

// undoAll deletes every MAC of the pool from every vif, so the next
// sequence starts from empty maps.
func undoAll(s *Steering) {
	for _, m := range macPool {
		for v := range macOpVifs {
			_ = s.DelMAC(m, v)
		}
	}
}

// Adding a MAC a vif already has and then deleting it leaves it steered
// nowhere (it used to take a second fast-map slot, and the delete freed only
// one); the same for A->B->A-like sequences of a vif's MAC.
func TestIntegrationMACSequences(t *testing.T) {
	enc := func(add bool, m, vif int) byte {
		b := byte(m<<1 | vif<<4)
		if !add {
			b |= 1
		}
		return b
	}
	for name, ops := range map[string][]byte{
		"same twice, then delete": {enc(true, 0, 0), enc(true, 0, 0), enc(false, 0, 0)},
		"A B A":                   {enc(true, 0, 1), enc(true, 1, 1), enc(false, 0, 1), enc(true, 0, 1), enc(false, 1, 1), enc(false, 0, 1)},
		"add held by another":     {enc(true, 2, 0), enc(true, 2, 1), enc(false, 2, 1), enc(false, 2, 0)},
		"overflow, repeat, promote": {enc(true, 0, 0), enc(true, 1, 0), enc(true, 2, 1), enc(true, 3, 1), enc(true, 4, 2),
			enc(true, 3, 1), enc(true, 4, 2), enc(false, 0, 0), enc(false, 3, 1), enc(false, 4, 2), enc(false, 1, 0), enc(false, 2, 1)},
	} {
		t.Run(name, func(t *testing.T) { macOps(t, loadT(t, nil), ops) })
	}
	// Random sequences.
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20 {
		ops := make([]byte, 30)
		for j := range ops {
			ops[j] = byte(r.Uint32())
		}
		t.Run(fmt.Sprint("random", i), func(t *testing.T) { macOps(t, loadT(t, nil), ops) })
	}
}

// FuzzMACOps runs arbitrary sequences of AddMAC and DelMAC against the model.
func FuzzMACOps(f *testing.F) {
	f.Add([]byte{0, 0, 1})
	f.Add([]byte{0x10, 0x12, 0x11, 0x10, 0x13, 0x11})
	s := loadT(f, nil)
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 64 {
			ops = ops[:64]
		}
		defer undoAll(s)
		macOps(t, s, ops)
	})
}
