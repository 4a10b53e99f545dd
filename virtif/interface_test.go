package virtif

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Mirrors virtif_ioctl SIOCSLINKSTR: once, never while up, 1..4096 bytes
// counting the NUL (ifd_len), unknown scheme ENXIO, failure keeps nothing.
func TestSetLinkStr(t *testing.T) {
	long := "bare:" + strings.Repeat("x", LinkStrMax-1-len("bare:")) // 4095 bytes + NUL = ifd_len 4096
	for _, tc := range []struct {
		name, s string
		def     string // cloner DefaultScheme
		want    unix.Errno
		link    string // what the backend gets
	}{
		{"plain", "rec:seg0", "", 0, "rec:seg0"},
		{"max length", long, "", 0, long},
		{"one byte too long", long + "x", "", unix.E2BIG, ""},
		{"far too long", strings.Repeat("y", 1<<20), "", unix.E2BIG, ""},
		{"empty", "", "", unix.EINVAL, ""},
		{"NUL byte", "rec:a\x00b", "", unix.EINVAL, ""},
		{"empty scheme", ":seg0", "", unix.EINVAL, ""},
		{"unknown scheme", "nosuch:seg0", "", unix.ENXIO, ""},
		{"no scheme, no default", "seg0", "", unix.ENXIO, ""},
		{"no scheme, default", "seg0", "rec", 0, "rec:seg0"},
		{"one byte, default", "7", "rec", 0, "rec:7"},
		{"backend fails", "rec:x,fail", "", unix.EIO, ""},
		{"backend returns nil", "nilbackend:x", "", unix.EINVAL, ""},
		{"backend MAC multicast", "rec:x,mac=03:00:00:00:00:01", "", unix.EINVAL, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCloner(t, ClonerConfig{DefaultScheme: tc.def})
			ifp, _ := c.Create()
			err := ifp.SetLinkStr(tc.s)
			wantErrno(t, "SetLinkStr", err, tc.want)
			if err != nil {
				if tc.want == unix.ENXIO && strings.Contains(tc.s, ":") && !strings.Contains(err.Error(), `"nosuch"`) {
					t.Errorf("error %q does not name the scheme", err)
				}
				// Nothing kept: still unset, no backend, and settable again.
				_, gerr := ifp.LinkStr()
				wantErrno(t, "LinkStr after failed set", gerr, unix.ENOENT)
				wantErrno(t, "Up after failed set", ifp.Up(), unix.ENXIO)
				wantErrno(t, "SetLinkStr after failed set", ifp.SetLinkStr("rec:again"), 0)
				return
			}
			if got := backendLink(ifp.Backend()); got != tc.link {
				t.Errorf("backend link %.40q, want %.40q", got, tc.link)
			}
			if s, _ := ifp.LinkStr(); s != tc.s {
				t.Errorf("LinkStr %.40q, want %.40q", s, tc.s)
			}
			wantErrno(t, "SetLinkStr twice", ifp.SetLinkStr("rec:other"), unix.EBUSY)
		})
	}
}

// Mirrors SIOCSLINKSTR's IFF_UP check, which comes before "already set".
func TestSetLinkStrWhileUp(t *testing.T) {
	ifp, _ := newRec(t, "", true)
	err := ifp.SetLinkStr("rec:other")
	wantErrno(t, "SetLinkStr while up", err, unix.EBUSY)
	if err == nil || !strings.Contains(err.Error(), "interface up") {
		t.Errorf("error %v does not say the interface is up", err)
	}
}

// Mirrors virtif_ioctl SIOCGLINKSTR and IFLINKSTR_QUERYLEN (strlen+1), and
// IFLINKSTR_UNSET, which if_virt.c left as a panic.
func TestGetLinkStr(t *testing.T) {
	c := newCloner(t, ClonerConfig{})
	ifp, _ := c.Create()
	_, err := ifp.LinkStr()
	wantErrno(t, "LinkStr unset", err, unix.ENOENT)
	_, err = ifp.LinkStrLen()
	wantErrno(t, "LinkStrLen unset", err, unix.ENOENT)
	wantErrno(t, "UnsetLinkStr unset", ifp.UnsetLinkStr(), unix.ENOTSUP)
	if err := ifp.SetLinkStr("rec:seg0"); err != nil {
		t.Fatal(err)
	}
	if s, err := ifp.LinkStr(); s != "rec:seg0" || err != nil {
		t.Errorf("LinkStr = %q, %v", s, err)
	}
	if n, err := ifp.LinkStrLen(); n != len("rec:seg0")+1 || err != nil {
		t.Errorf("LinkStrLen = %d, %v; want strlen+1 = %d", n, err, len("rec:seg0")+1)
	}
	wantErrno(t, "UnsetLinkStr set", ifp.UnsetLinkStr(), unix.ENOTSUP)
}

