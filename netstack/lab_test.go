//go:build linux

package netstack

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/virtif"
	"github.com/virtif-xdp/virtif-xdp/virtif/xdp"
)

var (
	labHost4 = netip.MustParseAddr("198.18.0.1")
	labHost6 = netip.MustParsePrefix("fd00:198:18::1/64")
	labPeer6 = netip.MustParsePrefix("fd00:198:18::2/64")
)

// xdpIfc makes a vif on the lab's host-side veth; opts are link-string
// options (",key=value...").
func xdpIfc(t testing.TB, lab *netlab.Lab, opts string) *virtif.Interface {
	t.Helper()
	c := newCloner(t)
	var ifc *virtif.Interface
	err := lab.Do(netlab.Host, func() (err error) {
		if ifc, err = c.Create(); err != nil {
			return err
		}
		return ifc.SetLinkStr("xdp:" + lab.Link[netlab.Host] + opts + netlab.TestLinkOpts())
	})
	if err != nil {
		labtest.SkipWithoutZeroCopy(t, err)
		t.Fatal(err)
	}
	return ifc
}

// addIPv6 gives both veth ends their kernel IPv6 addresses (no DAD, so they
// are usable at once).
func addIPv6(t testing.TB, lab *netlab.Lab) {
	t.Helper()
	for side, p := range map[int]netip.Prefix{netlab.Host: labHost6, netlab.Peer: labPeer6} {
		if out, err := lab.Run(side, "ip", "-6", "addr", "add", p.String(), "dev", lab.Link[side], "nodad"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
}

// peerTxChecksumOff makes the peer's kernel finish its checksums before
// sending: through a veth they would otherwise reach XDP unfinished
// (CHECKSUM_PARTIAL), and the stack would drop the segments as corrupt.
func peerTxChecksumOff(t testing.TB, lab *netlab.Lab) {
	t.Helper()
	if err := lab.SetTxChecksum(netlab.Peer, false); err != nil {
		t.Fatal(err)
	}
}

// hostTrafficTap counts received frames that belong to the host kernel's
// address: IPv4 to or from it, ARP asking for it, IPv6 to it.
type hostTrafficTap struct{ n atomic.Int64 }

func (h *hostTrafficTap) Tap(f []byte, dir virtif.Direction) {
	if dir != virtif.In || len(f) < 14 {
		return
	}
	h4 := labHost4.As4()
	h6 := labHost6.Addr().As16()
	switch binary.BigEndian.Uint16(f[12:14]) {
	case 0x0800:
		if len(f) >= 34 && (string(f[26:30]) == string(h4[:]) || string(f[30:34]) == string(h4[:])) {
			h.n.Add(1)
		}
	case 0x0806:
		if len(f) >= 42 && string(f[38:42]) == string(h4[:]) {
			h.n.Add(1)
		}
	case 0x86dd:
		if len(f) >= 54 && string(f[38:54]) == string(h6[:]) {
			h.n.Add(1)
		}
	}
}

// The userspace stack on an XDP vif shares a veth with the host kernel: from
// the peer namespace the kernel's own clients reach both, and the host's
// traffic never reaches the vif.
// With two queues the vif's frames arrive on two RX goroutines at once.
func TestIntegrationXDPHost(t *testing.T) {
	labtest.RequireRoot(t)
	for _, q := range []int{1, 2} {
		t.Run(fmt.Sprintf("queues=%d", q), func(t *testing.T) { testXDPHost(t, q) })
	}
}

func testXDPHost(t *testing.T, queues int) {
	lab := labtest.NewT(t, netlab.Options{Queues: queues})
	addIPv6(t, lab)
	peerTxChecksumOff(t, lab)
	before := runtime.NumGoroutine()
	c := newCloner(t)
	var ifc *virtif.Interface
	err := lab.Do(netlab.Host, func() (err error) {
		if ifc, err = c.Create(); err != nil {
			return err
		}
		return ifc.SetLinkStr("xdp:" + lab.Link[netlab.Host] + netlab.TestLinkOpts())
	})
	if err != nil {
		labtest.SkipWithoutZeroCopy(t, err)
		t.Fatal(err)
	}
	var tap hostTrafficTap
	if err := ifc.AddTap(&tap); err != nil {
		t.Fatal(err)
	}
	h, err := NewHost(ifc, HostConfig{
		Addrs:    []netip.Prefix{srv4, srv6},
		EchoPort: 7, HTTPAddr: ":80",
		// The vif's own counters, as virtif-xdp run shows them.
		StatusCounter: func() virtif.Stats {
			st := ifc.Stats()
			st.Backend = ifc.Backend().(*xdp.Backend).AppendOwnStats(nil)
			return st
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	t.Run("ping", func(t *testing.T) {
		for _, dst := range []string{"198.18.0.3", "198.18.0.1", "fd00:198:18::3", "fd00:198:18::1"} {
			if out, err := lab.Run(netlab.Peer, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "5", dst); err != nil {
				t.Errorf("ping %s from the peer: %v\n%s", dst, err, out)
			}
		}
		ss := h.Stack().Netstack().Stats().ICMP
		if v4, v6 := ss.V4.PacketsSent.EchoReply.Value(), ss.V6.PacketsSent.EchoReply.Value(); v4 != 3 || v6 != 3 {
			t.Errorf("userspace stack sent %d ICMPv4 and %d ICMPv6 echo replies, want 3 each", v4, v6)
		}
	})
	t.Run("tcp echo", func(t *testing.T) {
		for _, dst := range []string{"198.18.0.3:7", "[fd00:198:18::3]:7"} {
			c, err := lab.DialContext(netlab.Peer)(testCtx(t), "tcp", dst)
			if err != nil {
				t.Fatalf("dial %s from the peer: %v (tcp checksum errors %d)", dst, err, h.Stack().Netstack().Stats().TCP.ChecksumErrors.Value())
			}
			echoCheck(t, c, 200000)
			c.Close()
		}
	})
	t.Run("http", func(t *testing.T) {
		body := httpGet(t, lab.DialContext(netlab.Peer), "http://198.18.0.3/?text")
		if !strings.Contains(body, "interface "+ifc.Name()) || !strings.Contains(body, "xdp_unicast ") ||
			strings.Contains(body, "xdp_host_") || strings.Contains(body, "xsk_") {
			t.Errorf("status page, want StatusCounter's counters (the vif's own):\n%s", body)
		}
	})
	t.Run("stack pings the peer", func(t *testing.T) {
		for _, dst := range []netip.Addr{netip.MustParseAddr("198.18.0.2"), labPeer6.Addr()} {
			if _, err := h.Stack().Ping(testCtx(t), dst, []byte("from userspace")); err != nil {
				t.Errorf("ping %s: %v", dst, err)
			}
		}
	})
	// ConnsOpen is a gauge: the host closes its end once it has seen the
	// client's FIN, a moment after the client returned.
	got := h.Counters()
	for deadline := time.Now().Add(5 * time.Second); got.ConnsOpen != 0 && time.Now().Before(deadline); got = h.Counters() {
		time.Sleep(10 * time.Millisecond)
	}
	if want := (Counters{EchoRepliesV4: 3, EchoRepliesV6: 3, TCPAccepted: 3, EchoConns: 2, HTTPRequests: 1}); got != want {
		t.Errorf("host counters %+v, want %+v", got, want)
	}
	if n := tap.n.Load(); n != 0 {
		t.Errorf("the vif received %d frames of the host kernel's traffic", n)
	}
	st := ifc.Stats()
	if st.IPackets == 0 || st.OPackets == 0 || st.OErrors != 0 {
		t.Errorf("vif counters: %+v", st)
	}
	// The check above can fail: a promiscuous vif takes the host's traffic.
	if err := ifc.SetPromisc(true); err != nil {
		t.Fatal(err)
	}
	_, _ = lab.Run(netlab.Peer, "ping", "-n", "-c", "1", "-W", "1", "198.18.0.1")
	if err := ifc.SetPromisc(false); err != nil {
		t.Fatal(err)
	}
	if tap.n.Load() == 0 {
		t.Error("a promiscuous vif did not see the host's traffic: the tap misses it")
	}
	// Host and cloner close down to the goroutines there were before.
	if err := h.Close(); err != nil {
		t.Error(err)
	}
	if err := c.Close(); err != nil {
		t.Error(err)
	}
	if g := waitGoroutines(before); g > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before, %d after Close:\n%s", before, g, buf[:runtime.Stack(buf, true)])
	}
}

// With the peer's checksum offload left on, segments reach the vif with
// unfinished checksums: the stack drops them unless told to trust them
// (EndpointOptions.RXChecksumOffload), with GRO on (which verifies the
// segments it takes, and must not pass these) and off.
func TestIntegrationXDPChecksumOffload(t *testing.T) {
	labtest.RequireRoot(t)
	for k := range 4 {
		trust, noGRO := k&1 != 0, k&2 != 0
		lab := labtest.NewT(t, netlab.Options{})
		h, err := NewHost(xdpIfc(t, lab, ""), HostConfig{
			Addrs: []netip.Prefix{srv4}, EchoPort: 7,
			Stack: StackConfig{Endpoint: EndpointOptions{RXChecksumOffload: trust, NoGRO: noGRO}},
		})
		if err != nil {
			t.Fatal(err)
		}
		// Only the failing case is bounded short: its retransmissions would
		// go on for minutes.
		wait := 10 * time.Second
		if !trust {
			wait = time.Second
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		c, err := lab.DialContext(netlab.Peer)(ctx, "tcp", "198.18.0.3:7")
		cancel()
		bad := h.Stack().Netstack().Stats().TCP.ChecksumErrors.Value()
		// A peer NIC without TX checksum offload (virtio-net over QEMU's
		// hub: no VIRTIO_NET_F_CSUM) finishes every checksum itself, so
		// nothing arrives unfinished and no setting is needed.
		out, kerr := lab.Run(netlab.Peer, "ethtool", "-k", lab.Link[netlab.Peer])
		peerFinishes := kerr == nil && strings.Contains(string(out), "tx-checksumming: off")
		switch {
		case (trust || peerFinishes) && err != nil:
			t.Errorf("RXChecksumOffload %t (NoGRO %v), peer's TX checksum offload off %t: dial: %v", trust, noGRO, peerFinishes, err)
		case peerFinishes && bad != 0:
			t.Errorf("the peer's NIC finishes its checksums (NoGRO %v), yet %d checksum errors", noGRO, bad)
		case !trust && !peerFinishes && (err == nil || bad == 0):
			t.Errorf("without RXChecksumOffload (NoGRO %v): dial %v with %d checksum errors; want a failure on bad checksums", noGRO, err, bad)
		}
		if err == nil {
			echoCheck(t, c, 10000)
			c.Close()
		}
		if err := h.Close(); err != nil {
			t.Error(err)
		}
	}
}

// A host that comes back with another MAC (a vif's MAC is random, and here
// the unit differs too) is reachable at once: its announcements (gratuitous
// ARP, unsolicited neighbour advertisement) update the peer's neighbour cache,
// which would otherwise keep the old MAC for tens of seconds.
func TestIntegrationXDPRestartAnnounces(t *testing.T) {
	labtest.RequireRoot(t)
	lab := labtest.NewT(t, netlab.Options{})
	addIPv6(t, lab)
	var macs []string
	for unit := range 2 {
		c := newCloner(t)
		var ifc *virtif.Interface
		err := lab.Do(netlab.Host, func() (err error) {
			if ifc, err = c.CreateUnit(unit); err != nil {
				return err
			}
			return ifc.SetLinkStr("xdp:" + lab.Link[netlab.Host] + netlab.TestLinkOpts())
		})
		if err != nil {
			labtest.SkipWithoutZeroCopy(t, err)
			t.Fatal(err)
		}
		h, err := NewHost(ifc, HostConfig{Addrs: []netip.Prefix{srv4, srv6}})
		if err != nil {
			t.Fatal(err)
		}
		macs = append(macs, ifc.HardwareAddr().String())
		// One echo each, with a short wait: a stale neighbour entry would
		// need several seconds of probing before it recovers.
		for _, dst := range []string{"198.18.0.3", "fd00:198:18::3"} {
			if out, err := lab.Run(netlab.Peer, "ping", "-n", "-c", "1", "-W", "1", dst); err != nil {
				neigh, _ := lab.Run(netlab.Peer, "ip", "neigh")
				t.Errorf("run %d (MAC %s): ping %s: %v\n%s\nneighbours:\n%s", unit, ifc.HardwareAddr(), dst, err, out, neigh)
			}
		}
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		// Linux ignores an ARP update within a second (locktime) of the
		// last one.
		time.Sleep(1100 * time.Millisecond)
	}
	if macs[0] == macs[1] {
		t.Fatalf("both runs had MAC %s: the test shows nothing", macs[0])
	}
}
