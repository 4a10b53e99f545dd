//go:build linux

package ethtool_test

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/ethtool"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// A veth with four queues reduced to two, as `ethtool -L NIC rx 2 tx 2`
// does: the channels say two are active, four allocated.
func TestIntegrationChannels(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{Queues: 4, NoAddr: true})
	name := lab.Link[netlab.Host]
	err := lab.Do(netlab.Host, func() error {
		c, err := ethtool.GetChannels(name)
		if err != nil {
			return err
		}
		if c.MaxRX != 4 || c.MaxTX != 4 || c.ActiveQueues() != 4 {
			t.Errorf("new 4-queue veth: %+v, active %d; want max 4/4, active 4", c, c.ActiveQueues())
		}
		c.RX, c.TX = 2, 2
		if err := ethtool.SetChannels(name, c); err != nil {
			return err
		}
		if c, err = ethtool.GetChannels(name); err != nil {
			return err
		}
		if c.RX != 2 || c.TX != 2 || c.MaxRX != 4 || c.ActiveQueues() != 2 {
			t.Errorf("after rx 2 tx 2: %+v, active %d; want 2 of 4", c, c.ActiveQueues())
		}
		c.RX = 5
		if err := ethtool.SetChannels(name, c); !errors.Is(err, unix.EINVAL) {
			t.Errorf("rx 5 of 4: %v, want EINVAL", err)
		}
		if _, err := ethtool.GetChannels("nosuchnic0"); !errors.Is(err, unix.ENODEV) {
			t.Errorf("missing NIC: %v, want ENODEV", err)
		}
		if _, err := ethtool.GetChannels("a-name-longer-than-ifnamsiz"); !errors.Is(err, unix.EINVAL) {
			t.Errorf("long name: %v, want EINVAL", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The NIC lives in the lab's namespace, not the test's.
	if _, err := ethtool.GetChannels(name); !errors.Is(err, unix.ENODEV) {
		t.Errorf("outside the namespace: %v, want ENODEV", err)
	}
}

// A veth made the user's way, `ip link add A type veth peer name B`, gets a
// queue per CPU allocated and one in use.
func TestIntegrationChannelsPlainVeth(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{NoAddr: true})
	a, b := lab.Name+"a", lab.Name+"b"
	if out, err := lab.Run(netlab.Host, "ip", "link", "add", a, "type", "veth", "peer", "name", b); err != nil {
		t.Fatalf("ip link add: %v: %s", err, out)
	}
	err := lab.Do(netlab.Host, func() error {
		c, err := ethtool.GetChannels(a)
		if err != nil {
			return err
		}
		if c.ActiveQueues() != 1 {
			t.Errorf("plain veth: %+v, active %d, want 1", c, c.ActiveQueues())
		}
		t.Logf("plain veth channels: %+v", c)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
