package netstack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/virtif-xdp/virtif-xdp/internal/virtiftest"
	"github.com/virtif-xdp/virtif-xdp/virtif"
	_ "github.com/virtif-xdp/virtif-xdp/virtif/mem"
)

var (
	srv4 = netip.MustParsePrefix("198.18.0.3/24")
	srv6 = netip.MustParsePrefix("fd00:198:18::3/64")
	cli4 = netip.MustParsePrefix("198.18.0.4/24")
	cli6 = netip.MustParsePrefix("fd00:198:18::4/64")
)

// newCloner makes a cloner closed when the test ends.
var newCloner = virtiftest.NewCloner

// memIfc makes an interface on the in-memory segment seg.
func memIfc(t testing.TB, c *virtif.Cloner, seg string) *virtif.Interface {
	t.Helper()
	ifc, err := c.Create()
	if err != nil {
		t.Fatal(err)
	}
	if err := ifc.SetLinkStr("mem:" + seg); err != nil {
		t.Fatal(err)
	}
	return ifc
}

// segName is a segment name no other test uses.
func segName(t testing.TB) string {
	return strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
}

// waitGoroutines polls until at most n goroutines run; the deadline only
// bounds a failing test.
func waitGoroutines(n int) int {
	deadline := time.Now().Add(5 * time.Second)
	for {
		g := runtime.NumGoroutine()
		if g <= n || time.Now().After(deadline) {
			return g
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// echoCheck writes a message to c and checks it comes back.
func echoCheck(t testing.TB, c net.Conn, size int) {
	t.Helper()
	msg := bytes.Repeat([]byte("virtif-xdp echo "), size/16+1)[:size]
	errc := make(chan error, 1)
	go func() { _, err := c.Write(msg); errc <- err }()
	got := make([]byte, len(msg))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("echo read: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("echo write: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo returned different bytes")
	}
}

// httpGet fetches url with a client whose connections come from dial.
func httpGet(t testing.TB, dial func(ctx context.Context, network, addr string) (net.Conn, error), url string) string {
	t.Helper()
	tr := &http.Transport{DialContext: dial, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return string(body)
}

// stackDialer dials through a userspace stack, for net/http.
func stackDialer(st *Stack) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, _, addr string) (net.Conn, error) {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return nil, err
		}
		return st.DialTCP(ctx, ap)
	}
}

// Two userspace hosts on one in-memory segment: ping both ways over IPv4 and
// IPv6, TCP echo, HTTP status page; counters move; nothing leaks after Close.
func TestMemHosts(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		c, err := virtif.NewCloner(virtif.ClonerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		seg := segName(t)
		srvIfc, cliIfc := memIfc(t, c, seg), memIfc(t, c, seg)
		srv, err := NewHost(srvIfc, HostConfig{
			Addrs:    []netip.Prefix{srv4, srv6},
			EchoPort: 7, DiscardPort: 9, HTTPAddr: ":80",
			StatusFunc: func(w io.Writer) { fmt.Fprintln(w, "status-func-was-here") },
		})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		// The client sends through gVisor's FIFO queueing discipline, the
		// server straight from the producing goroutine.
		cli, err := NewHost(cliIfc, HostConfig{Addrs: []netip.Prefix{cli4, cli6}, Stack: StackConfig{SendQueues: 2}})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		ctx := testCtx(t)

		for _, dst := range []netip.Addr{srv4.Addr(), srv6.Addr()} {
			if _, err := cli.Stack().Ping(ctx, dst, []byte("ping")); err != nil {
				t.Fatalf("ping %s: %v", dst, err)
			}
		}
		for _, dst := range []netip.Addr{cli4.Addr(), cli6.Addr()} {
			if _, err := srv.Stack().Ping(ctx, dst, nil); err != nil {
				t.Fatalf("ping back %s: %v", dst, err)
			}
		}
		for _, dst := range []netip.Addr{srv4.Addr(), srv6.Addr()} {
			conn, err := cli.Stack().DialTCP(ctx, netip.AddrPortFrom(dst, 7))
			if err != nil {
				t.Fatal(err)
			}
			echoCheck(t, conn, 100000) // many segments, both ways
			conn.Close()
		}
		body := httpGet(t, stackDialer(cli.Stack()), "http://198.18.0.3/")
		for _, want := range []string{srvIfc.Name(), "198.18.0.3/24", "fd00:198:18::3/64", "rx packets", "status-func-was-here"} {
			if !strings.Contains(body, want) {
				t.Errorf("status page lacks %q:\n%s", want, body)
			}
		}
		// Without StatusCounter, no backend counter: a backend's may be
		// shared with other interfaces (mem's count the whole segment's port).
		if strings.Contains(body, "mem_") {
			t.Errorf("status page without StatusCounter shows the backend's counters:\n%s", body)
		}
		body6 := httpGet(t, stackDialer(cli.Stack()), "http://[fd00:198:18::3]/?text")
		if !strings.HasPrefix(body6, "interface "+srvIfc.Name()) {
			t.Errorf("text status page over IPv6:\n%s", body6)
		}

		st := srvIfc.Stats()
		if st.IPackets < 100 || st.OPackets < 100 || st.IDrops != 0 || st.OErrors != 0 || st.ODrops != 0 {
			t.Errorf("server counters: %+v", st)
		}
		if got := srv.Stack().Netstack().Stats().ICMP.V4.PacketsSent.EchoReply.Value(); got != 1 {
			t.Errorf("server sent %d ICMPv4 echo replies, want 1", got)
		}
		if got := srv.Stack().Netstack().Stats().ICMP.V6.PacketsSent.EchoReply.Value(); got != 1 {
			t.Errorf("server sent %d ICMPv6 echo replies, want 1", got)
		}
		// A connection left open must not keep Close from finishing.
		idle, err := cli.Stack().DialTCP(ctx, netip.AddrPortFrom(srv4.Addr(), 9))
		if err != nil {
			t.Fatal(err)
		}
		defer idle.Close()
		if err := srv.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := srv.Close(); err != nil {
			t.Errorf("second close: %v", err)
		}
		if err := cli.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	if g := waitGoroutines(before); g > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before, %d after Close:\n%s", before, g, buf[:runtime.Stack(buf, true)])
	}
}

// AddAddress registers IPv4 addresses and IPv6 solicited-node groups with the
// interface, and Close takes them back.
func TestAddressRegistration(t *testing.T) {
	c := newCloner(t)
	ifc := memIfc(t, c, segName(t))
	st, err := NewStack(ifc, StackConfig{AllNodes: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, p := range []netip.Prefix{srv4, srv6, netip.MustParsePrefix("fd00:1::3/64")} {
		if err := st.AddAddress(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.AddAddress(srv4); !errors.Is(err, unix.EEXIST) {
		t.Errorf("adding an address twice: %v, want EEXIST", err)
	}
	for _, bad := range []netip.Prefix{{}, netip.MustParsePrefix("::ffff:198.18.0.9/120")} {
		if err := st.AddAddress(bad); !errors.Is(err, unix.EINVAL) {
			t.Errorf("adding %s: %v, want EINVAL", bad, err)
		}
	}
	if got := ifc.IPv4(); len(got) != 1 || got[0] != srv4.Addr() {
		t.Errorf("interface IPv4 %v, want [%s]", got, srv4.Addr())
	}
	sn := SolicitedNodeMAC(srv6.Addr())
	if sn.String() != "33:33:ff:00:00:03" {
		t.Errorf("solicited-node MAC of %s is %s", srv6.Addr(), sn)
	}
	want := map[string]int{sn.String(): 2, AllNodesMAC.String(): 1} // fd00:1::3 shares the low 24 bits
	if got := ifc.Multicast(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("groups %v, want %v", got, want)
	}
	if err := st.RemoveAddress(netip.MustParsePrefix("fd00:1::3/64")); err != nil {
		t.Fatal(err)
	}
	if err := st.RemoveAddress(netip.MustParsePrefix("fd00:1::3/64")); !errors.Is(err, unix.EADDRNOTAVAIL) {
		t.Errorf("removing twice: %v, want EADDRNOTAVAIL", err)
	}
	if got := ifc.Multicast()[sn.String()]; got != 1 {
		t.Errorf("solicited-node group count %d after removing one of two, want 1", got)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	if got := ifc.IPv4(); len(got) != 0 {
		t.Errorf("IPv4 left registered after Close: %v", got)
	}
	if got := ifc.Multicast(); len(got) != 0 {
		t.Errorf("groups left joined after Close: %v", got)
	}
	if err := st.AddAddress(cli4); !errors.Is(err, net.ErrClosed) {
		t.Errorf("AddAddress after Close: %v, want net.ErrClosed", err)
	}
}

func TestNewErrors(t *testing.T) {
	c := newCloner(t)
	bare, err := c.Create()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewEndpoint(bare, EndpointOptions{}); !errors.Is(err, unix.ENXIO) {
		t.Errorf("endpoint without backend: %v, want ENXIO", err)
	}
	if _, err := NewEndpoint(nil, EndpointOptions{}); !errors.Is(err, unix.EINVAL) {
		t.Errorf("nil interface: %v, want EINVAL", err)
	}
	ifc := memIfc(t, c, segName(t))
	if _, err := NewHost(ifc, HostConfig{}); !errors.Is(err, unix.EINVAL) {
		t.Errorf("host without address: %v, want EINVAL", err)
	}
	for _, bad := range []string{"80", "x:80", ":http", "[::1]:99999"} {
		if _, err := NewHost(ifc, HostConfig{Addrs: []netip.Prefix{srv4}, HTTPAddr: bad}); !errors.Is(err, unix.EINVAL) {
			t.Errorf("HTTPAddr %q: %v, want EINVAL", bad, err)
		}
	}
	if _, err := NewHost(ifc, HostConfig{Addrs: []netip.Prefix{srv4}, EchoPort: 70000}); !errors.Is(err, unix.EINVAL) {
		t.Errorf("echo port 70000: %v, want EINVAL", err)
	}
	// The failed hosts left nothing registered.
	if got := ifc.IPv4(); len(got) != 0 {
		t.Errorf("failed NewHost left %v registered", got)
	}
}

// A frame handed up after Close reaches no stack, and Close waits for one in
// flight.
func TestEndpointCloseDetaches(t *testing.T) {
	c := newCloner(t)
	seg := segName(t)
	a, b := memIfc(t, c, seg), memIfc(t, c, seg)
	ha, err := NewHost(a, HostConfig{Addrs: []netip.Prefix{srv4}})
	if err != nil {
		t.Fatal(err)
	}
	defer ha.Close()
	hb, err := NewHost(b, HostConfig{Addrs: []netip.Prefix{cli4}})
	if err != nil {
		t.Fatal(err)
	}
	defer hb.Close()
	ctx := testCtx(t)
	if _, err := hb.Stack().Ping(ctx, srv4.Addr(), nil); err != nil {
		t.Fatal(err)
	}
	ha.Stack().Endpoint().Close()
	if ha.Stack().Endpoint().IsAttached() {
		t.Error("attached after Close")
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := hb.Stack().Ping(short, srv4.Addr(), nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ping of a detached stack: %v, want no answer", err)
	}
	if st := a.Stats(); st.INoHandler == 0 {
		t.Errorf("frames after Close should count as INoHandler: %+v", st)
	}
}

// Adding addresses on an up interface announces them: a gratuitous ARP for
// IPv4, an unsolicited neighbour advertisement (override flag, target
// link-layer address) to all nodes for IPv6.
func TestAnnouncements(t *testing.T) {
	c := newCloner(t)
	seg := segName(t)
	ifc, watcher := memIfc(t, c, seg), memIfc(t, c, seg)
	got := make(chan []byte, 16)
	watcher.SetInput(func(f []byte, _ bool) { got <- append([]byte(nil), f...) })
	if err := watcher.Up(); err != nil {
		t.Fatal(err)
	}
	h, err := NewHost(ifc, HostConfig{Addrs: []netip.Prefix{srv4, srv6}})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var arp, na []byte
	for arp == nil || na == nil {
		select {
		case f := <-got:
			switch {
			case len(f) >= 42 && f[12] == 0x08 && f[13] == 0x06:
				arp = f
			case len(f) >= 54+header.ICMPv6NeighborAdvertMinimumSize && f[12] == 0x86 && f[13] == 0xdd && f[54] == byte(header.ICMPv6NeighborAdvert):
				na = f
			}
		case <-testCtx(t).Done():
			t.Fatalf("announcements: ARP %v, NA %v", arp != nil, na != nil)
		}
	}
	mac, a := ifc.HardwareAddr(), srv4.Addr().As4()
	want := slices.Concat([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, mac, []byte{8, 6, 0, 1, 8, 0, 6, 4, 0, 1},
		mac, a[:], make([]byte, 6), a[:])
	if !bytes.Equal(arp, want) {
		t.Errorf("ARP announcement\n got % x\nwant % x", arp, want)
	}

	if !bytes.Equal(na[:6], AllNodesMAC) || !bytes.Equal(na[6:12], mac) {
		t.Errorf("NA Ethernet header % x", na[:14])
	}
	ip := header.IPv6(na[14:])
	src, dst := ip.SourceAddress(), ip.DestinationAddress()
	if src.String() != srv6.Addr().String() || dst != header.IPv6AllNodesMulticastAddress || ip.HopLimit() != 255 {
		t.Errorf("NA IPv6 header: %s -> %s hop limit %d", src, dst, ip.HopLimit())
	}
	icmp := header.ICMPv6(ip.Payload())
	if sum := header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: icmp, Src: src, Dst: dst}); sum != icmp.Checksum() {
		t.Errorf("NA checksum %#x, want %#x", icmp.Checksum(), sum)
	}
	body := header.NDPNeighborAdvert(icmp.MessageBody())
	if !body.OverrideFlag() || body.SolicitedFlag() || body.TargetAddress().String() != srv6.Addr().String() {
		t.Errorf("NA body: override %v solicited %v target %s", body.OverrideFlag(), body.SolicitedFlag(), body.TargetAddress())
	}
	if opt := body[header.NDPNAMinimumSize:]; len(opt) < 8 || opt[0] != 2 || opt[1] != 1 || !bytes.Equal(opt[2:8], mac) {
		t.Errorf("NA target link-layer option % x", opt)
	}
}

// With a gateway, traffic off the subnet goes to the gateway's MAC.
func TestGateway(t *testing.T) {
	c := newCloner(t)
	seg := segName(t)
	gw, err := NewHost(memIfc(t, c, seg), HostConfig{Addrs: []netip.Prefix{srv4, srv6}})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	cli, err := NewHost(memIfc(t, c, seg), HostConfig{Addrs: []netip.Prefix{cli4, cli6}, Gateway: srv4.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if err := cli.Stack().SetGateway(srv6.Addr()); err != nil {
		t.Fatal(err)
	}
	if err := cli.Stack().SetGateway(netip.Addr{}); !errors.Is(err, unix.EINVAL) {
		t.Errorf("invalid gateway: %v, want EINVAL", err)
	}
	// Nobody answers (the gateway does not forward), but the gateway gets
	// them (counted from here: the client's address probes went by before).
	stat := gw.Stack().Netstack().Stats().IP.InvalidDestinationAddressesReceived
	base := stat.Value()
	for _, dst := range []string{"198.19.0.9", "fd00:1::9"} {
		short, cancel := context.WithTimeout(testCtx(t), 300*time.Millisecond)
		_, _ = cli.Stack().Ping(short, netip.MustParseAddr(dst), nil)
		cancel()
	}
	ctx := testCtx(t)
	for stat.Value()-base < 2 && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	if got := stat.Value() - base; got != 2 {
		t.Errorf("the gateway received %d packets for other hosts, want 2", got)
	}
}
