package netlab

import (
	"bytes"
	"errors"
	"net"
	"os"
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

func TestIntegrationOpenList(t *testing.T) {
	l := NewT(t, Options{})
	o, err := Open(l.Name)
	if err != nil {
		t.Fatal(err)
	}
	if o.Index != l.Index || o.MAC[0].String() != l.MAC[0].String() || o.Addr != l.Addr {
		t.Fatalf("Open found %+v, want %+v", o, l)
	}
	names, err := List()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, n := range names {
		found = found || n == l.Name
	}
	if !found {
		t.Fatalf("List() = %v, lacks %s", names, l.Name)
	}
	if _, err := Open("vxnothere"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open of a missing lab: %v, want ErrNotExist", err)
	}
}
