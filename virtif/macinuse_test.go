package virtif

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
)

// macRefuser is a backend scheme that refuses the proposed MACs whose RR
// byte is in its set with ErrMACInUse, and records every proposal.
type macRefuser struct {
	mu       sync.Mutex
	refuse   map[byte]bool
	proposed []net.HardwareAddr
}

var refuser = &macRefuser{}

func init() {
	if err := RegisterBackend("macrefuser", func(cfg BackendConfig) (Backend, error) {
		refuser.mu.Lock()
		defer refuser.mu.Unlock()
		refuser.proposed = append(refuser.proposed, append(net.HardwareAddr(nil), cfg.MAC...))
		if refuser.refuse[cfg.MAC[2]] {
			return nil, fmt.Errorf("macrefuser: %s: %w", cfg.MAC, ErrMACInUse)
		}
		return &bareBackend{cfg: cfg}, nil
	}); err != nil {
		panic(err)
	}
}

// A backend that finds the proposed b2:0a:RR:0b:0e:NN in use on its link
// refuses it; the interface proposes another RR, each once, keeping the
// format, and fails with ErrMACInUse only when all 256 are taken.
func TestCreateRetriesMACInUse(t *testing.T) {
	c, err := NewCloner(ClonerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	set := func(free int) {
		refuser.mu.Lock()
		refuser.refuse, refuser.proposed = map[byte]bool{}, nil
		for rr := range 256 {
			if rr != free {
				refuser.refuse[byte(rr)] = true
			}
		}
		refuser.mu.Unlock()
	}
	set(0x42)
	ifc, err := c.CreateUnit(3)
	if err != nil {
		t.Fatal(err)
	}
	if err := ifc.SetLinkStr("macrefuser:x"); err != nil {
		t.Fatal(err)
	}
	if got := ifc.HardwareAddr().String(); got != "b2:0a:42:0b:0e:03" {
		t.Errorf("MAC %s, want the one free RR: b2:0a:42:0b:0e:03", got)
	}
	refuser.mu.Lock()
	seen := map[string]bool{}
	for _, m := range refuser.proposed {
		if m[0] != 0xb2 || m[1] != 0x0a || m[3] != 0x0b || m[4] != 0x0e || m[5] != 3 || seen[m.String()] {
			t.Errorf("proposal %s: not b2:0a:RR:0b:0e:03, or proposed twice", m)
		}
		seen[m.String()] = true
	}
	refuser.mu.Unlock()

	set(-1) // every RR taken
	ifc2, err := c.CreateUnit(4)
	if err != nil {
		t.Fatal(err)
	}
	err = ifc2.SetLinkStr("macrefuser:x")
	if !errors.Is(err, ErrMACInUse) {
		t.Errorf("every RR in use: %v, want ErrMACInUse", err)
	}
	refuser.mu.Lock()
	if n := len(refuser.proposed); n != 256 {
		t.Errorf("%d proposals, want each of the 256 RR once", n)
	}
	refuser.mu.Unlock()
}
