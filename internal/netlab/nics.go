//go:build linux

package netlab

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/virtif-xdp/virtif-xdp/internal/ethtool"
)

// Environment variables that make labs out of existing NICs instead of a
// veth pair, so the integration tests run on a real driver (the kernel lab
// of internal/vmlab runs them on virtio-net NIC pairs wired to each other):
//
//	VIRTIF_LAB_NICS=eth0,eth1     the NICs of a lab: the first goes to the
//	                              host side, the second plays the wire's far end
//	VIRTIF_LAB_NICS_MQ=eth2,eth3  optional: the NICs of a lab that asks for
//	                              Options.Queues > 1
//
// New moves the two NICs into the lab's namespaces (their names stay; Link
// holds them), sets their active queues (ethtool -L combined) to
// Options.Queues and their MTU, and Close moves them back, down, without
// addresses, with the MTU and queues they had. One lab at a time owns a pair
// in a process: a second New takes them from the first lab, which is left
// without them (its Close then only removes its namespaces). A lab that
// asks for more queues than the NICs can have fails with an error wrapping
// errors.ErrUnsupported (NewT skips on it) that names what the device lacks.
// A lab of NICs lives in the process that made it: Open and List (the
// command's lab up and lab down, across processes) know only veth labs.
//
// VIRTIF_LAB_PROMISC=1 also puts the host-side NIC in promiscuous mode, so
// that a NIC's own address filter is out of the way (a diagnostic: what
// passes once every frame reaches XDP).
const (
	NICsEnv    = "VIRTIF_LAB_NICS"
	NICsMQEnv  = "VIRTIF_LAB_NICS_MQ"
	PromiscEnv = "VIRTIF_LAB_PROMISC"
)

// nicLease is what a lab made of existing NICs must give back.
type nicLease struct {
	key      string         // the NICs, as nicOwners knows them
	home     netns.NsHandle // where the NICs came from
	mtu      [2]int
	combined [2]int    // active queues before, 0: not changed
	pci      [2]string // the NIC's PCI device in sysfs ("" if none), for DeleteLink
	mac      [2]net.HardwareAddr
	deleted  [2]bool
	promisc  bool // the host side was put in promiscuous mode (PromiscEnv)
}

var (
	nicLeases sync.Map // *Lab → *nicLease
	nicMu     sync.Mutex
	nicOwners = map[string]*Lab{} // "a,b" → the lab that has them, under nicMu
)

// labNICs returns the pair of existing NICs a lab with opts is made of, or
// ok false for a veth lab.
func labNICs(opts Options) (nics [2]string, ok bool, err error) {
	env := NICsEnv
	v := os.Getenv(NICsEnv)
	if v == "" {
		return nics, false, nil
	}
	if opts.Queues > 1 && os.Getenv(NICsMQEnv) != "" {
		env, v = NICsMQEnv, os.Getenv(NICsMQEnv)
	}
	a, b, found := strings.Cut(v, ",")
	if !found || a == "" || b == "" || a == b {
		return nics, false, fmt.Errorf("netlab: %s=%q: want two NIC names, comma-separated", env, v)
	}
	return [2]string{a, b}, true, nil
}

