//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
	"github.com/virtif-xdp/virtif-xdp/netstack"
	"github.com/virtif-xdp/virtif-xdp/virtif"
	"github.com/virtif-xdp/virtif-xdp/virtif/xdp"
)

// The demo's UDP ports: one per kind of frame, so every receiver can tell
// which check a frame belongs to.
const (
	portToVif   = 7001 // peer → vif0's MAC
	portToHost  = 7002 // peer → the host's MAC
	portToOther = 7003 // peer → an unrelated MAC
	portFromVif = 7004 // vif0 → peer
	nPorts      = 4
)

var (
	demoVifIP   = netip.MustParseAddr("198.18.0.3")
	demoOther   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	demoHostIP  = netip.MustParseAddr("198.18.0.1")
	demoPeerIP  = netip.MustParseAddr("198.18.0.2")
	demoNowhere = netip.MustParseAddr("198.18.0.254")
)

type demoFlags struct {
	vifFlags
	keep   bool
	ip     string
	frames int
}

func newDemoCmd() *cobra.Command {
	var f demoFlags
	cmd := &cobra.Command{
		Use:   "demo [--link xdp:IFNAME,...] [--keep]",
		Short: "Show a vif sharing a NIC with the host kernel, checked end to end (start here)",
		Long: `demo builds a two-namespace veth lab (unique name), brings up vif0 on the
host-side veth with the AF_XDP backend and puts a userspace TCP/IP stack
(gVisor's netstack) on it at 198.18.0.3 and fd00:198:18::3, with a TCP echo
service on port 7 and a status page on port 80. The host kernel keeps
198.18.0.1 and fd00:198:18::1 on the same veth. From the peer namespace it
checks:

  - ping (ICMP and ICMPv6) to the host's own addresses is answered by the
    host kernel, and none of those frames reaches vif0;
  - frames to the host's MAC reach the host kernel and not vif0;
  - frames to vif0's MAC reach vif0 and not the host kernel;
  - frames to an unrelated MAC go to the host kernel, not vif0;
  - frames vif0 sends reach the peer;
  - an ARP request for 198.18.0.3 reaches vif0 (not the host kernel), and
    vif0's stack answers it;
  - ping and ping6 to vif0's addresses, TCP echo and HTTP over IPv4 and
    IPv6 (the peer's kernel TCP) are answered by vif0's userspace stack;
  - once vif0 is destroyed no XDP program is left on the NIC.

Each answer's PATH (vif0 or host kernel) comes from what the userspace stack
and the host kernel counted meanwhile. The peer's transmit checksum offload
is turned off first: through a veth the kernel would leave TCP checksums
unfinished, which the userspace stack drops (a real NIC needs no such step;
see 'virtif-xdp run --trust-rx-checksum').

It prints each check (PASS/FAIL, the path, what was seen), the interface
counters, the XDP program's per-rule counters and the attach and bind modes,
and removes the lab (unless --keep). Exit status 0 only if every check
passed.

With --link it runs vif0 on that NIC instead (no peer to drive): it prints
the counters every second for --duration and a summary; with --ip the
userspace stack answers ARP and ping for that address (a bare address
answers anyone on the link; with /LEN only its subnet). 'virtif-xdp run'
is the full userspace host.`,
		Example: `  sudo virtif-xdp demo
  sudo virtif-xdp demo --link xdp:eth0 --ip 192.0.2.10 --duration 30s`,
		Args: cobraArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(false); err != nil {
				return err
			}
			if f.frames < 1 || f.frames > 100000 {
				return usagef("--frames %d: must be 1..100000", f.frames)
			}
			if f.link == "" {
				if f.netns != "" || f.metrics != "" || f.promisc || f.ip != "" {
					return usagef("--netns, --metrics, --promisc and --ip go with --link; the lab demo chooses its own")
				}
				return runLabDemo(cmd, &f)
			}
			if f.keep {
				return usagef("--keep keeps the lab; with --link there is none")
			}
			return runLinkDemo(cmd, &f)
		},
	}
	f.register(cmd.Flags(), 10*time.Second, "with --link: how long to run (0: until Ctrl-C)")
	cmd.Flags().BoolVar(&f.keep, "keep", false, "keep the lab afterwards (vif0 is still destroyed) to look around")
	cmd.Flags().StringVar(&f.ip, "ip", "", "with --link: an IPv4 address (or address/LEN) vif0 answers ARP and ping for")
	cmd.Flags().IntVar(&f.frames, "frames", 100, "frames sent for each frame check")
	return cmd
}

// demoTap watches vif0's frames for the demo's checks. It runs on the data
// path (every receiving goroutine and the sender), so it only counts.
type demoTap struct {
	byPort     [nPorts]atomic.Uint64 // the demo's UDP frames received, by port
	arpReq     atomic.Uint64         // ARP requests for demoVifIP received
	arpRep     atomic.Uint64         // ARP replies for demoVifIP sent
	hostFrames atomic.Uint64         // frames for the host kernel's addresses received
}

