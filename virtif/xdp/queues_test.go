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

// A NIC with four queues, two of them active (`ethtool -L NIC rx 2 tx 2`
// on veth, `combined 2` on a multi-queue virtio-net): queues=all serves
// exactly the active ones — two on veth; virtio-net enables a queue pair
// per CPU more for XDP once the program is on, and receives on them — and
// naming an inactive one says how to enable it.
func TestIntegrationActiveQueues(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{Queues: 4})
	nicName := lab.Link[netlab.Host]
	for side := range 2 {
		err := lab.Do(side, func() error {
			c, err := ethtool.GetChannels(lab.Link[side])
			if err != nil {
				return err
			}
			if c.MaxCombined > 0 {
				c.Combined = 2
			} else {
				c.RX, c.TX = 2, 2
			}
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
	var ch ethtool.Channels
	if err := lab.Do(netlab.Host, func() (err error) { ch, err = ethtool.GetChannels(nicName); return err }); err != nil {
		t.Fatal(err)
	}
	var want []int
	for i := range ch.ActiveQueues() {
		want = append(want, i)
	}
	if q := ifc.Backend().(*Backend).Info().Queues; !slices.Equal(q, want) || (!lab.OnNICs() && len(q) != 2) {
		t.Fatalf("served %v, want %v, the queues in use (channels %+v)", q, want, ch)
	}
	if err := ifc.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = openOn(t, lab, nicName, ",queues=3")
	if !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "queue 3 is not active") || !strings.Contains(err.Error(), "ethtool -L") {
		t.Fatalf("queues=3 of 2 active: %v, want EINVAL naming the queue and ethtool -L", err)
	}
}