// takeNICs moves the NICs l.Link names into the lab's namespaces.
func (l *Lab) takeNICs(opts Options, handles [2]netns.NsHandle) error {
	// A lab still holding the NICs (a test that makes one lab after
	// another and closes them at its end) gives them up to this one; an
	// XDP program it left attached goes with a replug (PCI NICs).
	key := l.Link[0] + "," + l.Link[1]
	nicMu.Lock()
	prev := nicOwners[key]
	nicOwners[key] = l
	nicMu.Unlock()
	if prev != nil {
		if err := prev.returnNICs(); err != nil {
			return fmt.Errorf("netlab: take %s from lab %s: %w", key, prev.Name, err)
		}
	}
	home, err := netns.Get()
	if err != nil {
		return fmt.Errorf("netlab: current namespace: %w", err)
	}
	lease := &nicLease{key: key, home: home}
	nicLeases.Store(l, lease)
	for i, name := range l.Link {
		link, err := netlink.LinkByName(name)
		if err != nil {
			return fmt.Errorf("netlab: NIC %s (from %s): %w", name, NICsEnv, err)
		}
		lease.mtu[i] = link.Attrs().MTU
		lease.mac[i] = link.Attrs().HardwareAddr
		if dev, err := filepath.EvalSymlinks("/sys/class/net/" + name + "/device"); err == nil {
			// virtio-net's device is the virtio device; its parent the PCI one.
			for _, d := range []string{dev, filepath.Dir(dev)} {
				if _, err := os.Stat(filepath.Join(d, "remove")); err == nil {
					lease.pci[i] = d
					break
				}
			}
		}
		if x := link.Attrs().Xdp; prev != nil && x != nil && x.Attached && lease.pci[i] != "" {
			// The lab it came from still holds an XDP link on it, which
			// no one else can detach: a NIC fresh from an unplug has none.
			if err := os.WriteFile(filepath.Join(lease.pci[i], "remove"), []byte("1"), 0); err != nil {
				return fmt.Errorf("netlab: unplug %s to drop the XDP program of lab %s: %w", name, prev.Name, err)
			}
			if err := lease.restore(i, name); err != nil {
				return err
			}
			if link, err = netlink.LinkByName(name); err != nil {
				return fmt.Errorf("netlab: NIC %s after a replug: %w", name, err)
			}
		}
		max, cur, err := channels(name)
		switch {
		case err != nil && opts.Queues > 1:
			return fmt.Errorf("netlab: %s cannot report or change its queues (ethtool -l), the lab asks for %d: %w", name, opts.Queues, errors.ErrUnsupported)
		case err != nil:
		case max < opts.Queues:
			return fmt.Errorf("netlab: %s has at most %d queues (ethtool -l), the lab asks for %d: %w", name, max, opts.Queues, errors.ErrUnsupported)
		case cur != opts.Queues:
			if err := setChannels(name, opts.Queues); err != nil {
				return err
			}
			lease.combined[i] = cur
		}
		if err := netlink.LinkSetDown(link); err != nil {
			return fmt.Errorf("netlab: set %s down: %w", name, err)
		}
		if err := netlink.LinkSetMTU(link, opts.MTU); err != nil {
			return fmt.Errorf("netlab: MTU %d on %s: %w", opts.MTU, name, err)
		}
		if i == Host && os.Getenv(PromiscEnv) == "1" {
			if err := netlink.SetPromiscOn(link); err != nil {
				return fmt.Errorf("netlab: promiscuous %s: %w", name, err)
			}
			lease.promisc = true
		}
		if err := netlink.LinkSetNsFd(link, int(handles[i])); err != nil {
			return fmt.Errorf("netlab: move %s into %s: %w", name, l.NS[i], err)
		}
	}
	return nil
}

// channels reads the maximum and current queues of ifname (ethtool -l):
// its combined channels, or for a driver with separate RX and TX channels
// (veth) the smaller of the two.
func channels(ifname string) (max, cur int, err error) {
	c, err := ethtool.GetChannels(ifname)
	if err != nil {
		return 0, 0, fmt.Errorf("netlab: channels of %s: %w", ifname, err)
	}
	if c.MaxCombined > 0 {
		return int(c.MaxCombined), int(c.Combined), nil
	}
	return int(min(c.MaxRX, c.MaxTX)), int(min(c.RX, c.TX)), nil
}

// setChannels makes n queues active on ifname (ethtool -L), combined or RX
// and TX, whichever the driver has.
func setChannels(ifname string, n int) error {
	c, err := ethtool.GetChannels(ifname)
	if err == nil {
		if c.MaxCombined > 0 {
			c.Combined = uint32(n)
		} else {
			c.RX, c.TX = uint32(n), uint32(n)
		}
		err = ethtool.SetChannels(ifname, c)
	}
	if err != nil {
		return fmt.Errorf("netlab: set %d channels on %s: %w", n, ifname, err)
	}
	return nil
}

// DeleteLink makes the NIC of side vanish, and with it the other side's, as
// deleting one end of a veth pair (ip link del) deletes both. NICs from
// VIRTIF_LAB_NICS are removed from their PCI bus (the driver's remove path,
// as a hot-unplug), and Close brings them back by a rescan.
func (l *Lab) DeleteLink(side int) error {
	v, ok := nicLeases.Load(l)
	if !ok {
		_, err := l.Run(side, "ip", "link", "del", l.Link[side])
		return err
	}
	lease := v.(*nicLease)
	for _, i := range []int{side, 1 - side} {
		if lease.pci[i] == "" {
			return fmt.Errorf("netlab: %s is no PCI device, so it cannot be removed: %w", l.Link[i], errors.ErrUnsupported)
		}
		if err := os.WriteFile(filepath.Join(lease.pci[i], "remove"), []byte("1"), 0); err != nil {
			return fmt.Errorf("netlab: remove %s (%s): %w", l.Link[i], lease.pci[i], err)
		}
		lease.deleted[i] = true
	}
	return nil
}