var (
	demoHostSNM = solicitedNode(demoHostIP6.Addr()) // where the host kernel's neighbour solicitations go
)

// solicitedNode is addr's solicited-node multicast address ff02::1:ffXX:XXXX.
func solicitedNode(addr netip.Addr) [16]byte {
	a := addr.As16()
	s := [16]byte{0: 0xff, 1: 0x02, 11: 0x01, 12: 0xff}
	copy(s[13:], a[13:])
	return s
}

func (t *demoTap) Tap(f []byte, dir virtif.Direction) {
	if len(f) < 14 {
		return
	}
	vif4, host4 := demoVifIP.As4(), demoHostIP.As4()
	etype := binary.BigEndian.Uint16(f[12:14])
	if dir == virtif.Out {
		if etype == 0x0806 && len(f) >= 42 && binary.BigEndian.Uint16(f[20:22]) == 2 && string(f[28:32]) == string(vif4[:]) {
			t.arpRep.Add(1)
		}
		return
	}
	if p := demoPort(f); p >= 0 {
		t.byPort[p].Add(1)
		return
	}
	switch etype {
	case 0x0806:
		if len(f) < 42 {
			return
		}
		if binary.BigEndian.Uint16(f[20:22]) == 1 && string(f[38:42]) == string(vif4[:]) {
			t.arpReq.Add(1)
		}
		if string(f[38:42]) == string(host4[:]) {
			t.hostFrames.Add(1)
		}
	case 0x0800:
		if len(f) >= 34 && string(f[30:34]) == string(host4[:]) {
			t.hostFrames.Add(1)
		}
	case 0x86dd:
		host6 := demoHostIP6.Addr().As16()
		if len(f) >= 54 && (string(f[38:54]) == string(host6[:]) || string(f[38:54]) == string(demoHostSNM[:])) {
			t.hostFrames.Add(1)
		}
	}
}

// demoPort returns which demo port (0..nPorts-1) a UDP frame is for, or -1.
func demoPort(frame []byte) int {
	if len(frame) < 14+20+8 || binary.BigEndian.Uint16(frame[12:14]) != 0x0800 || frame[23] != unix.IPPROTO_UDP {
		return -1
	}
	ihl := int(frame[14]&0x0f) * 4
	if len(frame) < 14+ihl+8 {
		return -1
	}
	p := int(binary.BigEndian.Uint16(frame[14+ihl+2:])) - portToVif
	if p < 0 || p >= nPorts {
		return -1
	}
	return p
}

// sniffer counts the demo's frames arriving at one side of the lab on an
// AF_PACKET socket, as the kernel's stack there sees them.
type sniffer struct {
	fd      int
	byPort  [nPorts]atomic.Uint64
	arpFor  atomic.Uint64 // ARP requests for the vif's address
	stop    atomic.Bool
	wg      sync.WaitGroup
	closeMu sync.Once
}

