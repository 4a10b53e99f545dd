//go:build linux

package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/virtif/xdp"
)

// errHostIdentity marks a run refused because it would take an address or
// MAC the host already uses (--allow-host-identity overrides).
var errHostIdentity = errors.New("the host uses it (--allow-host-identity takes it anyway)")

// heldAddr is an address the host uses, and where.
type heldAddr struct {
	addr  netip.Addr
	where string // "on eth0", "EUI-64 link-local of eth0"
}

// heldMAC is a MAC in use on the NIC, and by what.
type heldMAC struct {
	mac net.HardwareAddr
	by  string
}

// hostIdentity is what the host holds in the NIC's namespace that run must
// not take: every address of the namespace, the IPv6 addresses on the NIC's
// link (the NIC, its uppers — VLANs, macvlans — and its master, with each
// one's EUI-64 link-local, held or not), and the MACs the NIC receives for
// the host: its own, its uppers' and master's, and the unicast entries of
// its address list (`bridge fdb show dev NIC self`) that no virtif-xdp
// process that has died left behind.
type hostIdentity struct {
	nic    string
	addrs  []heldAddr
	onLink []heldAddr
	macs   []heldMAC
}

// readHostIdentity reads the host's identity around the NIC ifname, in the
// named namespace (or the process's own).
func readHostIdentity(netns, ifname string) (*hostIdentity, error) {
	id := &hostIdentity{nic: ifname}
	read := func() error {
		nic, err := netlink.LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("%s: %w", ifname, err)
		}
		links, err := netlink.LinkList()
		if err != nil {
			return fmt.Errorf("listing the links: %w", err)
		}
		na := nic.Attrs()
		byIndex := map[int]string{}
		onLink := map[int]bool{} // the NIC, its uppers and master
		for _, l := range links {
			a := l.Attrs()
			byIndex[a.Index] = a.Name
			related := ""
			switch {
			case a.Index == na.Index:
				related = "the NIC " + a.Name
			case a.ParentIndex == na.Index:
				related = a.Name + " (" + l.Type() + " on " + ifname + ")"
			case na.MasterIndex != 0 && a.Index == na.MasterIndex:
				related = a.Name + " (" + ifname + "'s master)"
			}
			if related == "" {
				continue
			}
			onLink[a.Index] = true
			if len(a.HardwareAddr) != 6 {
				continue
			}
			id.macs = append(id.macs, heldMAC{a.HardwareAddr, related})
			if ll, ok := eui64LinkLocal(a.HardwareAddr); ok {
				id.onLink = append(id.onLink, heldAddr{ll, "the EUI-64 link-local of " + a.Name})
			}
		}
		addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("listing the addresses: %w", err)
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			h := heldAddr{ip, "on " + byIndex[a.LinkIndex]}
			id.addrs = append(id.addrs, h)
			if ip.Is6() && onLink[a.LinkIndex] {
				id.onLink = append(id.onLink, h)
			}
		}
		fdb, err := netlink.NeighList(na.Index, unix.AF_BRIDGE)
		if err != nil {
			return fmt.Errorf("%s: reading its address list: %w", ifname, err)
		}
		recorded, _ := xdp.RecordedMACs(na.Index)
		for _, n := range fdb {
			if n.Flags&netlink.NTF_SELF == 0 || len(n.HardwareAddr) != 6 || n.HardwareAddr[0]&1 != 0 {
				continue
			}
			alive, ours := recorded[n.HardwareAddr.String()]
			switch {
			case ours && !alive:
				continue // a dead process's leftover: the open removes it
			case ours:
				id.macs = append(id.macs, heldMAC{n.HardwareAddr, "another running virtif-xdp process on " + ifname})
			default:
				id.macs = append(id.macs, heldMAC{n.HardwareAddr, "an entry of " + ifname + "'s address list (bridge fdb show dev " + ifname + " self)"})
			}
		}
		return nil
	}
	var err error
	if netns != "" {
		err = netlab.DoIn(netns, read)
	} else {
		err = read()
	}
	if err != nil {
		return nil, fmt.Errorf("reading what the host uses around the NIC: %w", err)
	}
	return id, nil
}

// eui64LinkLocal is the fe80::/64 address a kernel derives from mac.
func eui64LinkLocal(mac net.HardwareAddr) (netip.Addr, bool) {
	if len(mac) != 6 {
		return netip.Addr{}, false
	}
	b := [16]byte{0: 0xfe, 1: 0x80, 8: mac[0] ^ 2, 9: mac[1], 10: mac[2], 11: 0xff, 12: 0xfe, 13: mac[3], 14: mac[4], 15: mac[5]}
	return netip.AddrFrom16(b), true
}

// sameSolicitedNode: a and b, both IPv6, share a solicited-node group
// (ff02::1:ffXX:XXXX, the low 24 bits).
func sameSolicitedNode(a, b netip.Addr) bool {
	x, y := a.As16(), b.As16()
	return a.Is6() && b.Is6() && x[13] == y[13] && x[14] == y[14] && x[15] == y[15]
}

// conflicts lists what of prefixes and mac (nil: the default MAC, which
// the backend checks itself) the host uses, one sentence each.
func (id *hostIdentity) conflicts(prefixes []netip.Prefix, mac net.HardwareAddr) []string {
	var out []string
	for _, p := range prefixes {
		a := p.Addr()
		held := false
		for _, h := range id.addrs {
			if h.addr == a {
				out = append(out, fmt.Sprintf("--addr %s: the host kernel holds it %s", a, h.where))
				held = true
				break
			}
		}
		if held || !a.Is6() {
			continue
		}
		for _, h := range id.onLink {
			if sameSolicitedNode(a, h.addr) {
				out = append(out, fmt.Sprintf("--addr %s: its solicited-node group %s is that of %s, %s (the same low 24 bits): "+
					"the host's neighbour solicitations would go to the vif", a, netip.AddrFrom16(solicitedNode(a)), h.addr, h.where))
				break
			}
		}
	}
	if mac != nil {
		for _, m := range id.macs {
			if string(m.mac) == string(mac) {
				out = append(out, fmt.Sprintf("--mac %s: used by %s", mac, m.by))
				break
			}
		}
	}
	return out
}

// checkHostIdentity refuses, unless allow, addresses and a MAC the host
// uses around the NIC of link; the error names each conflict.
func checkHostIdentity(netns, link string, prefixes []netip.Prefix, mac net.HardwareAddr, allow bool) error {
	if allow {
		return nil
	}
	cfg, err := xdp.ParseLinkStr(link)
	if err != nil {
		return err
	}
	if cfg.Switch != "" {
		// The NIC is the switch's, maybe in another namespace: the switch
		// refuses the host's MAC and addresses there when they are registered.
		return nil
	}
	id, err := readHostIdentity(netns, cfg.Ifname)
	if err != nil {
		return withRootHint(err)
	}
	if c := id.conflicts(prefixes, mac); len(c) > 0 {
		return fmt.Errorf("%s: %w", strings.Join(c, "; "), errHostIdentity)
	}
	return nil
}
