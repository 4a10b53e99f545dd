package netlab

import (
	"bytes"
	"net"
	"testing"

	"github.com/vishvananda/netns"
)

func TestIntegrationLab(t *testing.T) {
	l := NewT(t, Options{Queues: 2})
	out, err := l.Run(Peer, "ping", "-c", "1", "-W", "2", l.Addr[Host].Addr().String())
	if err != nil {
		t.Fatalf("ping across the lab: %v", err)
	}
	if !bytes.Contains(out, []byte("1 received")) {
		t.Fatalf("ping output: %s", out)
	}
	err = l.Do(Host, func() error {
		ifc, err := net.InterfaceByName(l.Link[Host])
		if err != nil {
			return err
		}
		if ifc.Index != l.Index[Host] {
			t.Errorf("index %d, want %d", ifc.Index, l.Index[Host])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := netns.GetFromName(l.NS[0]); err == nil {
		t.Fatalf("namespace %s still exists after Close", l.NS[0])
	}
}
