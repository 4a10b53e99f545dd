//go:build linux

package bpf

import (
	"errors"
	"net"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

const xdpDrop = 1

// withSrc returns frame with its source MAC replaced.
func withSrc(frame []byte, src net.HardwareAddr) []byte {
	f := append([]byte(nil), frame...)
	copy(f[6:12], src)
	return f
}

// The switch's programs, test-run (BPF_PROG_RUN) on a lab's host end as the
// NIC and two veth pairs as tenant ports: rules 1-3 steer to the right
// port, the rest passes; a tenant's frames go to another tenant by its
// MAC, else to the NIC; a source MAC the tenant did not register is
// dropped and counted; a removed port takes its entries with it.
func TestIntegrationSwitchPrograms(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	sw, err := LoadSwitch(&SwitchOptions{MaxPorts: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Close()
	tenantIf := map[int]int{}
	err = lab.Do(netlab.Host, func() error {
		for p := 1; p <= 2; p++ {
			name := lab.Name + "s" + string(rune('0'+p))
			v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: lab.Name + "t" + string(rune('0'+p))}
			if err := netlink.LinkAdd(v); err != nil {
				return err
			}
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			tenantIf[p] = l.Attrs().Index
			if err := sw.AddPort(p, tenantIf[p]); err != nil {
				return err
			}
		}
		_, err := sw.AttachNIC(lab.Index[netlab.Host], AttachNative)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []error{sw.AddMAC(mac0, 1), sw.AddMAC(mac1, 2), sw.AddMAC(mcast1, 2), sw.AddIPv4(ip0, 1), sw.AddIPv4(ip1, 2)} {
		if e != nil {
			t.Fatal(e)
		}
	}
	if err := sw.AddMAC(mac0, 2); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("AddMAC of port 1's MAC for port 2: %v, want EEXIST", err)
	}
	if err := sw.AddMAC(mac0, 5); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("AddMAC for a port not in use: %v, want ENOENT", err)
	}
	nicProg, tenantProg := sw.Programs()
	runOn := func(prog *ebpf.Program, ifindex int, frame []byte) uint32 {
		t.Helper()
		var got uint32
		err := lab.Do(netlab.Host, func() (err error) {
			ctx := xdpMd{DataEnd: uint32(len(frame)), IngressIfindex: uint32(ifindex)}
			got, err = prog.Run(&ebpf.RunOptions{Data: frame, Context: ctx})
			return err
		})
		if err != nil {
			t.Fatalf("test run of a %d-byte frame from ifindex %d: %v", len(frame), ifindex, err)
		}
		return got
	}
	counters := func(p int) SwitchCounters {
		t.Helper()
		c, err := sw.Counters(p)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	nic := lab.Index[netlab.Host]
	for _, tc := range []struct {
		name  string
		frame []byte
		want  uint32
		port  int
		after SwitchCounters
	}{
		{"unicast to tenant 1", ether(mac0, 0x0800, nil), xdpRedirect, 1, SwitchCounters{FromNIC: 1}},
		{"unicast to tenant 2", ether(mac1, 0x0800, nil), xdpRedirect, 2, SwitchCounters{FromNIC: 1}},
		{"ARP for tenant 1's address", ether(bcast, 0x0806, arp(1, ip0)), xdpRedirect, 1, SwitchCounters{FromNIC: 2}},
		{"group tenant 2 joined", ether(mcast1, 0x86dd, nil), xdpRedirect, 2, SwitchCounters{FromNIC: 2}},
		{"ARP for nobody's address", ether(bcast, 0x0806, arp(1, ipNone)), xdpPass, 0, SwitchCounters{Pass: 1}},
		{"the host's unicast", ether(macOther, 0x0800, nil), xdpPass, 0, SwitchCounters{Pass: 2}},
		{"broadcast, not ARP", ether(bcast, 0x0800, nil), xdpPass, 0, SwitchCounters{Pass: 3}},
		{"truncated ARP", ether(bcast, 0x0806, nil)[:24], xdpPass, 0, SwitchCounters{Pass: 3, Runt: 1}},
	} {
		if got := runOn(nicProg, nic, tc.frame); got != tc.want {
			t.Errorf("NIC: %s: action %d, want %d", tc.name, got, tc.want)
		}
		if c := counters(tc.port); c != tc.after {
			t.Errorf("NIC: %s: port %d counters %+v, want %+v", tc.name, tc.port, c, tc.after)
		}
	}
	for _, tc := range []struct {
		name  string
		from  int
		frame []byte
		want  uint32
		after [3]SwitchCounters // ports 0..2 after
	}{
		{"tenant 1 to the peer", 1, withSrc(ether(macOther, 0x0800, nil), mac0), xdpRedirect,
			[3]SwitchCounters{{Pass: 3, Runt: 1}, {FromNIC: 2, ToNIC: 1}, {FromNIC: 2}}},
		{"tenant 1 to tenant 2 by MAC", 1, withSrc(ether(mac1, 0x0800, nil), mac0), xdpRedirect,
			[3]SwitchCounters{{Pass: 3, Runt: 1}, {FromNIC: 2, ToNIC: 1, ToTenant: 1}, {FromNIC: 2, FromTenant: 1}}},
		{"tenant 2 ARP for tenant 1", 2, withSrc(ether(bcast, 0x0806, arp(1, ip0)), mac1), xdpRedirect,
			[3]SwitchCounters{{Pass: 3, Runt: 1}, {FromNIC: 2, ToNIC: 1, ToTenant: 1, FromTenant: 1}, {FromNIC: 2, FromTenant: 1, ToTenant: 1}}},
		{"tenant 1 spoofing tenant 2's MAC", 1, withSrc(ether(macOther, 0x0800, nil), mac1), xdpDrop,
			[3]SwitchCounters{{Pass: 3, Runt: 1}, {FromNIC: 2, ToNIC: 1, ToTenant: 1, FromTenant: 1, Spoofed: 1}, {FromNIC: 2, FromTenant: 1, ToTenant: 1}}},
		{"tenant 2 with an unregistered MAC", 2, ether(macOther, 0x0800, nil), xdpDrop,
			[3]SwitchCounters{{Pass: 3, Runt: 1}, {FromNIC: 2, ToNIC: 1, ToTenant: 1, FromTenant: 1, Spoofed: 1}, {FromNIC: 2, FromTenant: 1, ToTenant: 1, Spoofed: 1}}},
		{"tenant 2 with its group as source", 2, withSrc(ether(macOther, 0x0800, nil), mcast1), xdpDrop,
			[3]SwitchCounters{{Pass: 3, Runt: 1}, {FromNIC: 2, ToNIC: 1, ToTenant: 1, FromTenant: 1, Spoofed: 1}, {FromNIC: 2, FromTenant: 1, ToTenant: 1, Spoofed: 2}}},
	} {
		if got := runOn(tenantProg, tenantIf[tc.from], tc.frame); got != tc.want {
			t.Errorf("tenant: %s: action %d, want %d", tc.name, got, tc.want)
		}
		for p := range 3 {
			if c := counters(p); c != tc.after[p] {
				t.Errorf("tenant: %s: port %d counters %+v, want %+v", tc.name, p, c, tc.after[p])
			}
		}
	}
	// A tenant's ARP request for its own address (a probe) goes out.
	before := counters(1)
	if got := runOn(tenantProg, tenantIf[1], withSrc(ether(bcast, 0x0806, arp(1, ip0)), mac0)); got != xdpRedirect {
		t.Errorf("tenant 1's ARP for its own address: action %d, want redirect", got)
	}
	if c := counters(1); c.ToNIC != before.ToNIC+1 || c.FromTenant != before.FromTenant {
		t.Errorf("tenant 1's ARP for its own address: counters %+v, want one more to the NIC (before %+v)", c, before)
	}
	// A frame from an interface that is no port is dropped.
	if got := runOn(tenantProg, nic, withSrc(ether(macOther, 0x0800, nil), mac0)); got != xdpDrop {
		t.Errorf("tenant program on a non-port: action %d, want drop", got)
	}

	if err := sw.DelPort(2); err != nil {
		t.Fatal(err)
	}
	if macs, ipv4s, err := sw.Entries(); err != nil || macs != 1 || ipv4s != 1 {
		t.Errorf("after removing port 2: %d MACs, %d IPv4s (%v), want 1 and 1 (port 1's)", macs, ipv4s, err)
	}
	if got := runOn(nicProg, nic, ether(mac1, 0x0800, nil)); got != xdpPass {
		t.Errorf("NIC: frame for the removed tenant: action %d, want pass", got)
	}
	if got := runOn(tenantProg, tenantIf[1], withSrc(ether(mac1, 0x0800, nil), mac0)); got != xdpRedirect {
		t.Errorf("tenant 1 to the removed tenant's MAC: action %d, want redirect (to the NIC)", got)
	}
	if err := sw.DelPort(2); !errors.Is(err, unix.ENOENT) {
		t.Errorf("second DelPort: %v, want ENOENT", err)
	}
	if err := lab.Do(netlab.Host, func() error { return sw.AddPort(2, tenantIf[2]) }); err != nil {
		t.Fatalf("port 2 again: %v", err)
	}
	if c := counters(2); c != (SwitchCounters{}) {
		t.Errorf("reused port 2 starts with counters %+v", c)
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	// The NIC is left without a program.
	err = lab.Do(netlab.Host, func() error {
		l, err := netlink.LinkByIndex(nic)
		if err != nil {
			return err
		}
		if l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached {
			t.Error("XDP program left on the NIC after Close")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The switch's programs load as multi-buffer programs ("xdp.frags"); a
// kernel before 5.18 refuses the flag (EINVAL), and LoadSwitch then loads
// them without it and says so. Another error is not retried.
func TestIntegrationSwitchFrags(t *testing.T) {
	labtest.RequireRoot(t)
	sw, err := LoadSwitch(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !sw.Frags() {
		t.Error("Frags false on a kernel that takes BPF_F_XDP_HAS_FRAGS")
	}
	sw.Close()
	old := loadSwitchSpec
	t.Cleanup(func() { loadSwitchSpec = old })
	tries := 0
	loadSwitchSpec = func(spec *ebpf.CollectionSpec, objs *vswitchObjects) error {
		tries++
		for _, p := range spec.Programs {
			if p.Flags&unix.BPF_F_XDP_HAS_FRAGS != 0 {
				return unix.EINVAL
			}
		}
		return old(spec, objs)
	}
	sw, err = LoadSwitch(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Close()
	if sw.Frags() || tries != 2 {
		t.Fatalf("Frags %v after %d loads, want a second load without the flag", sw.Frags(), tries)
	}
	loadSwitchSpec = func(*ebpf.CollectionSpec, *vswitchObjects) error { return unix.EPERM }
	if _, err := LoadSwitch(nil); !errors.Is(err, unix.EPERM) {
		t.Fatalf("another error is not retried: %v", err)
	}
}
