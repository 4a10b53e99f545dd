//go:build linux

package xdp

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// fdbSelf is what `bridge fdb show dev NIC self` lists: the NIC's own
// unicast and multicast address lists.
func fdbSelf(t *testing.T, lab *netlab.Lab) []string {
	t.Helper()
	out, err := lab.Run(netlab.Host, "bridge", "fdb", "show", "dev", lab.Link[netlab.Host], "self")
	if err != nil {
		t.Fatalf("bridge fdb show: %v: %s", err, out)
	}
	var macs []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			macs = append(macs, f[0])
		}
	}
	return macs
}

func listed(t *testing.T, lab *netlab.Lab, mac net.HardwareAddr) bool {
	t.Helper()
	return slices.Contains(fdbSelf(t, lab), mac.String())
}

func stateFiles(t *testing.T) []string {
	t.Helper()
	f, err := filepath.Glob(filepath.Join(stateDir(), "addrs-*.json"))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// The NIC's address lists hold exactly the MACs steered to vifs: the vif's
// unicast MAC while it exists (moved by a MAC change), each joined group
// while joined; an address the NIC had before (the host's all-hosts group)
// is used but never removed.
func TestIntegrationNICAddressList(t *testing.T) {
	t.Setenv(stateDirEnv, t.TempDir())
	lab := labtest.NewT(t, netlab.Options{})
	v := newVif(t, lab, nil, "")
	mac := v.ifc.HardwareAddr()
	if !listed(t, lab, mac) {
		t.Fatalf("vif MAC %v not in the NIC's list: %v", mac, fdbSelf(t, lab))
	}
	// veth has no unicast filter (the kernel makes it promiscuous); the
	// lab's existing NICs (virtio-net in internal/vmlab) filter by address.
	want, nic := AddrFilterPromisc, "veth (no unicast filter)"
	if lab.OnNICs() {
		want, nic = AddrFilterList, lab.Link[netlab.Host]+" (an existing NIC that filters by address)"
	}
	if got := v.b.Info().AddrFilter; got != want {
		t.Errorf("%s: AddrFilter %q, want %q", nic, got, want)
	}
	if n := len(stateFiles(t)); n != 1 {
		t.Errorf("%d state files while a vif holds an entry, want 1", n)
	}

	group := net.HardwareAddr{0x01, 0x00, 0x5e, 0x00, 0x00, 0x42}
	allHosts := net.HardwareAddr{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01}
	if !listed(t, lab, allHosts) {
		t.Fatalf("the host's all-hosts group is not in the list to begin with: %v", fdbSelf(t, lab))
	}
	for _, g := range []net.HardwareAddr{group, allHosts} {
		if err := v.ifc.JoinMulticast(g); err != nil {
			t.Fatal(err)
		}
		if !listed(t, lab, g) {
			t.Fatalf("joined %v, not in the list: %v", g, fdbSelf(t, lab))
		}
	}
	for _, g := range []net.HardwareAddr{group, allHosts} {
		if err := v.ifc.LeaveMulticast(g); err != nil {
			t.Fatal(err)
		}
	}
	if listed(t, lab, group) {
		t.Errorf("left %v, still in the list", group)
	}
	if !listed(t, lab, allHosts) {
		t.Errorf("leaving the host's own group %v removed it from the list", allHosts)
	}

	if err := v.ifc.Down(); err != nil {
		t.Fatal(err)
	}
	other := net.HardwareAddr{0xb2, 0x0a, 0x77, 0x0b, 0x0e, 0x09}
	for _, m := range []net.HardwareAddr{other, mac, mac, other} {
		if err := v.ifc.SetHardwareAddr(m); err != nil {
			t.Fatal(err)
		}
		if !listed(t, lab, m) {
			t.Fatalf("MAC set to %v, not in the list: %v", m, fdbSelf(t, lab))
		}
	}
	if listed(t, lab, mac) {
		t.Errorf("MAC moved from %v to %v: the old one stays in the list", mac, other)
	}
	if err := v.ifc.Close(); err != nil {
		t.Fatal(err)
	}
	if listed(t, lab, other) {
		t.Errorf("vif closed: %v still in the list", other)
	}
	if n := len(stateFiles(t)); n != 0 {
		t.Errorf("%d state files after the last vif closed, want 0", n)
	}
}

// A SIGKILLed process leaves its entries and its state file; the next open
// of the NIC removes them, and so does CleanLeftovers.
func TestIntegrationLeftoverAddresses(t *testing.T) {
	t.Setenv(stateDirEnv, t.TempDir())
	lab := labtest.NewT(t, netlab.Options{})

	t.Run("next open", func(t *testing.T) {
		cmd, mac := startChild(t, lab)
		if !listed(t, lab, mac) {
			t.Fatalf("child's vif MAC %v not in the list", mac)
		}
		kill(t, cmd)
		if !listed(t, lab, mac) || len(stateFiles(t)) != 1 {
			t.Fatalf("after SIGKILL: listed %v, state files %v; want the leftover and its file", listed(t, lab, mac), stateFiles(t))
		}
		v := newVif(t, lab, nil, "")
		if listed(t, lab, mac) {
			t.Errorf("the next open left the dead process's %v in the list", mac)
		}
		if got := v.b.Info().LeftoversRemoved; got != 1 {
			t.Errorf("LeftoversRemoved %d, want 1", got)
		}
		if err := v.ifc.Close(); err != nil {
			t.Fatal(err)
		}
		if n := len(stateFiles(t)); n != 0 {
			t.Errorf("state files left: %v", stateFiles(t))
		}
	})

	t.Run("cleanup", func(t *testing.T) {
		cmd, mac := startChild(t, lab)
		kill(t, cmd)
		// A live process's file is not touched.
		live := filepath.Join(stateDir(), "addrs-1-1-1.json")
		if err := os.WriteFile(live, []byte(`{"version":1,"pid":1,"start":`+startOf(t, 1)+`,"netns":1,"ifindex":1,"ifname":"x","macs":["b2:0a:00:0b:0e:00"]}`), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := CleanLeftovers()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].Removed != 1 || got[0].Err != nil || got[0].Ifname != lab.Link[netlab.Host] {
			t.Fatalf("CleanLeftovers: %+v, want one file of %s with one entry removed", got, lab.Link[netlab.Host])
		}
		if listed(t, lab, mac) {
			t.Errorf("CleanLeftovers left %v in the list", mac)
		}
		if f := stateFiles(t); !slices.Equal(f, []string{live}) {
			t.Errorf("state files after cleanup: %v, want only the live process's", f)
		}
	})
}

// A process of another user keeps its state files in uid-N of the state
// directory (ownStateDir); the next open of the NIC and CleanLeftovers find
// its leftovers there too.
func TestIntegrationLeftoverAddressesOfAnotherUser(t *testing.T) {
	t.Setenv(stateDirEnv, t.TempDir())
	lab := labtest.NewT(t, netlab.Options{})
	cmd, mac := startChild(t, lab)
	kill(t, cmd)
	files := stateFiles(t)
	if len(files) != 1 {
		t.Fatalf("state files after SIGKILL: %v, want 1", files)
	}
	theirs := filepath.Join(stateDir(), "uid-65534")
	if err := os.Mkdir(theirs, 0o700); err != nil {
		t.Fatal(err)
	}
	moved := filepath.Join(theirs, filepath.Base(files[0]))
	if err := os.Rename(files[0], moved); err != nil {
		t.Fatal(err)
	}
	got, err := CleanLeftovers()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Removed != 1 || got[0].Err != nil || got[0].File != moved {
		t.Fatalf("CleanLeftovers: %+v, want %s with one entry removed", got, moved)
	}
	if listed(t, lab, mac) {
		t.Errorf("CleanLeftovers left %v in the list", mac)
	}
	if _, err := os.Stat(moved); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left: %v", moved, err)
	}
}

