//go:build linux

package xdp

import (
	"errors"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/virtif"
)

// Open's errors say what is wrong and what to do: a bad link string names
// the key, a missing NIC says where to look; missing privileges name the
// operation refused and leave the remedy to the command.
func TestIntegrationOpenErrors(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	c, err := virtif.NewCloner(virtif.ClonerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	try := func(link string, dropCaps bool) error {
		var err error
		if derr := lab.Do(netlab.Host, func() error {
			if dropCaps {
				// Capabilities are per thread; Do throws the thread away.
				if err := labtest.DropCaps(); err != nil {
					return err
				}
			}
			ifc, cerr := c.Create()
			if cerr != nil {
				return cerr
			}
			err = ifc.SetLinkStr(link)
			return c.Destroy(ifc.Name())
		}); derr != nil {
			t.Fatal(derr)
		}
		return err
	}
	for _, tc := range []struct {
		name, link string
		dropCaps   bool
		is         error
		says       []string
	}{
		{"unknown key", "xdp:" + lab.Link[netlab.Host] + ",speed=fast", false, unix.EINVAL, []string{`unknown key "speed"`}},
		{"bad value", "xdp:" + lab.Link[netlab.Host] + ",queues=9-1", false, unix.EINVAL, []string{`"queues"`}},
		{"no such NIC", "xdp:nosuchnic0", false, unix.ENODEV, []string{"nosuchnic0", "ip link"}},
		{"queue beyond the NIC", "xdp:" + lab.Link[netlab.Host] + ",queues=3", false, unix.EINVAL, []string{"queue 3 does not exist"}},
		{"no privileges", "xdp:" + lab.Link[netlab.Host], true, os.ErrPermission, []string{"load the steering program"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := try(tc.link, tc.dropCaps)
			if !errors.Is(err, tc.is) {
				t.Fatalf("error %v, want %v", err, tc.is)
			}
			for _, s := range tc.says {
				if !strings.Contains(err.Error(), s) {
					t.Fatalf("error %q does not say %q", err, s)
				}
			}
			t.Log(err)
		})
	}
	// Nothing was left attached by the failures.
	if xdpAttached(t, lab) {
		t.Fatal("an XDP program was left on the NIC by a failed open")
	}
}
