//go:build linux

package bpf

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"golang.org/x/sys/unix"
)

// xdpMd mirrors struct xdp_md, the context BPF_PROG_TEST_RUN takes.
type xdpMd struct {
	Data, DataEnd, DataMeta      uint32
	IngressIfindex, RxQueueIndex uint32
	EgressIfindex                uint32
}

const (
	xdpPass     = 2
	xdpRedirect = 4
)

var (
	mac0      = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	mac1      = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	macOther  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	macSrc    = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xaa}
	mcast0    = net.HardwareAddr{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01}
	mcast1    = net.HardwareAddr{0x33, 0x33, 0x00, 0x00, 0x00, 0x01}
	mcastNone = net.HardwareAddr{0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb}
	bcast     = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	ip0       = netip.MustParseAddr("198.18.0.10")
	ip1       = netip.MustParseAddr("198.18.0.11")
	ipNone    = netip.MustParseAddr("198.18.0.99")
)

// ether builds an Ethernet frame padded to the 60-byte minimum.
func ether(dst net.HardwareAddr, typ uint16, payload []byte) []byte {
	b := make([]byte, 0, 60)
	b = append(b, dst...)
	b = append(b, macSrc...)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = append(b, payload...)
	for len(b) < 60 {
		b = append(b, 0)
	}
	return b
}

// arp builds an ARP payload for IPv4 over Ethernet asking (op 1) or
// answering (op 2) about target.
func arp(op uint16, target netip.Addr) []byte {
	b := []byte{0, 1, 0x08, 0x00, 6, 4}
	b = binary.BigEndian.AppendUint16(b, op)
	b = append(b, macSrc...)
	b = append(b, 198, 18, 0, 2)
	b = append(b, 0, 0, 0, 0, 0, 0)
	t := target.As4()
	return append(b, t[:]...)
}

func vlan(dst net.HardwareAddr) []byte {
	// 802.1Q tag 100, then IPv4 ethertype and a dummy payload.
	return ether(dst, 0x8100, []byte{0x00, 0x64, 0x08, 0x00, 0x45})
}

// xskFD returns an AF_XDP socket for the socket map. The map accepts an
// unbound socket, which is enough for the program to see an entry; test runs
// report XDP_REDIRECT without delivering anything.
func xskFD(tb testing.TB) int {
	tb.Helper()
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatalf("AF_XDP socket: %v", err)
	}
	tb.Cleanup(func() { unix.Close(fd) })
	return fd
}

func udpFD(tb testing.TB) int {
	tb.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { unix.Close(fd) })
	return fd
}

func loadT(tb testing.TB, opts *Options) *Steering {
	tb.Helper()
	labtest.RequireRoot(tb)
	s, err := Load(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Error(err)
		}
	})
	return s
}

// run test-runs the program on one frame from queue 0 and returns the action.
func run(tb testing.TB, s *Steering, frame []byte) uint32 {
	tb.Helper()
	ret, err := s.Program().Run(&ebpf.RunOptions{Data: frame})
	if err != nil {
		tb.Fatalf("test run of %d-byte frame: %v", len(frame), err)
	}
	return ret
}

// snapshot reads the counters of the host row and of the given vifs.
type snapshot map[int]RuleCounters // -1 is the host

func snap(tb testing.TB, s *Steering, vifs ...int) snapshot {
	tb.Helper()
	m := snapshot{}
	h, err := s.HostCounters()
	if err != nil {
		tb.Fatal(err)
	}
	m[-1] = h
	for _, v := range vifs {
		c, err := s.Counters(v)
		if err != nil {
			tb.Fatal(err)
		}
		m[v] = c
	}
	return m
}

func sub(a, b RuleCounters) RuleCounters {
	return RuleCounters{
		Unicast: a.Unicast - b.Unicast, Multicast: a.Multicast - b.Multicast,
		ARP: a.ARP - b.ARP, Promisc: a.Promisc - b.Promisc, Pass: a.Pass - b.Pass,
		NoSocket: a.NoSocket - b.NoSocket, Runt: a.Runt - b.Runt, NoMeta: a.NoMeta - b.NoMeta,
	}
}

// setup registers vif 0 (MAC, multicast group, IPv4, socket on queue 0) and
// vif 1 (the same but without a socket).
func setup(tb testing.TB, s *Steering) {
	tb.Helper()
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	must(s.AddMAC(mac0, 0))
	must(s.AddMAC(mcast0, 0))
	must(s.AddIPv4(ip0, 0))
	must(s.AddMAC(mac1, 1))
	must(s.AddMAC(mcast1, 1))
	must(s.AddIPv4(ip1, 1))
	must(s.SetSocket(0, 0, xskFD(tb)))
}

