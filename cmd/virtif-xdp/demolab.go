//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
	"github.com/virtif-xdp/virtif-xdp/netstack"
	"github.com/virtif-xdp/virtif-xdp/virtif"
	"github.com/virtif-xdp/virtif-xdp/virtif/xdp"
)

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
	host, peer *sideCounts // frames the kernel stacks saw on each side
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
// exact counts. With arrived (the count of the receiver the frames are
// for), each burst waits, a second at most, until the ones before it have
// arrived: a slow receiver (a virtio-net NIC in an emulated guest) drops
// what its ring cannot hold, and the checks are about where frames go,
// not about how fast.
func (d *demoLab) sendFrom(frame []byte, n int, arrived *atomic.Uint64) error {
	var base uint64
	if arrived != nil {
		base = arrived.Load()
	}
	for sent := 0; sent < n; {
		k := min(32, n-sent)
		got, err := d.gen.Send(frame, k)
		if err != nil {
			return fmt.Errorf("send from the peer: %w", err)
		}
		sent += got
		if arrived == nil {
			time.Sleep(time.Millisecond)
			continue
		}
		for deadline := time.Now().Add(time.Second); arrived.Load()-base < uint64(sent) && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
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
		// The page run serves: the vif's own counters.
		StatusCounter: func() virtif.Stats { return vifStatus(d.v) },
	})
	if err != nil {
		return fmt.Errorf("starting the userspace host on vif0: %w", err)
	}
	defer d.h.Close()
	d.host, d.peer = &sideCounts{}, &sideCounts{}
	var sniff [2]*trafficgen.Sniffer
	for side, c := range [2]*sideCounts{d.host, d.peer} {
		if sniff[side], err = trafficgen.SniffIn(lab, side, c.frame); err != nil {
			return fmt.Errorf("packet socket in %s: %w", lab.NS[side], err)
		}
		defer sniff[side].Close()
	}
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
	sniff[netlab.Host].Close()
	sniff[netlab.Peer].Close()
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
		want, other := &d.host.byPort[p], &d.tap.byPort[p]
		if toVif {
			want, other = other, want
		}
		if err := d.sendFrom(udp(dst, uint16(port)), d.frames, want); err != nil {
			return err
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
		if err := d.sendFrom(udp(demoOther, portToOther), d.frames, nil); err != nil {
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
		// As sendFrom: each batch waits, a second at most, for the
		// peer to have the ones before it.
		for deadline := time.Now().Add(time.Second); d.peer.byPort[portFromVif-portToVif].Load() < uint64(sent) && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
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
	if err := d.sendFrom(trafficgen.ARPRequest(peerMAC, demoPeerIP, demoVifIP), 1, nil); err != nil {
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

// readKernelCounters reads the counters of the kernel on one side of the
// lab that tell what it answered.
func readKernelCounters(lab *netlab.Lab, side int) (kernelCounters, error) {
	c, err := lab.SNMP(side)
	if err != nil {
		return kernelCounters{}, err
	}
	for _, name := range []string{"Icmp:OutEchoReps", "Icmp6OutEchoReplies", "Tcp:OutSegs"} {
		if _, ok := c[name]; !ok {
			return kernelCounters{}, fmt.Errorf("the kernel's SNMP counters lack %s: %w", name, os.ErrNotExist)
		}
	}
	return kernelCounters{
		echoReplies4: uint64(c["Icmp:OutEchoReps"]),
		echoReplies6: uint64(c["Icmp6OutEchoReplies"]),
		tcpOutSegs:   uint64(c["Tcp:OutSegs"]),
	}, nil
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