// Mirrors virtif_create: MAC b2:0a:RR:0b:0e:NN, NN the unit's low byte; a
// backend may replace it.
func TestCreateMAC(t *testing.T) {
	c := newCloner(t, ClonerConfig{})
	for _, unit := range []int{0, 5, 300} {
		ifp, err := c.CreateUnit(unit)
		if err != nil {
			t.Fatal(err)
		}
		if err := ifp.SetLinkStr("rec:mac"); err != nil {
			t.Fatal(err)
		}
		m := ifp.HardwareAddr()
		if len(m) != 6 || m[0] != 0xb2 || m[1] != 0x0a || m[3] != 0x0b || m[4] != 0x0e || m[5] != byte(unit) {
			t.Errorf("unit %d: MAC %v, want b2:0a:RR:0b:0e:%02x", unit, m, byte(unit))
		}
		if b := ifp.Backend().(*recBackend); b.cfg.MAC.String() != m.String() {
			t.Errorf("unit %d: backend was proposed %v, interface has %v", unit, b.cfg.MAC, m)
		}
	}
	ifp, _ := c.Create()
	if err := ifp.SetLinkStr("rec:mac,mac=02:11:22:33:44:55"); err != nil {
		t.Fatal(err)
	}
	if m := ifp.HardwareAddr().String(); m != "02:11:22:33:44:55" {
		t.Errorf("MAC %s, want the backend's 02:11:22:33:44:55", m)
	}
	// The random byte varies: 20 interfaces with one RR value is 1 in 256^19.
	seen := map[byte]bool{}
	for range 20 {
		i, _ := c.Create()
		_ = i.SetLinkStr("bare:x")
		seen[i.HardwareAddr()[2]] = true
		_ = i.Close()
	}
	if len(seen) < 2 {
		t.Errorf("RR byte never varied: %v", seen)
	}
}

// Mirrors virtif_init's and the default ioctl branch's ENXIO before the
// backend exists.
func TestNeedBackend(t *testing.T) {
	c := newCloner(t, ClonerConfig{})
	ifp, _ := c.Create()
	for name, op := range map[string]func() error{
		"Up":          ifp.Up,
		"Output":      func() error { return ifp.Output([][]byte{make([]byte, 60)}) },
		"OutputBatch": func() error { _, err := ifp.OutputBatch([][][]byte{{make([]byte, 60)}}); return err },
		"SetMTU":      func() error { return ifp.SetMTU(1400) },
		"SetHardwareAddr": func() error {
			return ifp.SetHardwareAddr(net.HardwareAddr{2, 0, 0, 0, 0, 1})
		},
		"SetPromisc":     func() error { return ifp.SetPromisc(true) },
		"JoinMulticast":  func() error { return ifp.JoinMulticast(net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}) },
		"LeaveMulticast": func() error { return ifp.LeaveMulticast(net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}) },
		"AddIPv4":        func() error { return ifp.AddIPv4(netip.MustParseAddr("198.18.0.1")) },
		"DelIPv4":        func() error { return ifp.DelIPv4(netip.MustParseAddr("198.18.0.1")) },
	} {
		wantErrno(t, name, op(), unix.ENXIO)
	}
	if err := ifp.Down(); err != nil {
		t.Errorf("Down without backend: %v", err)
	}
	if st := ifp.Stats(); st.ODrops != 2 {
		t.Errorf("ODrops %d, want the 2 outputs counted", st.ODrops)
	}
}

// Mirrors virtif_init (RUNNING) and virtif_stop (clears it).
func TestUpDown(t *testing.T) {
	ifp, _ := newRec(t, "", false)
	base := FlagBroadcast | FlagSimplex | FlagMulticast
	steps := []struct {
		op   func() error
		want Flags
	}{
		{ifp.Up, base | FlagUp | FlagRunning},
		{ifp.Up, base | FlagUp | FlagRunning},
		{ifp.Down, base},
		{ifp.Down, base},
		{ifp.Up, base | FlagUp | FlagRunning},
	}
	for n, s := range steps {
		if err := s.op(); err != nil {
			t.Fatal(err)
		}
		if f := ifp.Flags(); f != s.want {
			t.Errorf("step %d: flags %v, want %v", n, f, s.want)
		}
	}
	if got := (FlagUp | FlagRunning | FlagOActive).String(); got != "UP,RUNNING,OACTIVE" {
		t.Errorf("Flags.String = %q", got)
	}
	_ = ifp.Down()
}

