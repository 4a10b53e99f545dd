//go:build linux

package xdp

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/ethtool"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/virtif"
)

// openOn opens a vif on ifname in the lab's host namespace with link
// options opts.
func openOn(t *testing.T, lab *netlab.Lab, ifname, opts string) (*virtif.Interface, error) {
	t.Helper()
	c, err := virtif.NewCloner(virtif.ClonerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	var ifc *virtif.Interface
	err = lab.Do(netlab.Host, func() error {
		if ifc, err = c.Create(); err != nil {
			return err
		}
		return ifc.SetLinkStr("xdp:" + ifname + opts)
	})
	return ifc, err
}

// A veth with four queues, two of them active (`ethtool -L NIC rx 2 tx 2`):
// queues=all serves exactly the two, and naming an inactive one says how to
// enable it.
func TestIntegrationActiveQueues(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{Queues: 4})
	nicName := lab.Link[netlab.Host]
	for side := range 2 {
		err := lab.Do(side, func() error {
			c, err := ethtool.GetChannels(lab.Link[side])
			if err != nil {
				return err
			}
			c.RX, c.TX = 2, 2
			return ethtool.SetChannels(lab.Link[side], c)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	ifc, err := openOn(t, lab, nicName, "")
	if err != nil {
		t.Fatalf("queues=all on 2 active of 4: %v", err)
	}
	if q := ifc.Backend().(*Backend).Info().Queues; !slices.Equal(q, []int{0, 1}) {
		t.Fatalf("served %v, want [0 1]", q)
	}
	if err := ifc.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = openOn(t, lab, nicName, ",queues=3")
	if !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "queue 3 is not active") || !strings.Contains(err.Error(), "ethtool -L") {
		t.Fatalf("queues=3 of 2 active: %v, want EINVAL naming the queue and ethtool -L", err)
	}
}
