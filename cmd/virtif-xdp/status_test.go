//go:build linux

package main

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/virtif"
)

// ownStat says whether a backend counter is the vif's alone: its program
// counters (not the host kernel's xdp_host_*), its received frames and its
// send counters. The NIC's socket, queue and demux counters count other
// vifs' frames too and name the NIC's queues.
func ownStat(name string) bool {
	return (strings.HasPrefix(name, "xdp_") && !strings.HasPrefix(name, "xdp_host_")) ||
		name == "rx_frames" || strings.HasPrefix(name, "tx_")
}

// The status page, fetched from the peer, shows the vif's own counters:
// its rx/tx lines and backend counters are what the vif's Stats said when
// the page was made (between a snapshot before and one after), and no
// counter of the NIC or the host kernel (xdp_host_*, xsk_*, rx_demux_*,
// per-queue ones), no link string, NIC name, NIC MAC or host kernel
// address is there.
func TestIntegrationRunStatusPageCounters(t *testing.T) {
	labtest.RequireRoot(t)
	lab := labtest.NewT(t, netlab.Options{})
	if err := addLabIPv6(lab); err != nil {
		t.Fatal(err)
	}
	type snap struct{ before, shown, after virtif.Stats }
	var (
		mu    sync.Mutex
		snaps []snap
	)
	orig := vifStatus
	t.Cleanup(func() { vifStatus = orig })
	vifStatus = func(v *vif) virtif.Stats {
		b := v.ifc.Stats()
		s := orig(v)
		a := v.ifc.Stats()
		mu.Lock()
		snaps = append(snaps, snap{b, s, a})
		mu.Unlock()
		return s
	}
	r := startCmd(t, "run", "--netns", lab.NS[netlab.Host], "--link", "xdp:"+lab.Link[netlab.Host],
		"--addr", "198.18.0.3/24", "--addr", "fd00:198:18::3/64", "--trust-rx-checksum")
	r.waitRunning(t)
	if out, err := lab.Run(netlab.Peer, "ping", "-n", "-c", "2", "-i", "0.2", "-W", "5", "198.18.0.3"); err != nil {
		t.Fatalf("ping: %v\n%s", err, out)
	}
	// The host kernel's own traffic, which its counters would show.
	if out, err := lab.Run(netlab.Peer, "ping", "-n", "-c", "2", "-i", "0.2", "-W", "5", "198.18.0.1"); err != nil {
		t.Fatalf("ping the host kernel: %v\n%s", err, out)
	}
	body, err := peerHTTPGet(testCtx(t), lab, "http://198.18.0.3/?text")
	if err != nil {
		t.Fatalf("GET the status page from the peer: %v", err)
	}
	mu.Lock()
	if len(snaps) != 1 {
		mu.Unlock()
		t.Fatalf("the page was made %d times, want once:\n%s", len(snaps), body)
	}
	sn := snaps[0]
	mu.Unlock()

	// The rx and tx lines are the vif's Stats.
	line := func(dir string, s virtif.Stats) string {
		if dir == "rx" {
			return fmt.Sprintf("rx packets %d bytes %d errors %d drops %d multicast %d", s.IPackets, s.IBytes, s.IErrors, s.IDrops, s.IMcasts)
		}
		return fmt.Sprintf("tx packets %d bytes %d errors %d drops %d multicast %d", s.OPackets, s.OBytes, s.OErrors, s.ODrops, s.OMcasts)
	}
	for _, dir := range []string{"rx", "tx"} {
		if want := line(dir, sn.shown); !strings.Contains(body, want+"\n") {
			t.Errorf("page lacks %q:\n%s", want, body)
		}
	}
	for _, c := range [][3]uint64{
		{sn.before.IPackets, sn.shown.IPackets, sn.after.IPackets}, {sn.before.IBytes, sn.shown.IBytes, sn.after.IBytes},
		{sn.before.OPackets, sn.shown.OPackets, sn.after.OPackets}, {sn.before.OBytes, sn.shown.OBytes, sn.after.OBytes},
		{sn.before.IDrops, sn.shown.IDrops, sn.after.IDrops}, {sn.before.IMcasts, sn.shown.IMcasts, sn.after.IMcasts},
	} {
		if c[1] < c[0] || c[1] > c[2] {
			t.Errorf("page's counter %d not between the vif's %d before and %d after", c[1], c[0], c[2])
		}
	}
	if sn.shown.IPackets < 4 || sn.shown.OPackets < 4 {
		t.Errorf("page counts rx %d tx %d packets, want the pings' >= 4 each", sn.shown.IPackets, sn.shown.OPackets)
	}

	// The backend counter lines ("name value") are exactly the vif's own.
	var shown []string
	for _, l := range strings.Split(body, "\n") {
		if m := regexp.MustCompile(`^([a-z0-9_]+) (\d+)$`).FindStringSubmatch(l); m != nil {
			shown = append(shown, m[1]+" "+m[2])
			if !ownStat(m[1]) {
				t.Errorf("page shows %s, not a counter of the vif alone", l)
			}
		}
	}
	var want []string
	for _, s := range sn.shown.Backend {
		want = append(want, s.Name+" "+strconv.FormatUint(s.Value, 10))
		if !ownStat(s.Name) {
			t.Errorf("StatusCounter gives %s, not a counter of the vif alone", s.Name)
		}
		b, _ := virtif.LookupStat(sn.before.Backend, s.Name)
		a, ok := virtif.LookupStat(sn.after.Backend, s.Name)
		if !ok || s.Value < b || s.Value > a {
			t.Errorf("page's %s %d not between the vif's %d before and %d after (found %v)", s.Name, s.Value, b, a, ok)
		}
	}
	if strings.Join(shown, ",") != strings.Join(want, ",") {
		t.Errorf("backend counters on the page:\n%v\nwant the vif's own:\n%v", shown, want)
	}
	if v, _ := virtif.LookupStat(sn.before.Backend, "xdp_host_pass"); v < 2 {
		t.Errorf("the NIC passed %d frames to the host kernel, want the 2 echo requests at least (else the check of what is left out proves little)", v)
	}
	for _, s := range sn.before.Backend {
		if !ownStat(s.Name) && strings.Contains(body, s.Name+" ") {
			t.Errorf("page shows the NIC's or host's %s", s.Name)
		}
	}

	// Nothing about the NIC or the host kernel.
	for _, not := range []string{lab.Link[netlab.Host], "xdp:", lab.MAC[netlab.Host].String(), "198.18.0.1", "fd00:198:18::1\n", "fd00:198:18::1/"} {
		if strings.Contains(body, not) {
			t.Errorf("status page shows %q:\n%s", not, body)
		}
	}
	t.Logf("page:\n%s", body)
}
