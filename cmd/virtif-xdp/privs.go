//go:build linux

package main

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
	"kernel.org/pub/linux/libs/security/libcap/cap"
	"kernel.org/pub/linux/libs/security/libcap/psx"
)

// keptCaps is what run, rxdrop, txonly, l2fwd and capture keep once set up,
// each with what it is kept for (--help says it: privilegesHelp).
// CAP_NET_ADMIN only, to take the vif's MACs off the NIC's address lists
// (netlink RTM_DELNEIGH) when the vif goes, and to write back the NIC's
// NAPI settings with napi=on (the kernel checks CAP_NET_ADMIN on each
// write to those sysfs files). Everything else the teardown does needs no
// capability: the XDP program leaves the NIC when its link descriptor is
// closed, the steering map entries are deleted through the map's
// descriptor, the sockets are closed. Without CAP_NET_ADMIN the entries
// would stay (the NIC left promiscuous, say) until the next open or
// `virtif-xdp cleanup` removed them from the state file: the host is left
// as it was found instead.
var keptCaps = []keptCap{
	{cap.NET_ADMIN, "for the teardown: MACs off the NIC's address lists, NAPI values back"},
}

// keptCap is a capability kept after setup and what for.
type keptCap struct {
	v   cap.Value
	why string
}

// capName is v as the kernel's headers spell it: CAP_NET_ADMIN.
func capName(v cap.Value) string { return strings.ToUpper(v.String()) }

// privilegesHelp is the paragraph --help of those subcommands ends with,
// made from keptCaps so that it says what dropCapabilities keeps.
func privilegesHelp() string {
	var names, whys []string
	for _, k := range keptCaps {
		names = append(names, capName(k.v))
		whys = append(whys, "\n  "+capName(k.v)+" "+k.why)
	}
	return `

Privileges: setup needs CAP_NET_ADMIN, CAP_BPF (or CAP_SYS_ADMIN), CAP_NET_RAW
and, for the UMEM, CAP_IPC_LOCK or a high enough RLIMIT_MEMLOCK (root has them
all). Once set up (program attached, sockets bound, maps filled, files and
listeners open) the process keeps only ` + strings.Join(names, ", ") + `, in every thread:` +
		strings.Join(whys, "") + `
Every other capability leaves the effective, permitted, inheritable and ambient
sets. The bounding set is cut to the kept ones too if the process has
CAP_SETPCAP (root has; CAP_SETPCAP is then dropped with the rest); without it
the bounding set stays as it was. Either way no_new_privs is set, so no exec
(setuid, file capabilities) gets a capability back.`
}

// dropPrivileges is what the subcommands call once set up; the tests that
// run them inside the test process replace it (they need their
// capabilities afterwards), the ones that run the binary do not.
var dropPrivileges = dropCapabilities

// dropCapabilities leaves every thread of the process with keptCaps only (of
// those it has): effective and permitted, nothing inheritable or ambient,
// the bounding set cut to them where the process may (CAP_SETPCAP), and
// no_new_privs. It returns the capabilities left, as text
// ("cap_net_admin=ep").
func dropCapabilities() (string, error) {
	have := cap.GetProc()
	keep := cap.NewSet()
	for _, k := range keptCaps {
		v := k.v
		if on, err := have.GetFlag(cap.Permitted, v); err == nil && on {
			if err := keep.SetFlag(cap.Permitted, true, v); err != nil {
				return "", err
			}
			if err := keep.SetFlag(cap.Effective, true, v); err != nil {
				return "", err
			}
		}
	}
	if on, _ := have.GetFlag(cap.Effective, cap.SETPCAP); on {
		var drop []cap.Value
		for v := cap.Value(0); v < cap.MaxBits(); v++ {
			if !kept(v) {
				drop = append(drop, v)
			}
		}
		if err := cap.DropBound(drop...); err != nil {
			return "", fmt.Errorf("dropping capabilities from the bounding set: %w", err)
		}
	}
	if err := cap.ResetAmbient(); err != nil && !errors.Is(err, unix.EINVAL) {
		return "", fmt.Errorf("clearing the ambient capabilities: %w", err)
	}
	if err := keep.SetProc(); err != nil {
		return "", fmt.Errorf("dropping capabilities: %w", err)
	}
	if _, _, e := psx.Syscall6(syscall.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); e != 0 {
		return "", fmt.Errorf("setting no_new_privs: %w", e)
	}
	return capsText(cap.GetProc()), nil
}

func kept(v cap.Value) bool {
	for _, k := range keptCaps {
		if k.v == v {
			return true
		}
	}
	return false
}

// capsText is a capability set as text, "none" for the empty one.
func capsText(c *cap.Set) string {
	if s := c.String(); s != "=" {
		return s
	}
	return "none"
}