func openSniffer(ns string, ifindex int) (*sniffer, error) {
	s := &sniffer{fd: -1}
	err := netlab.DoIn(ns, func() error {
		proto := int(htons(unix.ETH_P_ALL))
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return os.NewSyscallError("socket", err)
		}
		s.fd = fd
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
			return os.NewSyscallError("bind", err)
		}
		tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return os.NewSyscallError("setsockopt", err)
		}
		return nil
	})
	if err != nil {
		if s.fd >= 0 {
			unix.Close(s.fd)
		}
		return nil, fmt.Errorf("packet socket in %s: %w", ns, err)
	}
	s.wg.Add(1)
	go s.loop()
	return s, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (s *sniffer) loop() {
	defer s.wg.Done()
	buf := make([]byte, 4096)
	ip4 := demoVifIP.As4()
	for !s.stop.Load() {
		n, from, err := unix.Recvfrom(s.fd, buf, 0)
		if err != nil {
			continue
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		f := buf[:n]
		if p := demoPort(f); p >= 0 {
			s.byPort[p].Add(1)
		} else if n >= 42 && binary.BigEndian.Uint16(f[12:14]) == 0x0806 && string(f[38:42]) == string(ip4[:]) {
			s.arpFor.Add(1)
		}
	}
}

func (s *sniffer) Close() error {
	if s == nil {
		return nil
	}
	var err error
	s.closeMu.Do(func() {
		s.stop.Store(true)
		s.wg.Wait()
		err = unix.Close(s.fd)
	})
	return err
}

// check is one row of the demo's table.
type check struct {
	name   string
	pass   bool
	path   string // who answered or received: pathVif, pathKernel, ...
	detail string
}

// The paths a frame or an answer can take, as the table shows them.
const (
	pathVif     = "vif0"        // XDP program -> AF_XDP socket -> vif0 (and its userspace stack)
	pathKernel  = "host kernel" // XDP_PASS -> the host kernel's own stack
	pathBoth    = "both"
	pathNeither = "neither"
	pathVifOut  = "vif0 -> peer"
)

// pathOf names the path from how much each side counted.
func pathOf(vif, kernel uint64) string {
	switch {
	case vif > 0 && kernel == 0:
		return pathVif
	case kernel > 0 && vif == 0:
		return pathKernel
	case vif > 0:
		return pathBoth
	}
	return pathNeither
}

// demoLab is the state of one lab demo run.
type demoLab struct {
	lab        *netlab.Lab
	v          *vif
	h          *netstack.Host
	tap        *demoTap
	host, peer *sniffer
	gen        *trafficgen.Packet
	frames     int
	checks     []check
}

func (d *demoLab) add(name string, pass bool, path, format string, args ...any) {
	d.checks = append(d.checks, check{name, pass, path, fmt.Sprintf(format, args...)})
	res := "PASS"
	if !pass {
		res = "FAIL"
	}
	slog.Debug("check", "check", name, "result", res, "path", path, "seen", d.checks[len(d.checks)-1].detail)
}

// waitUntil polls cond until it holds, ctx ends or a few seconds pass: the
// wait bounds a failing check, it measures nothing.
func waitUntil(ctx context.Context, cond func() bool) bool {
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if cond() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cond()
}

// settle gives frames still on the wire time to land, before a check that
// something did not arrive.
func settle() { time.Sleep(150 * time.Millisecond) }

// sendFrom sends n copies of frame from the peer in small bursts: a
// receiving veth with XDP holds 256 frames at a time, and the demo checks
// exact counts.
func (d *demoLab) sendFrom(frame []byte, n int) error {
	for sent := 0; sent < n; {
		k := min(32, n-sent)
		got, err := d.gen.Send(frame, k)
		if err != nil {
			return fmt.Errorf("send from the peer: %w", err)
		}
		sent += got
		time.Sleep(time.Millisecond)
	}
	return nil
}

// The userspace host's addresses and services in the lab demo.
var (
	demoVifPrefix  = netip.PrefixFrom(demoVifIP, 24)
	demoVifPrefix6 = netip.MustParsePrefix("fd00:198:18::3/64")
)

const demoEchoPort = 7

func runLabDemo(cmd *cobra.Command, f *demoFlags) (err error) {
	ctx := cmd.Context()
	w := cmd.OutOrStdout()
	lab, err := netlab.New(netlab.Options{})
	if err != nil {
		return withRootHint(fmt.Errorf("building the lab: %w", err))
	}
	slog.Info("lab up", "name", lab.Name, "host", lab.NS[netlab.Host]+"/"+lab.Link[netlab.Host],
		"peer", lab.NS[netlab.Peer]+"/"+lab.Link[netlab.Peer])
	defer func() {
		if f.keep {
			fmt.Fprintf(w, "\nlab %s kept: 'ip netns exec %s bash' enters the host side, 'virtif-xdp lab down --name %s' removes it\n",
				lab.Name, lab.NS[netlab.Host], lab.Name)
			return
		}
		if cerr := lab.Close(); cerr != nil {
			slog.Error("removing the lab", "name", lab.Name, "err", cerr)
			if err == nil {
				err = cerr
			}
		} else {
			slog.Info("lab removed", "name", lab.Name)
		}
	}()
	if err := addLabIPv6(lab); err != nil {
		return err
	}
	// The peer's kernel finishes its checksums before sending: through a
	// veth they would reach XDP unfinished and the userspace stack would
	// drop the TCP segments (a real NIC needs none of this).
	if err := lab.SetTxChecksum(netlab.Peer, false); err != nil {
		return err
	}

	d := &demoLab{lab: lab, tap: &demoTap{}, frames: f.frames}
	d.v, err = openVif(vifSetup{
		link:  "xdp:" + lab.Link[netlab.Host],
		netns: lab.NS[netlab.Host],
		mac:   f.hw,
		taps:  []virtif.Tap{d.tap},
	})
	if err != nil {
		return fmt.Errorf("bringing up vif0: %w", err)
	}
	defer d.v.Close()
	d.h, err = netstack.NewHost(d.v.ifc, netstack.HostConfig{
		Addrs:    []netip.Prefix{demoVifPrefix, demoVifPrefix6},
		EchoPort: demoEchoPort,
		HTTPAddr: ":80",
		Probe:    netstack.ProbeConfig{Interval: probeInterval},
	})
	if err != nil {
		return fmt.Errorf("starting the userspace host on vif0: %w", err)
	}
	defer d.h.Close()
	if d.host, err = openSniffer(lab.NS[netlab.Host], lab.Index[netlab.Host]); err != nil {
		return err
	}
	defer d.host.Close()
	if d.peer, err = openSniffer(lab.NS[netlab.Peer], lab.Index[netlab.Peer]); err != nil {
		return err
	}
	defer d.peer.Close()
	if d.gen, err = trafficgen.PacketIn(lab, netlab.Peer); err != nil {
		return err
	}
	defer d.gen.Close()

	if err := d.run(ctx); err != nil {
		return err
	}
	st := d.v.ifc.Stats()
	answered := d.h.Counters()
	info := d.v.be.Info()
	mac := d.v.ifc.HardwareAddr()

	// Tear vif0 down and check that the NIC is the host's alone again.
	d.host.Close()
	d.peer.Close()
	herr := d.h.Close()
	if cerr := errors.Join(herr, d.v.Close()); cerr != nil {
		d.add("vif0 destroyed cleanly", false, pathNeither, "%v", cerr)
	} else {
		attached, lerr := xdpAttached(lab)
		switch {
		case lerr != nil:
			d.add("vif0 destroyed: no XDP program left on "+lab.Link[netlab.Host], false, pathNeither, "%v", lerr)
		default:
			ok, detail := d.ping(ctx, demoHostIP, 1)
			d.add("vif0 destroyed: no XDP program left on "+lab.Link[netlab.Host]+", host still answers",
				!attached && ok, pathKernel, "XDP attached: %v; host: %s", attached, detail)
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", context.Cause(ctx))
	}

	fmt.Fprintf(w, "virtif-xdp demo: lab %s, vif0 (mac %s, %s and %s, a userspace TCP/IP stack) on %s in %s: attach %s, bind %s, queues %s\n",
		lab.Name, mac, demoVifIP, demoVifPrefix6.Addr(), lab.Link[netlab.Host], lab.NS[netlab.Host], info.Attach, info.Mode, intsString(info.Queues))
	fmt.Fprintf(w, "the host kernel keeps %s and %s on the same veth; the peer namespace (%s, %s) drives every check\n",
		demoHostIP, demoHostIP6.Addr(), demoPeerIP, demoPeerIP6.Addr())
	fmt.Fprintf(w, "PATH: %s = XDP program -> AF_XDP socket -> vif0 and its userspace stack; %s = XDP_PASS -> the kernel's own stack\n\n",
		pathVif, pathKernel)
	failed := printChecks(w, d.checks)
	fmt.Fprintln(w)
	printCounters(w, "vif0", st)
	fmt.Fprintf(w, "\nUSERSPACE STACK ON vif0 answered: ping %d, ping6 %d, tcp connections %d (echo %d), http requests %d\n",
		answered.EchoRepliesV4, answered.EchoRepliesV6, answered.TCPAccepted, answered.EchoConns, answered.HTTPRequests)
	if failed > 0 {
		return fmt.Errorf("%d of %d checks failed (rerun with -v for detail)", failed, len(d.checks))
	}
	fmt.Fprintf(w, "\nall %d checks passed\n", len(d.checks))
	return nil
}

// run performs the checks in an order where each one's frames are known.
func (d *demoLab) run(ctx context.Context) error {
	lab, n := d.lab, uint64(d.frames)
	hostMAC, peerMAC, vifMAC := lab.MAC[netlab.Host], lab.MAC[netlab.Peer], d.v.ifc.HardwareAddr()
	udp := func(dst net.HardwareAddr, port uint16) []byte {
		return trafficgen.UDPFrame(dst, peerMAC, demoPeerIP, demoVifIP, port, port, 100)
	}
	echoReplies4 := func(c netstack.Counters, k kernelCounters) (uint64, uint64) { return c.EchoRepliesV4, k.echoReplies4 }
	echoReplies6 := func(c netstack.Counters, k kernelCounters) (uint64, uint64) { return c.EchoRepliesV6, k.echoReplies6 }
	echoConns := func(c netstack.Counters, k kernelCounters) (uint64, uint64) { return c.EchoConns, k.tcpOutSegs }
	httpRequests := func(c netstack.Counters, k kernelCounters) (uint64, uint64) { return c.HTTPRequests, k.tcpOutSegs }

	// The host kernel's own addresses first, while nothing else is in flight.
	d.answered(ctx, "ping 198.18.0.1 (the host's address) from the peer: the host kernel answers", pathKernel,
		func() (bool, string) { return d.ping(ctx, demoHostIP, 3) }, echoReplies4)
	d.answered(ctx, "ping fd00:198:18::1 (the host's IPv6 address): the host kernel answers", pathKernel,
		func() (bool, string) { return d.ping(ctx, demoHostIP6.Addr(), 3) }, echoReplies6)

	frameCheck := func(name string, dst net.HardwareAddr, port int, toVif bool) error {
		p := port - portToVif
		if err := d.sendFrom(udp(dst, uint16(port)), d.frames); err != nil {
			return err
		}
		want, other := &d.host.byPort[p], &d.tap.byPort[p]
		if toVif {
			want, other = other, want
		}
		waitUntil(ctx, func() bool { return want.Load() >= n })
		settle()
		got, leak := want.Load(), other.Load()
		wantWho, otherWho := "host kernel", "vif0"
		if toVif {
			wantWho, otherWho = otherWho, wantWho
		}
		path := pathOf(d.tap.byPort[p].Load(), d.host.byPort[p].Load())
		d.add(name, got == n && leak == 0, path, "%d/%d at %s, %d at %s", got, n, wantWho, leak, otherWho)
		return nil
	}
	if err := frameCheck("frames to the host's MAC reach the host kernel, not vif0", hostMAC, portToHost, false); err != nil {
		return err
	}
	if err := frameCheck("frames to vif0's MAC reach vif0, not the host kernel", vifMAC, portToVif, true); err != nil {
		return err
	}
	if d.v.be.Info().AddrFilter == xdp.AddrFilterList {
		// A NIC that filters by address (virtio-net, a physical NIC) drops
		// frames for a MAC nobody asked for before XDP runs: none may
		// reach vif0, and the host kernel sees none either.
		p := portToOther - portToVif
		if err := d.sendFrom(udp(demoOther, portToOther), d.frames); err != nil {
			return err
		}
		settle()
		got, leak := d.host.byPort[p].Load(), d.tap.byPort[p].Load()
		d.add("frames to an unrelated MAC stop at the NIC's address filter, not at vif0", leak == 0, pathOf(leak, got),
			"%d/%d at host kernel, %d at vif0 (the NIC filters by address)", got, n, leak)
	} else if err := frameCheck("frames to an unrelated MAC go to the host kernel, not vif0", demoOther, portToOther, false); err != nil {
		return err
	}

	// vif0 → peer, in batches as an upper layer would send.
	batch := make([][][]byte, 0, 32)
	// To an address the peer does not own, so its kernel drops them quietly
	// instead of answering "port unreachable".
	fr := trafficgen.UDPFrame(peerMAC, vifMAC, demoVifIP, demoNowhere, portFromVif, portFromVif, 100)
	var sendErr error
	for sent := 0; sent < d.frames && sendErr == nil; {
		batch = batch[:0]
		for k := 0; k < 32 && sent+len(batch) < d.frames; k++ {
			batch = append(batch, [][]byte{fr})
		}
		var k int
		k, sendErr = d.v.ifc.OutputBatch(batch)
		sent += k
		time.Sleep(time.Millisecond)
	}
	p := portFromVif - portToVif
	waitUntil(ctx, func() bool { return d.peer.byPort[p].Load() >= n })
	settle()
	got := d.peer.byPort[p].Load()
	if sendErr != nil {
		d.add("frames vif0 sends reach the peer", false, pathVifOut, "%d/%d at the peer; send: %v", got, n, sendErr)
	} else {
		d.add("frames vif0 sends reach the peer", got == n, pathVifOut, "%d/%d at the peer", got, n)
	}

	// An ARP request for vif0's address: steered to vif0 (the ARP rule),
	// not seen by the host kernel, answered by vif0's stack.
	req0, rep0, rule0 := d.tap.arpReq.Load(), d.tap.arpRep.Load(), backendStat(d.v.ifc.Stats(), "xdp_arp")
	if err := d.sendFrom(arpRequest(peerMAC, demoPeerIP, demoVifIP), 1); err != nil {
		return err
	}
	waitUntil(ctx, func() bool { return d.tap.arpRep.Load() > rep0 })
	settle()
	req, rep := d.tap.arpReq.Load()-req0, d.tap.arpRep.Load()-rep0
	rule := backendStat(d.v.ifc.Stats(), "xdp_arp") - rule0
	d.add("ARP request for 198.18.0.3 reaches vif0, which answers; not the host kernel",
		req >= 1 && rep == req && rule >= 1 && d.host.arpFor.Load() == 0, pathOf(rep, d.host.arpFor.Load()),
		"%d at vif0 (xdp_arp rule +%d), %d answered, %d at host kernel", req, rule, rep, d.host.arpFor.Load())

	// The userspace stack's addresses and services.
	d.answered(ctx, "ping 198.18.0.3 (vif0's address) from the peer: vif0's userspace stack answers", pathVif,
		func() (bool, string) { return d.ping(ctx, demoVifIP, 3) }, echoReplies4)
	d.answered(ctx, "ping fd00:198:18::3 (vif0's IPv6 address): vif0's userspace stack answers", pathVif,
		func() (bool, string) { return d.ping(ctx, demoVifPrefix6.Addr(), 3) }, echoReplies6)
	for _, a := range []netip.Addr{demoVifIP, demoVifPrefix6.Addr()} {
		ap := netip.AddrPortFrom(a, demoEchoPort)
		d.answered(ctx, fmt.Sprintf("TCP echo at %s: the peer's kernel TCP talks to vif0's userspace TCP", ap), pathVif,
			func() (bool, string) { return d.tcpEcho(ctx, ap, 100000) }, echoConns)
	}
	for _, a := range []netip.Addr{demoVifIP, demoVifPrefix6.Addr()} {
		url := "http://" + net.JoinHostPort(a.String(), "80") + "/?text"
		d.answered(ctx, "HTTP GET "+url+": vif0's status page", pathVif,
			func() (bool, string) { return d.httpStatus(ctx, url) }, httpRequests)
	}

	// Through all of it, the host kernel's traffic stayed off vif0.
	hf := d.tap.hostFrames.Load()
	d.add(fmt.Sprintf("no frame for the host kernel's %s or %s reached vif0", demoHostIP, demoHostIP6.Addr()), hf == 0,
		pathKernel, "%d such frames at vif0", hf)
	return ctx.Err()
}

// answered runs exchange (the peer asking something) and names who answered
// by what the userspace stack and the host kernel counted meanwhile; the
// check passes if exchange worked and the answer took the path wanted.
func (d *demoLab) answered(ctx context.Context, name, want string, exchange func() (bool, string),
	count func(netstack.Counters, kernelCounters) (vif, kernel uint64)) {
	if ctx.Err() != nil {
		return
	}
	k0, err := readKernelCounters(d.lab, netlab.Host)
	if err != nil {
		d.add(name, false, pathNeither, "reading the host kernel's counters: %v", err)
		return
	}
	v0, kk0 := count(d.h.Counters(), k0)
	ok, detail := exchange()
	k1, err := readKernelCounters(d.lab, netlab.Host)
	if err != nil {
		d.add(name, false, pathNeither, "reading the host kernel's counters: %v", err)
		return
	}
	v1, kk1 := count(d.h.Counters(), k1)
	path := pathOf(v1-v0, kk1-kk0)
	d.add(name, ok && path == want, path, "%s; counted by vif0's stack %d, by the host kernel %d", detail, v1-v0, kk1-kk0)
}

// kernelCounters are the counters of a kernel that tell what it answered.
type kernelCounters struct {
	echoReplies4 uint64 // Icmp OutEchoReps
	echoReplies6 uint64 // Icmp6OutEchoReplies
	tcpOutSegs   uint64 // Tcp OutSegs (IPv4 and IPv6)
}

// readKernelCounters reads the SNMP counters of the kernel on one side of
// the lab, as its namespace sees them (/proc/thread-self/net, not /proc/net:
// that is the namespace of the process's main thread).
func readKernelCounters(lab *netlab.Lab, side int) (kernelCounters, error) {
	var k kernelCounters
	err := lab.Do(side, func() error {
		snmp, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		snmp6, err := os.ReadFile("/proc/thread-self/net/snmp6")
		if err != nil {
			return err
		}
		var ok [3]bool
		// snmp: pairs of lines "Icmp: Name1 Name2 ..." and "Icmp: 1 2 ...".
		lines := strings.Split(string(snmp), "\n")
		for i := 0; i+1 < len(lines); i += 2 {
			names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
			if len(names) != len(values) || len(names) == 0 {
				continue
			}
			for j := 1; j < len(names); j++ {
				key := names[0] + names[j]
				v, _ := strconv.ParseUint(values[j], 10, 64)
				switch key {
				case "Icmp:OutEchoReps":
					k.echoReplies4, ok[0] = v, true
				case "Tcp:OutSegs":
					k.tcpOutSegs, ok[2] = v, true
				}
			}
		}
		// snmp6: "Name value" lines.
		for _, line := range strings.Split(string(snmp6), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "Icmp6OutEchoReplies" {
				k.echoReplies6, _ = strconv.ParseUint(f[1], 10, 64)
				ok[1] = true
			}
		}
		if ok != [3]bool{true, true, true} {
			return fmt.Errorf("/proc/thread-self/net/snmp{,6} lack OutEchoReps, Icmp6OutEchoReplies or OutSegs: %w", os.ErrNotExist)
		}
		return nil
	})
	return k, err
}

// ping sends count ICMP or ICMPv6 echo requests from the peer's kernel to
// dst and reports how many were answered (each waits up to a second).
func (d *demoLab) ping(ctx context.Context, dst netip.Addr, count int) (bool, string) {
	network, src, proto := "ip4:icmp", demoPeerIP, 1
	var reqType, repType icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if dst.Is6() {
		network, src, proto = "ip6:ipv6-icmp", demoPeerIP6.Addr(), 58
		reqType, repType = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	var c *icmp.PacketConn
	err := d.lab.Do(netlab.Peer, func() (err error) {
		c, err = icmp.ListenPacket(network, src.String())
		return err
	})
	if err != nil {
		return false, fmt.Sprintf("opening an ICMP socket: %v", err)
	}
	defer c.Close()
	id := os.Getpid() & 0xffff
	replies := 0
	buf := make([]byte, 1500)
	for seq := 1; seq <= count && ctx.Err() == nil; seq++ {
		// The kernel fills in an ICMPv6 checksum itself.
		msg := icmp.Message{Type: reqType, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("virtif-xdp demo")}}
		b, _ := msg.Marshal(nil)
		if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			return false, fmt.Sprintf("%d/%d replies; send: %v", replies, count, err)
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				break // timeout: this one is lost
			}
			ip, _ := from.(*net.IPAddr)
			m, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil || ip == nil || !ip.IP.Equal(dst.AsSlice()) || m.Type != repType {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && e.Seq == seq {
				replies++
				break
			}
		}
	}
	return replies == count, fmt.Sprintf("%d/%d echo replies from %s", replies, count, dst)
}

// echoRoundTrip sends n random bytes through an echo connection and checks
// that they come back unchanged.
func echoRoundTrip(c net.Conn, n int) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	want := make([]byte, n)
	rand.Read(want)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		werr <- err
	}()
	got := make([]byte, n)
	_, rerr := io.ReadFull(c, got)
	if err := errors.Join(rerr, <-werr); err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%d bytes came back different", n)
	}
	return nil
}