type steerCase struct {
	name    string
	frame   []byte
	promisc []int // vifs promiscuous during the case
	want    uint32
	// Expected counter increments; rows not listed must not change.
	host, vif0, vif1 RuleCounters
}

func steerCases() []steerCase {
	truncARP := ether(bcast, 0x0806, nil)[:14+20]
	truncARPUnicast := append(ether(mac0, 0x0806, nil)[:14], arp(1, ip0)[:10]...)
	return []steerCase{
		{name: "unicast to vif with socket", frame: ether(mac0, 0x0800, nil), want: xdpRedirect, vif0: RuleCounters{Unicast: 1}},
		{name: "unicast to vif without socket", frame: ether(mac1, 0x0800, nil), want: xdpPass, vif1: RuleCounters{NoSocket: 1}, host: RuleCounters{NoSocket: 1}},
		{name: "unicast to other MAC", frame: ether(macOther, 0x0800, nil), want: xdpPass, host: RuleCounters{Pass: 1}},
		{name: "VLAN-tagged unicast to vif", frame: vlan(mac0), want: xdpRedirect, vif0: RuleCounters{Unicast: 1}},
		{name: "VLAN-tagged to other MAC", frame: vlan(macOther), want: xdpPass, host: RuleCounters{Pass: 1}},
		{name: "multicast joined", frame: ether(mcast0, 0x0800, nil), want: xdpRedirect, vif0: RuleCounters{Multicast: 1}},
		{name: "multicast joined, no socket", frame: ether(mcast1, 0x86dd, nil), want: xdpPass, vif1: RuleCounters{NoSocket: 1}, host: RuleCounters{NoSocket: 1}},
		{name: "multicast not joined", frame: ether(mcastNone, 0x0800, nil), want: xdpPass, host: RuleCounters{Pass: 1}},
		{name: "broadcast IPv4", frame: ether(bcast, 0x0800, nil), want: xdpPass, host: RuleCounters{Pass: 1}},
		{name: "ARP request for registered IPv4", frame: ether(bcast, 0x0806, arp(1, ip0)), want: xdpRedirect, vif0: RuleCounters{ARP: 1}},
		{name: "ARP request for IPv4 of vif without socket", frame: ether(bcast, 0x0806, arp(1, ip1)), want: xdpPass, vif1: RuleCounters{NoSocket: 1}, host: RuleCounters{NoSocket: 1}},
		{name: "ARP request for unregistered IPv4", frame: ether(bcast, 0x0806, arp(1, ipNone)), want: xdpPass, host: RuleCounters{Pass: 1}},
		{name: "ARP reply broadcast", frame: ether(bcast, 0x0806, arp(2, ip0)), want: xdpPass, host: RuleCounters{Pass: 1}},
		{name: "ARP reply unicast to vif", frame: ether(mac0, 0x0806, arp(2, ipNone)), want: xdpRedirect, vif0: RuleCounters{Unicast: 1}},
		{name: "ARP request, not IPv4 over Ethernet", frame: ether(bcast, 0x0806, append([]byte{0, 6}, arp(1, ip0)[2:]...)), want: xdpPass, host: RuleCounters{Pass: 1}},
		{name: "ARP truncated", frame: truncARP, want: xdpPass, host: RuleCounters{Runt: 1}},
		{name: "ARP truncated, unicast to vif", frame: truncARPUnicast, want: xdpRedirect, vif0: RuleCounters{Unicast: 1}},
		{name: "ARP of 14 bytes", frame: ether(bcast, 0x0806, nil)[:14], want: xdpPass, host: RuleCounters{Runt: 1}},
		{name: "ARP of 41 bytes", frame: ether(bcast, 0x0806, arp(1, ip0))[:41], want: xdpPass, host: RuleCounters{Runt: 1}},
		{name: "ARP of 42 bytes", frame: ether(bcast, 0x0806, arp(1, ip0))[:42], want: xdpRedirect, vif0: RuleCounters{ARP: 1}},
		{name: "exactly 14 bytes", frame: ether(macOther, 0x0800, nil)[:14], want: xdpPass, host: RuleCounters{Pass: 1}},

		{name: "promisc: other MAC", promisc: []int{0}, frame: ether(macOther, 0x0800, nil), want: xdpRedirect, vif0: RuleCounters{Promisc: 1}},
		{name: "promisc: multicast not joined", promisc: []int{0}, frame: ether(mcastNone, 0x0800, nil), want: xdpRedirect, vif0: RuleCounters{Promisc: 1}},
		{name: "promisc: ARP for unregistered", promisc: []int{0}, frame: ether(bcast, 0x0806, arp(1, ipNone)), want: xdpRedirect, vif0: RuleCounters{Promisc: 1}},
		{name: "promisc: another vif's MAC stays its own", promisc: []int{0}, frame: ether(mac1, 0x0800, nil), want: xdpPass, vif1: RuleCounters{NoSocket: 1}, host: RuleCounters{NoSocket: 1}},
		{name: "promisc: own MAC is unicast", promisc: []int{0}, frame: ether(mac0, 0x0800, nil), want: xdpRedirect, vif0: RuleCounters{Unicast: 1}},
		{name: "promisc: truncated ARP still passes", promisc: []int{0}, frame: truncARP, want: xdpPass, host: RuleCounters{Runt: 1}},
		{name: "promisc without socket", promisc: []int{1}, frame: ether(macOther, 0x0800, nil), want: xdpPass, vif1: RuleCounters{NoSocket: 1}, host: RuleCounters{NoSocket: 1}},
	}
}

