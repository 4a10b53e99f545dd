//go:build linux

package xdp

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// The default MAC b2:0a:RR:0b:0e:NN avoids what is in use on the segment:
// a MAC the host's neighbour table shows on the NIC, and a MAC another vif
// of this process steers; the backend refuses those proposals
// (virtif.ErrMACInUse) and the interface takes another RR. With every RR
// but one in the neighbour table, the vif gets that one; a second vif gets
// the one freed next, not the first vif's.
func TestIntegrationDefaultMACAvoidsCollisions(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	nic := lab.Link[netlab.Host]
	var batch strings.Builder
	for rr := range 256 {
		if rr != 0x42 {
			fmt.Fprintf(&batch, "neigh add 198.18.1.%d lladdr b2:0a:%02x:0b:0e:00 dev %s nud permanent\n", rr, rr, nic)
		}
	}
	cmd := exec.Command("ip", "-n", lab.NS[netlab.Host], "-batch", "-")
	cmd.Stdin = strings.NewReader(batch.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ip -batch: %v\n%s", err, out)
	}
	a := newVif(t, lab, nil, "")
	if got := a.ifc.HardwareAddr().String(); got != "b2:0a:42:0b:0e:00" {
		t.Fatalf("first vif: MAC %s, want b2:0a:42:0b:0e:00, the one no neighbour has", got)
	}
	if _, err := lab.Run(netlab.Host, "ip", "neigh", "del", "198.18.1.23", "dev", nic); err != nil {
		t.Fatal(err)
	}
	b := newVif(t, lab, nil, "")
	if got := b.ifc.HardwareAddr().String(); got != "b2:0a:17:0b:0e:00" {
		t.Fatalf("second vif: MAC %s, want b2:0a:17:0b:0e:00 (b2:0a:42:... is the first vif's)", got)
	}
}
