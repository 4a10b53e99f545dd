//go:build linux

package netlab_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	. "github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// A lab made of existing NICs (VIRTIF_LAB_NICS) carries traffic between
// them, and Close gives them back where they were, down, without
// addresses, with their MTU and queues; the next lab can take them again.
// The "existing NICs" are a veth pair in a namespace of the test's own,
// where New runs as it would in the root namespace of the kernel lab.
func TestIntegrationLabOfNICs(t *testing.T) {
	outer := labtest.NewT(t, Options{Name: "vxnicsout", NoAddr: true, Queues: 4})
	a, b := outer.Link[Host], "vxnicsb"
	if _, err := outer.Run(Host, "ip", "link", "del", a); err != nil {
		t.Fatal(err)
	}
	if _, err := outer.Run(Host, "ip", "link", "add", a, "numtxqueues", "4", "numrxqueues", "4", "type", "veth",
		"peer", "name", b, "numtxqueues", "4", "numrxqueues", "4"); err != nil {
		t.Fatal(err)
	}
	t.Setenv(NICsEnv, a+","+b)
	t.Setenv(NICsMQEnv, "")
	for _, queues := range []int{1, 2, 1} {
		var l *Lab
		err := outer.Do(Host, func() (err error) {
			l, err = New(Options{Queues: queues, MTU: 1400})
			return err
		})
		if err != nil {
			t.Fatalf("New on %s,%s, %d queues: %v", a, b, queues, err)
		}
		if l.Link != [2]string{a, b} {
			t.Fatalf("lab links %v, want the NICs %s,%s", l.Link, a, b)
		}
		out, err := l.Run(Peer, "ping", "-c", "1", "-W", "5", l.Addr[Host].Addr().String())
		if err != nil || !bytes.Contains(out, []byte("1 received")) {
			t.Fatalf("ping across the lab of NICs: %v: %s", err, out)
		}
		out, err = l.Run(Host, "ethtool", "-l", a)
		if err != nil {
			t.Fatal(err)
		}
		if _, cur, _ := strings.Cut(string(out), "Current hardware settings:"); !strings.Contains(cur, "RX:\t\t"+string(rune('0'+queues))) &&
			!strings.Contains(cur, "Combined:\t"+string(rune('0'+queues))) {
			t.Errorf("%d queues asked, ethtool -l says %s", queues, out)
		}
		if err := l.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		err = outer.Do(Host, func() error {
			for _, n := range []string{a, b} {
				link, err := netlink.LinkByName(n)
				if err != nil {
					return err
				}
				addrs, _ := netlink.AddrList(link, netlink.FAMILY_V4)
				if link.Attrs().MTU != 1500 || link.Attrs().Flags&1 != 0 || len(addrs) != 0 {
					t.Errorf("%s after Close: MTU %d, flags %v, addresses %v; want 1500, down, none", n, link.Attrs().MTU, link.Attrs().Flags, addrs)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("NICs not back after Close: %v", err)
		}
	}
	// A second lab takes the NICs from one still open; the first one's
	// Close then only removes its namespaces.
	var first, second *Lab
	err := outer.Do(Host, func() (err error) {
		if first, err = New(Options{}); err != nil {
			return err
		}
		second, err = New(Options{})
		return err
	})
	if err != nil {
		t.Fatalf("second lab on the NICs of an open one: %v", err)
	}
	if out, err := second.Run(Peer, "ping", "-c", "1", "-W", "5", second.Addr[Host].Addr().String()); err != nil {
		t.Fatalf("ping across the second lab: %v: %s", err, out)
	}
	if err := first.Close(); err != nil {
		t.Fatalf("Close of the lab that gave its NICs up: %v", err)
	}
	// A veth is no PCI device: DeleteLink cannot unplug it.
	if err := second.DeleteLink(Host); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("DeleteLink of a veth used as a NIC: %v, want ErrUnsupported", err)
	}
	if err := second.Close(); err != nil {
		t.Fatalf("Close of the second lab: %v", err)
	}
	// More queues than the NIC can have: a skip-worthy error naming it.
	err = outer.Do(Host, func() error {
		_, err := New(Options{Queues: 8})
		return err
	})
	if !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), "at most 4 queues") {
		t.Fatalf("8 queues on a 4-queue NIC: %v, want ErrUnsupported naming the maximum", err)
	}
}