// tcpEcho connects from the peer to the echo service at ap and sends n bytes
// through it.
func (d *demoLab) tcpEcho(ctx context.Context, ap netip.AddrPort, n int) (bool, string) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := d.lab.DialContext(netlab.Peer)(dctx, "tcp", ap.String())
	if err != nil {
		return false, fmt.Sprintf("connect: %v", err)
	}
	defer c.Close()
	if err := echoRoundTrip(c, n); err != nil {
		return false, fmt.Sprintf("echo: %v", err)
	}
	return true, fmt.Sprintf("%d bytes echoed", n)
}

// peerHTTPGet fetches url from the peer namespace and returns the body of a
// 200 answer.
func peerHTTPGet(ctx context.Context, lab *netlab.Lab, url string) (string, error) {
	client := &http.Client{
		Transport: &http.Transport{DialContext: lab.DialContext(netlab.Peer), DisableKeepAlives: true},
		Timeout:   10 * time.Second,
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("%s", resp.Status)
	}
	return string(b), nil
}

// httpStatus fetches vif0's status page from the peer.
func (d *demoLab) httpStatus(ctx context.Context, url string) (bool, string) {
	body, err := peerHTTPGet(ctx, d.lab, url)
	if err != nil {
		return false, fmt.Sprintf("GET: %v", err)
	}
	if !strings.Contains(body, "interface vif0") || !strings.Contains(body, "xdp_unicast") {
		return false, fmt.Sprintf("the page lacks vif0's counters: %.60q", body)
	}
	return true, fmt.Sprintf("200, %d bytes with vif0's counters", len(body))
}

