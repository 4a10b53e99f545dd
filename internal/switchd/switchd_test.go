//go:build linux

package switchd

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/bpf"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
)

// startT runs a switch on the lab's host end, stopped at the end of the test.
func startT(t *testing.T, lab *netlab.Lab) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "switch.sock")
	var s *Server
	err := lab.Do(netlab.Host, func() (err error) {
		s, err = New(Config{NIC: lab.Link[netlab.Host], Control: path, Group: -1, Attach: bpf.AttachAuto})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		if err := <-served; err != nil {
			t.Error(err)
		}
	})
	return s, path
}

func dialT(t *testing.T, path string) *Client {
	t.Helper()
	cl, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// linkIn reports whether ifname exists in the lab side's namespace.
func linkIn(t *testing.T, lab *netlab.Lab, side int, ifname string) bool {
	t.Helper()
	found, err := netlab.LinkExists(lab.NS[side], ifname)
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// The control protocol: hello first, with the version; a tenant per
// connection, its veth's tenant end moved into the caller's namespace; one
// owner per address; list and stats; a closed connection removes the tenant
// (entries and veth pair); a closed switch leaves the NIC without a program
// and ends its clients' connections.
func TestIntegrationControl(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	s, path := startT(t, lab)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v, mode %v, want 0600", err, fi.Mode().Perm())
	}

	raw, err := net.Dial("unixpacket", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Write([]byte(`{"op":"list"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, _ := raw.Read(buf)
	if got := string(buf[:n]); got == "" || !strings.Contains(got, `"errno":"EPROTO"`) {
		t.Errorf("list before hello: %q, want an EPROTO error", got)
	}
	raw2, _ := net.Dial("unixpacket", path)
	raw2.Write([]byte(`{"op":"hello","version":99}` + "\n"))
	n, _ = raw2.Read(buf)
	if got := string(buf[:n]); !strings.Contains(got, "EPROTONOSUPPORT") {
		t.Errorf("hello version 99: %q, want EPROTONOSUPPORT", got)
	}
	if n, err := raw2.Read(buf); n != 0 && err == nil {
		t.Errorf("connection after a failed hello still open")
	}
	raw2.Close()

	a, b := dialT(t, path), dialT(t, path)
	if err := a.Register("mac", "02:00:00:00:00:01", true); !errors.Is(err, unix.ENOENT) {
		t.Errorf("register before add: %v, want ENOENT", err)
	}
	var pa, pb Port
	if err := lab.Do(netlab.Peer, func() (err error) {
		if pa, err = a.AddTenant("a"); err == nil {
			pb, err = b.AddTenant("b")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AddTenant("again"); !errors.Is(err, unix.EEXIST) {
		t.Errorf("second add on one connection: %v, want EEXIST", err)
	}
	if !linkIn(t, lab, netlab.Peer, pa.Ifname) || linkIn(t, lab, netlab.Host, pa.Ifname) {
		t.Fatalf("tenant end %s not (only) in the caller's namespace", pa.Ifname)
	}
	for _, tc := range []struct {
		cl        *Client
		kind, arg string
		want      error
	}{
		{a, "mac", "02:00:00:00:00:01", nil},
		{a, "ipv4", "198.18.0.11", nil},
		{a, "group", "33:33:ff:00:00:11", nil},
		{b, "mac", "02:00:00:00:00:02", nil},
		{b, "mac", "02:00:00:00:00:01", unix.EEXIST},
		{b, "ipv4", "198.18.0.11", unix.EEXIST},
		{b, "group", "02:00:00:00:00:09", unix.EINVAL},
		{b, "mac", "33:33:00:00:00:01", unix.EINVAL},
		{b, "mac", lab.MAC[netlab.Host].String(), unix.EADDRINUSE},
		{b, "ipv4", "fd00::1", unix.EINVAL},
		{b, "ipv4", lab.Addr[netlab.Host].Addr().String(), unix.EADDRINUSE},
		{b, "bogus", "x", unix.EINVAL},
	} {
		err := tc.cl.Register(tc.kind, tc.arg, true)
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("register %s %s: %v, want %v", tc.kind, tc.arg, err, tc.want)
		}
	}
	// One tenant cannot fill the maps all share.
	for i := range MaxAddrs {
		err := b.Register("group", fmt.Sprintf("33:33:00:00:01:%02x", i), true)
		if want := i < MaxAddrs-1; want != (err == nil) || (!want && !errors.Is(err, unix.ENOSPC)) {
			t.Fatalf("group %d of tenant b (1 MAC already): %v", i, err)
		}
	}
	if err := b.Register("group", "33:33:00:00:01:00", true); err != nil {
		t.Errorf("a group b has, again at its limit: %v", err)
	}
	for i := range MaxAddrs - 1 {
		if err := b.Register("group", fmt.Sprintf("33:33:00:00:01:%02x", i), false); err != nil {
			t.Fatal(err)
		}
	}
	for i := range MaxAddrs + 1 {
		err := b.Register("ipv4", fmt.Sprintf("198.18.2.%d", i), true)
		if want := i < MaxAddrs; want != (err == nil) || (!want && !errors.Is(err, unix.ENOSPC)) {
			t.Fatalf("IPv4 %d of tenant b: %v", i, err)
		}
	}
	for i := range MaxAddrs {
		if err := b.Register("ipv4", fmt.Sprintf("198.18.2.%d", i), false); err != nil {
			t.Fatal(err)
		}
	}

	list, err := b.List()
	if err != nil || len(list) != 2 {
		t.Fatalf("list: %v %+v", err, list)
	}
	if list[0].Port != pa.Port || len(list[0].MACs) != 1 || len(list[0].IPv4s) != 1 || len(list[0].Groups) != 1 || list[0].PID != os.Getpid() {
		t.Errorf("list: tenant a: %+v", list[0])
	}
	if st, err := a.Stats(); err != nil || st.Tenants != 2 || st.Ifindex != lab.Index[netlab.Host] {
		t.Errorf("stats: %+v %v", st, err)
	}
	if macs, ipv4s, _ := s.Switch().Entries(); macs != 3 || ipv4s != 1 {
		t.Errorf("entries: %d MACs, %d IPv4s, want 3 and 1", macs, ipv4s)
	}

	// Closing a's connection removes a: entries and veth pair.
	a.Close()
	waitFor(t, "tenant a's removal", func() bool { return len(s.List()) == 1 })
	if macs, ipv4s, _ := s.Switch().Entries(); macs != 1 || ipv4s != 0 {
		t.Errorf("after a left: %d MACs, %d IPv4s, want b's 1 and 0", macs, ipv4s)
	}
	if linkIn(t, lab, netlab.Peer, pa.Ifname) || linkIn(t, lab, netlab.Host, s.prefix+"1s") {
		t.Errorf("tenant a's veth pair left behind")
	}
	if !linkIn(t, lab, netlab.Peer, pb.Ifname) {
		t.Errorf("tenant b's veth went with a's")
	}
	// remove keeps the connection.
	if err := b.Remove(); err != nil {
		t.Fatal(err)
	}
	if linkIn(t, lab, netlab.Peer, pb.Ifname) {
		t.Errorf("tenant b's veth left after remove")
	}
	if _, err := b.List(); err != nil {
		t.Errorf("list after remove: %v", err)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.Done():
		if !errors.Is(b.Err(), unix.ENETDOWN) {
			t.Errorf("client's Err after the switch closed: %v, want ENETDOWN", b.Err())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("client not told the switch closed")
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket left: %v", err)
	}
	if err := lab.Do(netlab.Host, func() error {
		l, err := netlink.LinkByName(lab.Link[netlab.Host])
		if err == nil && l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached {
			t.Error("program left on the NIC")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// openFDs counts the process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// A hundred tenants added and removed, four at a time, while the peer
// sends to all of their MACs and to a survivor's: afterwards no veth, map
// entry or descriptor of theirs is left, and the survivor's frames were
// steered all along.
func TestIntegrationChurn(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	s, path := startT(t, lab)
	survivor := dialT(t, path)
	var sp Port
	if err := lab.Do(netlab.Peer, func() (err error) { sp, err = survivor.AddTenant("survivor"); return err }); err != nil {
		t.Fatal(err)
	}
	survivorMAC := net.HardwareAddr{0x02, 0, 0x5e, 0x01, 0x01, 0xff}
	if err := survivor.Register("mac", survivorMAC.String(), true); err != nil {
		t.Fatal(err)
	}
	fds0 := openFDs(t)

	gen, err := trafficgen.PacketIn(lab, netlab.Peer)
	if err != nil {
		t.Fatal(err)
	}
	defer gen.Close()
	const tenants = 100
	mac := func(i int) net.HardwareAddr { return net.HardwareAddr{0x02, 0, 0x5e, 0x01, 0, byte(i)} }
	stop := make(chan struct{})
	sent := make(chan uint64, 1)
	go func() {
		var n uint64
		frames := make([][]byte, 0, tenants+1)
		for i := range tenants {
			frames = append(frames, trafficgen.UDPFrame(mac(i), lab.MAC[netlab.Peer], netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.50"), 9, 9, 64))
		}
		frames = append(frames, trafficgen.UDPFrame(survivorMAC, lab.MAC[netlab.Peer], netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.51"), 9, 9, 64))
		for {
			select {
			case <-stop:
				sent <- n
				return
			default:
			}
			if _, err := gen.SendFrames(frames); err == nil {
				n++
			}
			time.Sleep(time.Millisecond)
		}
	}()
	work := make(chan int)
	errs := make(chan error, tenants)
	for range 4 {
		go func() {
			for i := range work {
				errs <- lab.Do(netlab.Peer, func() error {
					cl, err := Dial(path)
					if err != nil {
						return err
					}
					defer cl.Close()
					if _, err := cl.AddTenant(fmt.Sprint("churn", i)); err != nil {
						return err
					}
					if err := cl.Register("mac", mac(i).String(), true); err != nil {
						return err
					}
					if i%10 == 0 {
						if err := cl.Register("ipv4", fmt.Sprint("198.18.1.", i), true); err != nil {
							return err
						}
					}
					time.Sleep(5 * time.Millisecond) // let frames reach it
					return nil
				})
			}
		}()
	}
	for i := range tenants {
		work <- i
	}
	close(work)
	for range tenants {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	close(stop)
	rounds := <-sent
	gen.Close()
	waitFor(t, "the churned tenants' removal", func() bool { return len(s.List()) == 1 })

	if macs, ipv4s, err := s.Switch().Entries(); err != nil || macs != 1 || ipv4s != 0 {
		t.Errorf("entries left: %d MACs, %d IPv4s (%v), want the survivor's 1 and 0", macs, ipv4s, err)
	}
	if ports := s.Switch().Ports(); len(ports) != 1 || ports[sp.Port] == 0 {
		t.Errorf("ports left: %v, want only the survivor's %d", ports, sp.Port)
	}
	for _, side := range []int{netlab.Host, netlab.Peer} {
		if err := lab.Do(side, func() error {
			links, err := netlink.LinkList()
			for _, l := range links {
				if n := l.Attrs().Name; strings.HasPrefix(n, s.prefix) && n != sp.Ifname && n != s.prefix+strconv.Itoa(sp.Port)+"s" {
					t.Errorf("veth %s left", n)
				}
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	// A tenant leaves the list before the server has closed its end of
	// the control connection: give the closes a moment, then a descriptor
	// still open is a leak.
	for deadline := time.Now().Add(5 * time.Second); openFDs(t) > fds0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if fds := openFDs(t); fds > fds0 {
		t.Errorf("%d descriptors open after the churn, %d before", fds, fds0)
	}
	c, err := s.Switch().Counters(sp.Port)
	if err != nil {
		t.Fatal(err)
	}
	if rounds == 0 || c.FromNIC < rounds*9/10 {
		t.Errorf("the survivor got %d frames from the NIC of %d rounds sent", c.FromNIC, rounds)
	}
	t.Logf("%d rounds of %d frames during the churn; survivor %+v", rounds, tenants+1, c)
}

// --group: the control socket is the group's too, mode 0660. A new switch
// removes the veths a killed one on the NIC left, but never those of one
// still running there.
func TestIntegrationControlGroup(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	path := filepath.Join(t.TempDir(), "switch.sock")
	const gid = 65534
	// What a killed switch on the NIC left is removed by the next.
	stale := "vs" + strconv.Itoa(lab.Index[netlab.Host]) + "p7s"
	if err := lab.Do(netlab.Host, func() error {
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: stale}, PeerName: stale[:len(stale)-1] + "t"})
	}); err != nil {
		t.Fatal(err)
	}
	var s *Server
	if err := lab.Do(netlab.Host, func() (err error) {
		s, err = New(Config{NIC: lab.Link[netlab.Host], Control: path, Group: gid})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if linkIn(t, lab, netlab.Host, stale) {
		t.Errorf("the veth %s a killed switch left is still there", stale)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o660 || st.Gid != gid {
		t.Errorf("control socket: mode %v gid %d, want 0660 and %d", fi.Mode().Perm(), st.Gid, gid)
	}
	// A second switch on the NIC is refused, and leaves the first one's
	// tenants alone.
	go s.Serve()
	cl := dialT(t, path)
	var p Port
	if err := lab.Do(netlab.Peer, func() (err error) { p, err = cl.AddTenant("a"); return err }); err != nil {
		t.Fatal(err)
	}
	if err := lab.Do(netlab.Host, func() error {
		s2, err := New(Config{NIC: lab.Link[netlab.Host], Control: path, Group: -1})
		if err == nil {
			s2.Close()
		}
		if !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.EADDRINUSE) {
			t.Errorf("a second switch on the NIC and path: %v, want EBUSY or EADDRINUSE", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !linkIn(t, lab, netlab.Peer, p.Ifname) {
		t.Errorf("the refused second switch removed the first one's tenant veth")
	}
}

// kernelTenant makes a namespace ns (removed at the end) and a tenant of
// the switch at path in it, on that namespace's kernel stack: the tenant
// end gets addrs (CIDR, no DAD), and the veth's MAC, ipv4 (if not "") and
// groups are registered.
func kernelTenant(t *testing.T, path, ns string, addrs []string, ipv4 string, groups ...string) Port {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	cl := dialT(t, path)
	var p Port
	if err := netlab.DoIn(ns, func() (err error) {
		if p, err = cl.AddTenant(ns); err != nil {
			return err
		}
		l, err := netlink.LinkByName(p.Ifname)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			addr, err := netlink.ParseAddr(a)
			if err != nil {
				return err
			}
			addr.Flags = unix.IFA_F_NODAD
			if err := netlink.AddrAdd(l, addr); err != nil {
				return fmt.Errorf("address %s: %w", a, err)
			}
		}
		if err := cl.Register("mac", l.Attrs().HardwareAddr.String(), true); err != nil {
			return err
		}
		if ipv4 != "" {
			if err := cl.Register("ipv4", ipv4, true); err != nil {
				return err
			}
		}
		for _, g := range groups {
			if err := cl.Register("group", g, true); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return p
}

// A tenant that uses its namespace's kernel stack on its veth end (no XDP
// program there): the switch's GRO on the pair lets it receive what is
// redirected to it, and the peer's ping is answered through the switch.
func TestIntegrationKernelTenant(t *testing.T) {
	// The peer's veth end has neither GRO nor an XDP program (no NAPI):
	// switch_tenant runs in generic mode and hands the NIC skbs, which any
	// veth takes; redirected XDP frames (native mode) would be dropped.
	lab := labtest.NewT(t, netlab.Options{})
	s, path := startT(t, lab)
	kernelTenant(t, path, lab.Name+"-k", []string{"198.18.0.5/24"}, "198.18.0.5")
	if out, err := lab.Run(netlab.Peer, "ping", "-n", "-c", "2", "-i", "0.2", "-W", "5", "198.18.0.5"); err != nil {
		t.Fatalf("ping the kernel tenant: %v\n%s", err, out)
	}
	c, err := s.Switch().Counters(1)
	if err != nil || c.FromNIC < 3 || c.ToNIC < 3 {
		t.Errorf("kernel tenant's counters %+v (%v), want ARP and echo both ways", c, err)
	}
}

// Two tenants on their namespaces' kernel stacks talk through the switch:
// IPv4 (ARP requests for the registered address go to the other tenant)
// and IPv6 (neighbour solicitations go to the solicited-node group the
// target joined), ping both ways, without the frames touching the NIC: the
// peer's sniffer sees none of them.
func TestIntegrationTenantsIPv4AndIPv6(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	s, path := startT(t, lab)
	type tenantAddr struct {
		ns, v4, v6 string
		group      string // the solicited-node group's MAC of v6
		port       int
	}
	ts := []*tenantAddr{
		{ns: lab.Name + "-a", v4: "198.18.0.5", v6: "fd00:198:18::5", group: "33:33:ff:00:00:05"},
		{ns: lab.Name + "-b", v4: "198.18.0.6", v6: "fd00:198:18::6", group: "33:33:ff:00:00:06"},
	}
	var onWire atomic.Int64
	sn, err := trafficgen.SniffIn(lab, netlab.Peer, func(f []byte) {
		if len(f) >= 14 && (bytes.Contains(f, net.ParseIP(ts[0].v6)) || bytes.Contains(f, net.ParseIP(ts[1].v6)) ||
			bytes.Contains(f, net.ParseIP(ts[0].v4).To4()) || bytes.Contains(f, net.ParseIP(ts[1].v4).To4())) {
			onWire.Add(1)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Close()
	for _, ta := range ts {
		ta.port = kernelTenant(t, path, ta.ns, []string{ta.v4 + "/24", ta.v6 + "/64"}, ta.v4, ta.group).Port
	}
	ping := func(from *tenantAddr, args ...string) {
		t.Helper()
		var out []byte
		err := netlab.DoIn(from.ns, func() (err error) {
			out, err = exec.Command("ping", append([]string{"-n", "-c", "2", "-i", "0.2", "-W", "5"}, args...)...).CombinedOutput()
			return err
		})
		if err != nil {
			t.Fatalf("ping %v from %s: %v\n%s", args, from.ns, err, out)
		}
	}
	ping(ts[0], ts[1].v4)
	ping(ts[1], ts[0].v4)
	ping(ts[0], "-6", ts[1].v6)
	ping(ts[1], "-6", ts[0].v6)
	for _, ta := range ts {
		c, err := s.Switch().Counters(ta.port)
		// 2 ARP or NS requests and replies, 8 echo requests and replies,
		// each way.
		if err != nil || c.ToTenant < 6 || c.FromTenant < 6 {
			t.Errorf("%s's counters %+v (%v), want at least 6 to and from tenants", ta.ns, c, err)
		}
	}
	if n := onWire.Load(); n != 0 {
		t.Errorf("%d frames between the tenants reached the wire", n)
	}
}

// Jumbo frames through the switch: on a NIC with MTU 9000 (veth hands XDP
// such frames in several buffers, and takes a program only if it is
// multi-buffer aware), the peer's 8000-byte pings reach a kernel tenant
// through switch_nic and its answers leave through switch_tenant, unsplit
// (-M do: no fragmentation).
func TestIntegrationKernelTenantJumbo(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{MTU: 9000})
	s, path := startT(t, lab)
	ns := lab.Name + "-j"
	port := kernelTenant(t, path, ns, []string{"198.18.0.5/24"}, "198.18.0.5")
	if port.MTU != 9000 {
		t.Fatalf("tenant port MTU %d, want the NIC's 9000", port.MTU)
	}
	before, _ := s.Switch().Counters(port.Port)
	if out, err := lab.Run(netlab.Peer, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "5", "-s", "8000", "-M", "do", "198.18.0.5"); err != nil {
		c, _ := s.Switch().Counters(port.Port)
		c0, _ := s.Switch().Counters(0)
		o1, _ := lab.Run(netlab.Host, "ip", "-s", "link")
		o2, _ := exec.Command("ip", "-n", ns, "-s", "link").CombinedOutput()
		o3, _ := lab.Run(netlab.Peer, "ip", "-s", "link")
		t.Logf("host:\n%s\ntenant:\n%s\npeer:\n%s", o1, o2, o3)
		t.Fatalf("jumbo ping to the kernel tenant: %v\n%s\ntenant's counters %+v, NIC's %+v", err, out, c, c0)
	}
	c, err := s.Switch().Counters(port.Port)
	if err != nil || c.FromNIC-before.FromNIC < 3 || c.ToNIC-before.ToNIC < 3 {
		t.Errorf("tenant's counters %+v, before %+v (%v), want the 3 jumbo echoes both ways", c, before, err)
	}
}