func TestIntegrationSteerRules(t *testing.T) {
	s := loadT(t, nil)
	setup(t, s)
	for _, tc := range steerCases() {
		t.Run(tc.name, func(t *testing.T) {
			for _, v := range tc.promisc {
				if err := s.SetPromisc(v, true); err != nil {
					t.Fatal(err)
				}
				defer func() {
					if err := s.SetPromisc(v, false); err != nil {
						t.Error(err)
					}
				}()
			}
			before := snap(t, s, 0, 1)
			got := run(t, s, tc.frame)
			if got != tc.want {
				t.Errorf("action %d, want %d", got, tc.want)
			}
			after := snap(t, s, 0, 1)
			for row, want := range map[int]RuleCounters{-1: tc.host, 0: tc.vif0, 1: tc.vif1} {
				if d := sub(after[row], before[row]); d != want {
					t.Errorf("row %d: counters moved by %+v, want %+v", row, d, want)
				}
			}
		})
	}
}

// After ClearSocket, the vif's frames pass and count as NoSocket; after
// SetSocket again they redirect.
func TestIntegrationSocketLifecycle(t *testing.T) {
	s := loadT(t, nil)
	setup(t, s)
	frame := ether(mac0, 0x0800, nil)
	if got := run(t, s, frame); got != xdpRedirect {
		t.Fatalf("with socket: action %d, want XDP_REDIRECT", got)
	}
	if err := s.ClearSocket(0, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.ClearSocket(0, 0); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("second ClearSocket: %v, want ENOENT", err)
	}
	before := snap(t, s, 0)
	if got := run(t, s, frame); got != xdpPass {
		t.Fatalf("without socket: action %d, want XDP_PASS", got)
	}
	if d := sub(snap(t, s, 0)[0], before[0]); d != (RuleCounters{NoSocket: 1}) {
		t.Fatalf("without socket: vif 0 counters moved by %+v", d)
	}
	if err := s.SetSocket(0, 0, xskFD(t)); err != nil {
		t.Fatal(err)
	}
	if got := run(t, s, frame); got != xdpRedirect {
		t.Fatalf("socket set again: action %d, want XDP_REDIRECT", got)
	}
	// Closing the socket empties its slot.
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetSocket(0, 0, fd); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	if got := run(t, s, frame); got != xdpPass {
		t.Fatalf("socket closed: action %d, want XDP_PASS", got)
	}
	if err := s.SetSocket(0, 0, xskFD(t)); err != nil {
		t.Fatal(err)
	}
	// A socket for queue 1 does not serve queue 0.
	if err := s.ClearSocket(0, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.SetSocket(0, 1, xskFD(t)); err != nil {
		t.Fatal(err)
	}
	if got := run(t, s, frame); got != xdpPass {
		t.Fatalf("socket on queue 1 only: action %d on queue 0, want XDP_PASS", got)
	}
}

func TestIntegrationMapErrors(t *testing.T) {
	s := loadT(t, &Options{MaxVifs: 4, MaxQueues: 2, MaxMACs: 3, MaxIPv4s: 2})
	fd := xskFD(t)
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"SetSocket vif -1", s.SetSocket(-1, 0, fd), unix.EINVAL},
		{"SetSocket vif 4", s.SetSocket(4, 0, fd), unix.EINVAL},
		{"SetSocket queue 2", s.SetSocket(0, 2, fd), unix.EINVAL},
		{"SetSocket bad fd", s.SetSocket(0, 0, -1), unix.EBADF},
		{"SetSocket not AF_XDP", s.SetSocket(0, 0, udpFD(t)), unix.EOPNOTSUPP},
		{"ClearSocket unset", s.ClearSocket(3, 1), unix.ENOENT},
		{"AddMAC short", s.AddMAC(net.HardwareAddr{1, 2, 3}, 0), unix.EINVAL},
		{"AddMAC vif 4", s.AddMAC(mac0, 4), unix.EINVAL},
		{"AddIPv4 IPv6", s.AddIPv4(netip.MustParseAddr("2001:db8::1"), 0), unix.EINVAL},
		{"DelMAC absent", s.DelMAC(mac0, 0), unix.ENOENT},
		{"DelIPv4 absent", s.DelIPv4(ip0, 0), unix.ENOENT},
		{"SetPromisc vif 9", s.SetPromisc(9, true), unix.EINVAL},
		{"Counters vif 4", func() error { _, err := s.Counters(4); return err }(), unix.EINVAL},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		}
	}

	// Ownership: idempotent for the owner, EEXIST for others, ENOENT when
	// another vif deletes.
	if err := s.AddMAC(mac0, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.AddMAC(mac0, 1); err != nil {
		t.Fatalf("AddMAC again by owner: %v", err)
	}
	if err := s.AddMAC(mac0, 2); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("AddMAC by another vif: %v, want EEXIST", err)
	}
	if err := s.DelMAC(mac0, 2); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("DelMAC by another vif: %v, want ENOENT", err)
	}
	if err := s.AddIPv4(ip0, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.AddIPv4(netip.MustParseAddr("::ffff:198.18.0.10"), 1); err != nil {
		t.Fatalf("AddIPv4 of the v4-mapped form by owner: %v", err)
	}
	if err := s.AddIPv4(ip0, 3); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("AddIPv4 by another vif: %v, want EEXIST", err)
	}
	// Full maps report E2BIG.
	if err := s.AddMAC(mac1, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.AddMAC(mcast0, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.AddMAC(macOther, 1); !errors.Is(err, unix.E2BIG) {
		t.Fatalf("AddMAC beyond MaxMACs: %v, want E2BIG", err)
	}
	if err := s.AddIPv4(ip1, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.AddIPv4(ipNone, 1); !errors.Is(err, unix.E2BIG) {
		t.Fatalf("AddIPv4 beyond MaxIPv4s: %v, want E2BIG", err)
	}
	if err := s.DelMAC(mac0, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.DelIPv4(ip0, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.DelMAC(mac0, 1); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("DelMAC twice: %v, want ENOENT", err)
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.AddMAC(mac0, 0); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("AddMAC after Close: %v, want net.ErrClosed", err)
	}
	if _, err := s.Attach(1, AttachGeneric); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Attach after Close: %v, want net.ErrClosed", err)
	}
}

func TestLoadOptionsErrors(t *testing.T) {
	for _, o := range []Options{{MaxVifs: -1}, {MaxQueues: -3}, {MaxVifs: 4096, MaxQueues: 4096}, {MaxMACs: maxSlots + 1}} {
		if _, err := Load(&o); !errors.Is(err, unix.EINVAL) {
			t.Errorf("Load(%+v): %v, want EINVAL", o, err)
		}
	}
}

// With several promiscuous vifs, the lowest-numbered one receives.
func TestIntegrationPromiscLowest(t *testing.T) {
	s := loadT(t, nil)
	for _, v := range []int{3, 5} {
		if err := s.SetSocket(v, 0, xskFD(t)); err != nil {
			t.Fatal(err)
		}
	}
	frame := ether(macOther, 0x0800, nil)
	steps := []struct {
		vif  int
		on   bool
		want int // vif that must count Promisc, -1 for the host
	}{
		{5, true, 5}, {3, true, 3}, {3, false, 5}, {3, true, 3}, {5, false, 3}, {3, false, -1},
	}
	for i, st := range steps {
		if err := s.SetPromisc(st.vif, st.on); err != nil {
			t.Fatal(err)
		}
		before := snap(t, s, 3, 5)
		got := run(t, s, frame)
		after := snap(t, s, 3, 5)
		if st.want < 0 {
			if got != xdpPass || sub(after[-1], before[-1]).Pass != 1 {
				t.Errorf("step %d: action %d, host %+v; want a host pass", i, got, sub(after[-1], before[-1]))
			}
			continue
		}
		if got != xdpRedirect || sub(after[st.want], before[st.want]).Promisc != 1 {
			t.Errorf("step %d: action %d, vif %d %+v; want a promiscuous redirect", i, got, st.want, sub(after[st.want], before[st.want]))
		}
	}
}