// arpRequest builds a broadcast ARP request from (mac, ip) for target.
func arpRequest(mac net.HardwareAddr, ip, target netip.Addr) []byte {
	f := make([]byte, 60)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], mac)
	copy(f[12:22], []byte{0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1})
	copy(f[22:28], mac)
	s, t := ip.As4(), target.As4()
	copy(f[28:32], s[:])
	copy(f[38:42], t[:])
	return f
}

// xdpAttached reports whether an XDP program is on the lab's host-side veth.
func xdpAttached(lab *netlab.Lab) (bool, error) {
	var attached bool
	err := lab.Do(netlab.Host, func() error {
		l, err := netlink.LinkByIndex(lab.Index[netlab.Host])
		if err != nil {
			return err
		}
		x := l.Attrs().Xdp
		attached = x != nil && (x.Attached || x.ProgId != 0)
		return nil
	})
	return attached, err
}

func backendStat(st virtif.Stats, name string) uint64 {
	for _, s := range st.Backend {
		if s.Name == name {
			return s.Value
		}
	}
	return 0
}

// printChecks writes the checks table and returns how many failed.
func printChecks(w io.Writer, checks []check) int {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tRESULT\tPATH\tSEEN")
	failed := 0
	for _, c := range checks {
		res := "PASS"
		if !c.pass {
			res = "FAIL"
			failed++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.name, res, c.path, c.detail)
	}
	tw.Flush()
	return failed
}