func startOf(t *testing.T, pid int) string {
	t.Helper()
	s := procStart(pid)
	if s == 0 {
		t.Fatalf("no start time for pid %d", pid)
	}
	return strconv.FormatUint(s, 10)
}

// A promiscuous vif makes its NIC promiscuous: a NIC that filters by
// address would otherwise drop, before the program runs, the frames for
// other MACs the vif must get. The NIC's promiscuity count goes up once
// for all promiscuous vifs and back when the last one leaves promiscuous
// mode or closes (a membership of a socket of ours, which the kernel also
// drops when the process dies).
func TestIntegrationPromiscVifNIC(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	promiscuity := func() int {
		t.Helper()
		a, err := lab.LinkAttrs(netlab.Host)
		if err != nil {
			t.Fatal(err)
		}
		return a.Promisc
	}
	v0 := newVif(t, lab, nil, "")
	v1 := newVif(t, lab, v0.c, "")
	base := promiscuity()
	for _, step := range []struct {
		v    *testVif
		on   bool
		want int
	}{{v0, true, 1}, {v0, true, 1}, {v1, true, 1}, {v0, false, 1}, {v1, false, 0}, {v1, false, 0}, {v0, true, 1}} {
		if err := step.v.ifc.SetPromisc(step.on); err != nil {
			t.Fatal(err)
		}
		if got := promiscuity(); got != base+step.want {
			t.Fatalf("%s promiscuous %t: the NIC's promiscuity %d, want %d", step.v.ifc.Name(), step.on, got, base+step.want)
		}
	}
	if err := v0.ifc.Close(); err != nil {
		t.Fatal(err)
	}
	if got := promiscuity(); got != base {
		t.Fatalf("the promiscuous vif closed: the NIC's promiscuity %d, want %d", got, base)
	}
}