// Mirrors ether_ioctl SIOCSIFMTU: ETHERMIN..ETHERMTU on a backend that
// does not say what it carries (if_virt.c never sets ETHERCAP_JUMBO_MTU);
// up to MaxMTU() on one that does (ours). At each accepted bound the send
// path takes a frame of MTU plus Ethernet and VLAN headers, and no more.
func TestSetMTU(t *testing.T) {
	for _, tc := range []struct {
		link string
		mtu  int
		want unix.Errno
	}{
		{"bare:x", 45, unix.EINVAL}, // below ETHERMIN
		{"bare:x", 46, 0},           // ETHERMIN
		{"bare:x", 68, 0},
		{"bare:x", 1500, 0},           // ETHERMTU
		{"bare:x", 1501, unix.EINVAL}, // no MTULimiter: no jumbo frames
		{"bare:x", 9000, unix.EINVAL},
		{"bare:x", 0, unix.EINVAL},
		{"bare:x", -1, unix.EINVAL},
		{"rec:x,mtu=9000", 45, unix.EINVAL}, // the floor holds for every backend
		{"rec:x,mtu=9000", 46, 0},
		{"rec:x,mtu=9000", 9000, 0},
		{"rec:x,mtu=9000", 9001, unix.EINVAL},
		{"rec:x,mtu=2000", 2000, 0},
		{"rec:x,mtu=2000", 2001, unix.EINVAL},
		{"rec:x,mtu=65517", 65517, 0}, // above ETHERMTU_JUMBO when the backend carries it
	} {
		name := fmt.Sprintf("%s SetMTU(%d)", tc.link, tc.mtu)
		c := newCloner(t, ClonerConfig{})
		ifp, _ := c.Create()
		if err := ifp.SetLinkStr(tc.link); err != nil {
			t.Fatal(err)
		}
		err := ifp.SetMTU(tc.mtu)
		wantErrno(t, name, err, tc.want)
		want := tc.mtu
		if err != nil {
			want = DefaultMTU
		}
		if ifp.MTU() != want {
			t.Errorf("%s: MTU %d, want %d", name, ifp.MTU(), want)
		}
		if err != nil {
			continue
		}
		_ = ifp.Up()
		wantErrno(t, name+": Output of MTU+18 bytes", ifp.Output([][]byte{frameTo(bcast, tc.mtu+18)}), 0)
		wantErrno(t, name+": Output of MTU+19 bytes", ifp.Output([][]byte{frameTo(bcast, tc.mtu+19)}), unix.EMSGSIZE)
		_ = ifp.Down()
	}
}

// Mirrors ether_ioctl SIOCSIFLLADDR: only while down, only unicast.
func TestSetHardwareAddr(t *testing.T) {
	ifp, b := newRec(t, "", false)
	for _, tc := range []struct {
		mac  net.HardwareAddr
		up   bool
		want unix.Errno
	}{
		{net.HardwareAddr{2, 0, 0, 0, 0, 9}, true, unix.EBUSY},
		{net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}, false, unix.EINVAL},
		{net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, false, unix.EINVAL},
		{net.HardwareAddr{0, 0, 0, 0, 0, 0}, false, unix.EINVAL},
		{net.HardwareAddr{2, 0, 0, 0, 9}, false, unix.EINVAL},
		{nil, false, unix.EINVAL},
		{net.HardwareAddr{2, 0, 0, 0, 0, 9}, false, 0},
	} {
		if tc.up {
			_ = ifp.Up()
		}
		wantErrno(t, fmt.Sprintf("SetHardwareAddr(%v) up=%v", tc.mac, tc.up), ifp.SetHardwareAddr(tc.mac), tc.want)
		_ = ifp.Down()
	}
	if m := ifp.HardwareAddr().String(); m != "02:00:00:00:00:09" {
		t.Errorf("MAC %s", m)
	}
	b.failNext = unix.EPERM
	wantErrno(t, "backend refuses", ifp.SetHardwareAddr(net.HardwareAddr{2, 0, 0, 0, 0, 10}), unix.EPERM)
	if m := ifp.HardwareAddr().String(); m != "02:00:00:00:00:09" {
		t.Errorf("MAC changed to %s although the backend refused", m)
	}
	if ev := strings.Join(b.Events(), ";"); ev != "mac 02:00:00:00:00:09" {
		t.Errorf("backend events %q", ev)
	}
	// The receive filter follows the new MAC.
	got := 0
	ifp.SetInput(func([]byte, bool) { got++ })
	_ = ifp.Up()
	b.cfg.Deliver(frameTo(net.HardwareAddr{2, 0, 0, 0, 0, 9}, 60))
	if got != 1 {
		t.Errorf("frame to the new MAC not delivered")
	}
	_ = ifp.Down()
}