// printCounters writes the interface counters, the XDP program's per-rule
// counters, the kernel's socket statistics and the backend's own.
func printCounters(w io.Writer, name string, st virtif.Stats) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "INTERFACE %s\tPACKETS\tBYTES\tERRORS\tDROPS\tMULTICAST\n", name)
	fmt.Fprintf(tw, "  received\t%d\t%d\t%d\t%d (filtered %d, no handler %d)\t%d\n",
		st.IPackets, st.IBytes, st.IErrors, st.IDrops, st.IFiltered, st.INoHandler, st.IMcasts)
	fmt.Fprintf(tw, "  sent\t%d\t%d\t%d\t%d\t%d\n", st.OPackets, st.OBytes, st.OErrors, st.ODrops, st.OMcasts)
	tw.Flush()

	groups := []struct{ title, prefix string }{
		{"XDP PROGRAM: frames steered to " + name + ", per rule", "xdp_"},
		{"XDP PROGRAM: frames left to the host kernel (whole NIC)", "xdp_host_"},
		{"KERNEL XDP SOCKET STATISTICS (whole NIC)", "xsk_"},
		{"AF_XDP BACKEND", ""},
	}
	for _, g := range groups {
		var rows []virtif.Stat
		for _, s := range st.Backend {
			match := strings.HasPrefix(s.Name, g.prefix)
			if g.prefix == "xdp_" {
				match = match && !strings.HasPrefix(s.Name, "xdp_host_")
			}
			if g.prefix == "" {
				match = !strings.HasPrefix(s.Name, "xdp_") && !strings.HasPrefix(s.Name, "xsk_")
			}
			if match {
				rows = append(rows, s)
			}
		}
		if len(rows) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s\n", g.title)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, s := range rows {
			fmt.Fprintf(tw, "  %s\t%d\n", strings.TrimPrefix(strings.TrimPrefix(s.Name, g.prefix), "xsk_"), s.Value)
		}
		tw.Flush()
	}
}

