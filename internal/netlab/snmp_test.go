//go:build linux

package netlab_test

import (
	"testing"

	. "github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// The kernel's own files parse, with the counters the demo reads.
func TestIntegrationSNMP(t *testing.T) {
	l := labtest.NewT(t, Options{})
	c, err := l.SNMP(Host)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"Icmp:OutEchoReps", "Tcp:OutSegs", "Icmp6OutEchoReplies", "Tcp:MaxConn"} {
		if _, ok := c[k]; !ok {
			t.Errorf("no %s in %d counters", k, len(c))
		}
	}
	if c["Tcp:MaxConn"] != -1 {
		t.Errorf("Tcp:MaxConn = %d, want -1 (the kernel's fixed value)", c["Tcp:MaxConn"])
	}
}