// Mirrors ether_addmulti / ether_delmulti: reference counts, first join and
// last leave reach the backend, leave of a group not joined is ENXIO
// (ether_delmulti finds no entry).
func TestMulticast(t *testing.T) {
	ifp, b := newRec(t, "", false)
	g := net.HardwareAddr{1, 0, 0x5e, 0, 0, 0xfb}
	steps := []struct {
		join  bool
		group net.HardwareAddr
		want  unix.Errno
		refs  int
	}{
		{true, g, 0, 1},
		{true, g, 0, 2},
		{false, g, 0, 1},
		{false, g, 0, 0},
		{false, g, unix.ENXIO, 0}, // ether_delmulti: no such entry
		{true, net.HardwareAddr{2, 0, 0, 0, 0, 1}, unix.EINVAL, 0},
		{true, net.HardwareAddr{1, 0, 0x5e}, unix.EINVAL, 0},
	}
	for n, s := range steps {
		var err error
		if s.join {
			err = ifp.JoinMulticast(s.group)
		} else {
			err = ifp.LeaveMulticast(s.group)
		}
		wantErrno(t, fmt.Sprintf("step %d", n), err, s.want)
		if refs := ifp.Multicast()[g.String()]; refs != s.refs {
			t.Errorf("step %d: %d references, want %d", n, refs, s.refs)
		}
	}
	want := "multicast 01:00:5e:00:00:fb true;multicast 01:00:5e:00:00:fb false"
	if ev := strings.Join(b.Events(), ";"); ev != want {
		t.Errorf("backend saw %q, want %q", ev, want)
	}
	b.failNext = unix.ENOSPC
	wantErrno(t, "backend refuses join", ifp.JoinMulticast(g), unix.ENOSPC)
	if len(ifp.Multicast()) != 0 {
		t.Errorf("refused group recorded: %v", ifp.Multicast())
	}
}

// Mirrors ifpromisc: the backend is told on a change, flags follow.
func TestPromisc(t *testing.T) {
	ifp, b := newRec(t, "", false)
	for _, on := range []bool{true, true, false, false, true} {
		if err := ifp.SetPromisc(on); err != nil {
			t.Fatal(err)
		}
		if got := ifp.Flags()&FlagPromisc != 0; got != on {
			t.Errorf("PROMISC %v after SetPromisc(%v)", got, on)
		}
	}
	if ev := strings.Join(b.Events(), ";"); ev != "promisc true;promisc false;promisc true" {
		t.Errorf("backend saw %q", ev)
	}
	b.failNext = unix.EPERM
	wantErrno(t, "backend refuses", ifp.SetPromisc(false), unix.EPERM)
	if ifp.Flags()&FlagPromisc == 0 {
		t.Error("PROMISC cleared although the backend refused")
	}
}

// Mirrors SIOCAIFADDR / SIOCDIFADDR as far as the backend needs them.
func TestIPv4(t *testing.T) {
	a1, a2 := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.9")
	ifp, b := newRec(t, "", false)
	for n, s := range []struct {
		add  bool
		addr netip.Addr
		want unix.Errno
	}{
		{true, a1, 0},
		{true, a1, unix.EEXIST},
		{true, netip.AddrFrom16(a2.As16()), 0}, // v4-mapped is IPv4
		{true, netip.MustParseAddr("2001:db8::1"), unix.EINVAL},
		{true, netip.Addr{}, unix.EINVAL},
		{false, a1, 0},
		{false, a1, unix.EADDRNOTAVAIL},
	} {
		var err error
		if s.add {
			err = ifp.AddIPv4(s.addr)
		} else {
			err = ifp.DelIPv4(s.addr)
		}
		wantErrno(t, fmt.Sprintf("step %d", n), err, s.want)
	}
	if l := ifp.IPv4(); len(l) != 1 || l[0] != a2 {
		t.Errorf("IPv4() = %v, want [%v]", l, a2)
	}
	want := "ipv4 198.18.0.1 true;ipv4 198.18.0.9 true;ipv4 198.18.0.1 false"
	if ev := strings.Join(b.Events(), ";"); ev != want {
		t.Errorf("backend saw %q, want %q", ev, want)
	}
	// A backend without AddrRegistrar: addresses are still recorded.
	c := newCloner(t, ClonerConfig{})
	bare, _ := c.Create()
	_ = bare.SetLinkStr("bare:x")
	if err := bare.AddIPv4(a1); err != nil || len(bare.IPv4()) != 1 {
		t.Errorf("bare backend: AddIPv4 %v, addresses %v", err, bare.IPv4())
	}
}

// frameTo is an Ethernet frame of n bytes to dst.
func frameTo(dst net.HardwareAddr, n int) []byte {
	f := make([]byte, max(n, 14))
	copy(f, dst)
	copy(f[6:], []byte{2, 0xee, 0, 0, 0, 1})
	f[12], f[13] = 0x88, 0xb5 // local experimental EtherType
	return f[:n]
}