// runLinkDemo runs vif0 on a NIC the user named: there is no peer to drive,
// so it shows the counters as traffic comes.
func runLinkDemo(cmd *cobra.Command, f *demoFlags) error {
	w := cmd.OutOrStdout()
	var addr netip.Prefix
	onLink := false
	if f.ip != "" {
		p, err := netip.ParsePrefix(f.ip)
		if err != nil {
			// A bare address: a /32 whose every neighbour is on the link, so
			// it answers whoever asks, as a plain ARP and ping responder.
			a, aerr := netip.ParseAddr(f.ip)
			if aerr != nil {
				return usagef("--ip %q: not an IPv4 address (198.18.0.3 or 198.18.0.3/24)", f.ip)
			}
			p, onLink = netip.PrefixFrom(a, 32), true
		}
		if !p.Addr().Is4() {
			return usagef("--ip %q: not an IPv4 address (for IPv6 use 'virtif-xdp run')", f.ip)
		}
		addr = p
	}
	v, err := openVif(vifSetup{link: f.link, netns: f.netns, mac: f.hw, promisc: f.promisc})
	if err != nil {
		return err
	}
	defer v.Close()
	var h *netstack.Host
	if addr.IsValid() {
		if h, err = netstack.NewHost(v.ifc, netstack.HostConfig{Addrs: []netip.Prefix{addr},
			Probe: netstack.ProbeConfig{Interval: probeInterval}}); err != nil {
			return fmt.Errorf("starting the userspace stack on vif0: %w", err)
		}
		defer h.Close()
		if onLink {
			h.Stack().Netstack().AddRoute(tcpip.Route{Destination: header.IPv4EmptySubnet, NIC: netstack.NICID})
		}
	}
	stopMetrics, err := startMetrics(f.metrics, "demo", v)
	if err != nil {
		return fmt.Errorf("--metrics: %w", err)
	}
	defer stopMetrics()
	info := v.be.Info()
	slog.Info("running", "mode", "demo", "vif", v.ifc.Name(), "mac", v.ifc.HardwareAddr().String(), "link", f.link,
		"attach", info.Attach, "bind", info.Mode, "queues", info.Queues, "duration", f.duration)
	fmt.Fprintf(w, "vif0 (mac %s%s) on %s: attach %s, bind %s, queues %s; Ctrl-C stops\n",
		v.ifc.HardwareAddr(), map[bool]string{true: ", answering ARP and ping for " + f.ip}[f.ip != ""],
		f.link, info.Attach, info.Mode, intsString(info.Queues))
	_, err = runFor(cmd.Context(), f.duration, v, nil, func(el time.Duration) {
		st := v.ifc.Stats()
		fmt.Fprintf(w, "%6.1fs  rx %d (%d B)  tx %d  drops in %d out %d  rules: unicast %d multicast %d arp %d promisc %d  host %d\n",
			el.Seconds(), st.IPackets, st.IBytes, st.OPackets, st.IDrops, st.ODrops+st.OErrors,
			backendStat(st, "xdp_unicast"), backendStat(st, "xdp_multicast"), backendStat(st, "xdp_arp"),
			backendStat(st, "xdp_promisc"), backendStat(st, "xdp_host_pass"))
	})
	fmt.Fprintln(w)
	printCounters(w, v.ifc.Name(), v.ifc.Stats())
	if h != nil {
		ss := h.Stack().Netstack().Stats()
		fmt.Fprintf(w, "\nanswered %d/%d ARP requests and %d/%d pings for %s\n",
			ss.ARP.OutgoingRepliesSent.Value(), ss.ARP.RequestsReceived.Value(),
			ss.ICMP.V4.PacketsSent.EchoReply.Value(), ss.ICMP.V4.PacketsReceived.EchoRequest.Value(), addr.Addr())
	}
	return err
}

// The lab's IPv6 addresses: the host kernel's and the peer's, beside
// demoVifIP6 of the userspace stack. Their low 24 bits differ, so their
// solicited-node groups do too (the XDP program steers vif0's to vif0).
var (
	demoHostIP6 = netip.MustParsePrefix("fd00:198:18::1/64")
	demoPeerIP6 = netip.MustParsePrefix("fd00:198:18::2/64")
)

// addLabIPv6 gives the lab's veth ends their IPv6 addresses, without
// duplicate address detection so they are usable at once.
func addLabIPv6(lab *netlab.Lab) error {
	for side, p := range [2]netip.Prefix{demoHostIP6, demoPeerIP6} {
		err := lab.Do(side, func() error {
			l, err := netlink.LinkByIndex(lab.Index[side])
			if err != nil {
				return err
			}
			return netlink.AddrAdd(l, &netlink.Addr{
				IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 128)},
				Flags: unix.IFA_F_NODAD,
			})
		})
		if err != nil {
			return fmt.Errorf("IPv6 address %s on %s: %w", p, lab.Link[side], err)
		}
	}
	return nil
}