// returnNICs gives the NICs of a lab made of existing NICs back to the
// namespace they came from, as they were. It does nothing for a veth lab.
func (l *Lab) returnNICs() error {
	v, ok := nicLeases.LoadAndDelete(l)
	if !ok {
		return nil
	}
	lease := v.(*nicLease)
	defer func() {
		nicMu.Lock()
		if nicOwners[lease.key] == l {
			delete(nicOwners, lease.key)
		}
		nicMu.Unlock()
	}()
	defer lease.home.Close()
	var errs []error
	for i, name := range l.Link {
		if lease.deleted[i] {
			if err := doAt(lease.home, func() error { return lease.restore(i, name) }); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		err := DoIn(l.NS[i], func() error {
			link, err := netlink.LinkByName(name)
			if errors.As(err, new(netlink.LinkNotFoundError)) {
				return nil // never moved (New failed first)
			} else if err != nil {
				return err
			}
			_ = netlink.LinkSetDown(link)
			addrs, _ := netlink.AddrList(link, netlink.FAMILY_ALL)
			for _, a := range addrs {
				_ = netlink.AddrDel(link, &a)
			}
			return netlink.LinkSetNsFd(link, int(lease.home))
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("netlab: give %s back from %s: %w", name, l.NS[i], err))
			continue
		}
		if err := doAt(lease.home, func() error { return lease.reset(i, name) }); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// doAt runs fn on a locked OS thread inside the namespace h (commands fn
// starts run there too); the thread is discarded afterwards.
func doAt(h netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("netlab: enter namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// restore brings back a NIC DeleteLink removed: a PCI rescan probes it again
// under a new name, found by its MAC and renamed.
func (lease *nicLease) restore(i int, name string) error {
	if err := os.WriteFile("/sys/bus/pci/rescan", []byte("1"), 0); err != nil {
		return fmt.Errorf("netlab: PCI rescan for %s: %w", name, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		links, err := netlink.LinkList()
		if err != nil {
			return fmt.Errorf("netlab: list links: %w", err)
		}
		for _, link := range links {
			if bytes.Equal(link.Attrs().HardwareAddr, lease.mac[i]) {
				if link.Attrs().Name != name {
					if err := netlink.LinkSetName(link, name); err != nil {
						return fmt.Errorf("netlab: rename %s back to %s: %w", link.Attrs().Name, name, err)
					}
				}
				return lease.reset(i, name)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("netlab: %s (MAC %s) did not come back after a PCI rescan", name, lease.mac[i])
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// reset puts back the MTU and queues NIC i had before the lab, in the
// namespace it came from.
func (lease *nicLease) reset(i int, name string) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("netlab: %s after the lab: %w", name, err)
	}
	if i == Host && lease.promisc {
		if err := netlink.SetPromiscOff(link); err != nil {
			return fmt.Errorf("netlab: promiscuous mode off on %s: %w", name, err)
		}
	}
	if link.Attrs().MTU != lease.mtu[i] {
		if err := netlink.LinkSetMTU(link, lease.mtu[i]); err != nil {
			return fmt.Errorf("netlab: MTU %d back on %s: %w", lease.mtu[i], name, err)
		}
	}
	if lease.combined[i] > 0 {
		return setChannels(name, lease.combined[i])
	}
	return nil
}

// TestLinkOptsEnv names link options (",mode=zerocopy") the integration
// tests append to the xdp: link strings they make, so one test binary runs
// against each bind mode of a NIC.
const TestLinkOptsEnv = "VIRTIF_TEST_LINKOPTS"

// TestLinkOpts returns the value of VIRTIF_TEST_LINKOPTS ("" when unset).
func TestLinkOpts() string { return os.Getenv(TestLinkOptsEnv) }

// OnNICs says whether l is made of existing NICs (VIRTIF_LAB_NICS) rather
// than a veth pair.
func (l *Lab) OnNICs() bool {
	_, ok := nicLeases.Load(l)
	return ok
}
