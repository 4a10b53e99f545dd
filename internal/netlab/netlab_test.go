//go:build linux

package netlab_test

import (
	"bytes"
	"errors"
	"net"
	"os"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	. "github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

func TestIntegrationLab(t *testing.T) {
	l := labtest.NewT(t, Options{Queues: 2})
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
	l := labtest.NewT(t, Options{})
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

// Remove takes away what is left of a lab whose veth was deleted by hand,
// says what was missing, and can be repeated.
func TestIntegrationRemovePartial(t *testing.T) {
	l := labtest.NewT(t, Options{})
	if out, err := l.Run(Host, "ip", "link", "del", l.Link[Host]); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	r, err := Remove(l.Name)
	if err != nil {
		t.Fatalf("Remove: %v", err)
	}
	wantRemoved := []string{"namespace " + l.NS[Host], "namespace " + l.NS[Peer]}
	wantMissing := []string{"link " + l.Link[Host] + " in " + l.NS[Host], "link " + l.Link[Peer] + " in " + l.NS[Peer]}
	if !slices.Equal(r.Removed, wantRemoved) || !slices.Equal(r.Missing, wantMissing) {
		t.Fatalf("Remove: removed %q, missing %q; want %q, %q", r.Removed, r.Missing, wantRemoved, wantMissing)
	}
	for _, ns := range l.NS {
		if _, err := netns.GetFromName(ns); err == nil {
			t.Errorf("namespace %s left", ns)
		}
	}
	if r, err := Remove(l.Name); err != nil || !r.Nothing() {
		t.Fatalf("Remove again: %+v, %v; want nothing removed, no error", r, err)
	}
}

// Remove of a whole lab takes the veth pair explicitly, so a namespace that
// something still holds open loses its link too.
func TestIntegrationRemoveHeldNamespace(t *testing.T) {
	l := labtest.NewT(t, Options{})
	h, err := netns.GetFromName(l.NS[Host])
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close() // keeps the namespace alive after its name is gone
	r, err := Remove(l.Name)
	if err != nil || len(r.Missing) != 0 || len(r.Removed) != 4 {
		t.Fatalf("Remove: %+v, %v; want 2 links and 2 namespaces removed", r, err)
	}
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	if _, err := nl.LinkByName(l.Link[Host]); err == nil {
		t.Fatalf("link %s still in the held namespace", l.Link[Host])
	}
}

// New refuses a name whose namespace exists, and leaves that namespace be.
func TestIntegrationNewExisting(t *testing.T) {
	l := labtest.NewT(t, Options{})
	if _, err := New(Options{Name: l.Name}); !errors.Is(err, os.ErrExist) {
		t.Fatalf("New over an existing lab: %v, want ErrExist", err)
	}
	if _, err := Open(l.Name); err != nil {
		t.Fatalf("the existing lab was harmed: %v", err)
	}
}
