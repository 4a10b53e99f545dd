//go:build linux

package netlab

import (
	"errors"

	"github.com/vishvananda/netlink"
)

// LinkExists reports whether the named namespace ns has a link ifname.
func LinkExists(ns, ifname string) (bool, error) {
	found := false
	err := DoIn(ns, func() error {
		_, err := netlink.LinkByName(ifname)
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		found = err == nil
		return err
	})
	return found, err
}
