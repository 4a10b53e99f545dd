package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
	"github.com/virtif-xdp/virtif-xdp/virtif"
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
host-side veth with the AF_XDP backend and address 198.18.0.3 (answering ARP
and ping in userspace), then checks traffic both ways from the peer
namespace:

  - ping to the host's own address 198.18.0.1 is answered by the host kernel;
  - frames to the host's MAC reach the host kernel and not vif0;
  - frames to vif0's MAC reach vif0 and not the host kernel;
  - frames to an unrelated MAC go to the host kernel, not vif0;
  - frames vif0 sends reach the peer;
  - an ARP request for 198.18.0.3 reaches vif0, and ping 198.18.0.3 is
    answered by vif0;
  - once vif0 is destroyed no XDP program is left on the NIC.

It prints each check (PASS/FAIL with what was seen), the interface counters,
the XDP program's per-rule counters and the attach and bind modes, and
removes the lab (unless --keep). Exit status 0 only if every check passed.

With --link it runs vif0 on that NIC instead (no peer to drive): it prints
the counters every second for --duration and a summary; with --ip vif0
answers ARP and ping for that address.`,
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
	cmd.Flags().StringVar(&f.ip, "ip", "", "with --link: an IPv4 address vif0 answers ARP and ping for")
	cmd.Flags().IntVar(&f.frames, "frames", 100, "frames sent for each frame check")
	return cmd
}

// responder is vif0's upper layer in the demo: it answers ARP requests and
// ICMP echo requests for its address and counts the demo's UDP frames by
// port. It runs in the RX goroutines; Output copies, so one scratch buffer
// under a lock serves all replies.
type responder struct {
	ip     netip.Addr
	ifc    atomic.Pointer[virtif.Interface]
	byPort [nPorts]atomic.Uint64
	arpReq atomic.Uint64
	arpRep atomic.Uint64
	echo   atomic.Uint64
	echoed atomic.Uint64

	mu  sync.Mutex
	buf [2048]byte
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

func (r *responder) input(frame []byte, _ bool) {
	if p := demoPort(frame); p >= 0 {
		r.byPort[p].Add(1)
		return
	}
	ifc := r.ifc.Load()
	if ifc == nil || !r.ip.IsValid() || len(frame) < 42 {
		return
	}
	ip4 := r.ip.As4()
	switch binary.BigEndian.Uint16(frame[12:14]) {
	case 0x0806: // ARP request (op 1) for our address: reply (op 2)
		if binary.BigEndian.Uint16(frame[20:22]) != 1 || string(frame[38:42]) != string(ip4[:]) {
			return
		}
		r.arpReq.Add(1)
		r.mu.Lock()
		b := r.buf[:60]
		clear(b)
		mac := ifc.HardwareAddr()
		copy(b[0:6], frame[22:28])
		copy(b[6:12], mac)
		copy(b[12:22], []byte{0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2})
		copy(b[22:28], mac)
		copy(b[28:32], ip4[:])
		copy(b[32:42], frame[22:32])
		if ifc.Output([][]byte{b}) == nil {
			r.arpRep.Add(1)
		}
		r.mu.Unlock()
	case 0x0800: // ICMP echo request to our address: echo reply
		ihl := int(frame[14]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(frame[16:18]))
		if frame[23] != unix.IPPROTO_ICMP || string(frame[30:34]) != string(ip4[:]) ||
			ihl < 20 || total < ihl+8 || 14+total > len(frame) || frame[14+ihl] != 8 || 14+total > len(r.buf) {
			return
		}
		r.echo.Add(1)
		r.mu.Lock()
		b := r.buf[:14+total]
		copy(b, frame)
		copy(b[0:6], frame[6:12])
		copy(b[6:12], ifc.HardwareAddr())
		copy(b[26:30], frame[30:34])
		copy(b[30:34], frame[26:30])
		b[22] = 64 // TTL
		b[24], b[25] = 0, 0
		binary.BigEndian.PutUint16(b[24:], checksum(b[14:14+ihl]))
		icmpMsg := b[14+ihl:]
		icmpMsg[0] = 0 // echo reply
		icmpMsg[2], icmpMsg[3] = 0, 0
		binary.BigEndian.PutUint16(icmpMsg[2:], checksum(icmpMsg))
		if ifc.Output([][]byte{b}) == nil {
			r.echoed.Add(1)
		}
		r.mu.Unlock()
	}
}

// checksum is the Internet checksum (RFC 1071).
func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
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
	detail string
}

// demoLab is the state of one lab demo run.
type demoLab struct {
	lab        *netlab.Lab
	v          *vif
	resp       *responder
	host, peer *sniffer
	gen        *trafficgen.Packet
	frames     int
	checks     []check
}

func (d *demoLab) add(name string, pass bool, format string, args ...any) {
	d.checks = append(d.checks, check{name, pass, fmt.Sprintf(format, args...)})
	res := "PASS"
	if !pass {
		res = "FAIL"
	}
	slog.Debug("check", "check", name, "result", res, "seen", d.checks[len(d.checks)-1].detail)
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

	d := &demoLab{lab: lab, resp: &responder{ip: demoVifIP}, frames: f.frames}
	d.v, err = openVif(vifSetup{
		link:  "xdp:" + lab.Link[netlab.Host],
		netns: lab.NS[netlab.Host],
		mac:   f.hw,
		addrs: []netip.Addr{demoVifIP},
		input: d.resp.input,
	})
	if err != nil {
		return fmt.Errorf("bringing up vif0: %w", err)
	}
	defer d.v.Close()
	d.resp.ifc.Store(d.v.ifc)
	if d.host, err = openSniffer(lab.NS[netlab.Host], lab.Index[netlab.Host]); err != nil {
		return err
	}
	defer d.host.Close()
	if d.peer, err = openSniffer(lab.NS[netlab.Peer], lab.Index[netlab.Peer]); err != nil {
		return err
	}
	defer d.peer.Close()
	if err = lab.Do(netlab.Peer, func() (err error) {
		d.gen, err = trafficgen.NewPacket(lab.Index[netlab.Peer])
		return err
	}); err != nil {
		return err
	}
	defer d.gen.Close()

	if err := d.run(ctx); err != nil {
		return err
	}
	st := d.v.ifc.Stats()
	info := d.v.be.Info()
	mac := d.v.ifc.HardwareAddr()

	// Tear vif0 down and check that the NIC is the host's alone again.
	d.host.Close()
	d.peer.Close()
	if cerr := d.v.Close(); cerr != nil {
		d.add("vif0 destroyed cleanly", false, "%v", cerr)
	} else {
		attached, lerr := xdpAttached(lab)
		switch {
		case lerr != nil:
			d.add("vif0 destroyed: no XDP program left on "+lab.Link[netlab.Host], false, "%v", lerr)
		default:
			ok, detail := d.ping(ctx, demoHostIP, 1)
			d.add("vif0 destroyed: no XDP program left on "+lab.Link[netlab.Host]+", host still answers",
				!attached && ok, "XDP attached: %v; host: %s", attached, detail)
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("interrupted: %w", context.Cause(ctx))
	}

	fmt.Fprintf(w, "virtif-xdp demo: lab %s, vif0 (mac %s, 198.18.0.3) on %s in %s: attach %s, bind %s, queues %s\n\n",
		lab.Name, mac, lab.Link[netlab.Host], lab.NS[netlab.Host], info.Attach, info.Mode, intsString(info.Queues))
	failed := printChecks(w, d.checks)
	fmt.Fprintln(w)
	printCounters(w, "vif0", st)
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

	ok, detail := d.ping(ctx, demoHostIP, 3)
	d.add("ping 198.18.0.1 (the host's address) from the peer: the host kernel answers", ok, "%s", detail)

	frameCheck := func(name string, dst net.HardwareAddr, port int, toVif bool) error {
		p := port - portToVif
		if err := d.sendFrom(udp(dst, uint16(port)), d.frames); err != nil {
			return err
		}
		want, other := &d.host.byPort[p], &d.resp.byPort[p]
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
		d.add(name, got == n && leak == 0, "%d/%d at %s, %d at %s", got, n, wantWho, leak, otherWho)
		return nil
	}
	if err := frameCheck("frames to the host's MAC reach the host kernel, not vif0", hostMAC, portToHost, false); err != nil {
		return err
	}
	if err := frameCheck("frames to vif0's MAC reach vif0, not the host kernel", vifMAC, portToVif, true); err != nil {
		return err
	}
	if err := frameCheck("frames to an unrelated MAC go to the host kernel, not vif0", demoOther, portToOther, false); err != nil {
		return err
	}

	// vif0 → peer, in batches as an upper layer would send.
	batch := make([][][]byte, 0, 32)
	// To an address the peer does not own, so its kernel drops them quietly
	// instead of answering "port unreachable" (and asking ARP for 198.18.0.3).
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
		d.add("frames vif0 sends reach the peer", false, "%d/%d at the peer; send: %v", got, n, sendErr)
	} else {
		d.add("frames vif0 sends reach the peer", got == n, "%d/%d at the peer", got, n)
	}

	// An ARP request for vif0's address: steered to vif0 (the ARP rule),
	// not seen by the host kernel, answered by vif0.
	req0, rep0, rule0 := d.resp.arpReq.Load(), d.resp.arpRep.Load(), backendStat(d.v.ifc.Stats(), "xdp_arp")
	if err := d.sendFrom(arpRequest(peerMAC, demoPeerIP, demoVifIP), 1); err != nil {
		return err
	}
	waitUntil(ctx, func() bool { return d.resp.arpRep.Load() > rep0 })
	settle()
	req, rep := d.resp.arpReq.Load()-req0, d.resp.arpRep.Load()-rep0
	rule := backendStat(d.v.ifc.Stats(), "xdp_arp") - rule0
	d.add("ARP request for 198.18.0.3 reaches vif0, which answers; not the host kernel",
		req == 1 && rep == 1 && rule == 1 && d.host.arpFor.Load() == 0,
		"%d/1 at vif0 (xdp_arp rule +%d), %d answered, %d at host kernel", req, rule, rep, d.host.arpFor.Load())

	ok, detail = d.ping(ctx, demoVifIP, 3)
	d.add("ping 198.18.0.3 (vif0's address) from the peer: vif0 answers in userspace", ok && d.resp.echoed.Load() >= 3,
		"%s; vif0 answered %d echo requests", detail, d.resp.echoed.Load())
	return ctx.Err()
}

// ping sends count ICMP echo requests from the peer's kernel to dst and
// reports how many were answered (each waits up to a second).
func (d *demoLab) ping(ctx context.Context, dst netip.Addr, count int) (bool, string) {
	var c *icmp.PacketConn
	err := d.lab.Do(netlab.Peer, func() (err error) {
		c, err = icmp.ListenPacket("ip4:icmp", demoPeerIP.String())
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
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("virtif-xdp demo")}}
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
			m, err := icmp.ParseMessage(1, buf[:n])
			if err != nil || ip == nil || !ip.IP.Equal(dst.AsSlice()) || m.Type != ipv4.ICMPTypeEchoReply {
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
	fmt.Fprintln(tw, "CHECK\tRESULT\tSEEN")
	failed := 0
	for _, c := range checks {
		res := "PASS"
		if !c.pass {
			res = "FAIL"
			failed++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.name, res, c.detail)
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
	resp := &responder{}
	var addrs []netip.Addr
	if f.ip != "" {
		a, err := netip.ParseAddr(f.ip)
		if err != nil || !a.Is4() {
			return usagef("--ip %q: not an IPv4 address", f.ip)
		}
		resp.ip = a
		addrs = append(addrs, a)
	}
	v, err := openVif(vifSetup{link: f.link, netns: f.netns, mac: f.hw, promisc: f.promisc, addrs: addrs, input: resp.input})
	if err != nil {
		return err
	}
	defer v.Close()
	resp.ifc.Store(v.ifc)
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
	err = runFor(cmd.Context(), f.duration, v, nil, func(el time.Duration) {
		st := v.ifc.Stats()
		fmt.Fprintf(w, "%6.1fs  rx %d (%d B)  tx %d  drops in %d out %d  rules: unicast %d multicast %d arp %d promisc %d  host %d\n",
			el.Seconds(), st.IPackets, st.IBytes, st.OPackets, st.IDrops, st.ODrops+st.OErrors,
			backendStat(st, "xdp_unicast"), backendStat(st, "xdp_multicast"), backendStat(st, "xdp_arp"),
			backendStat(st, "xdp_promisc"), backendStat(st, "xdp_host_pass"))
	})
	fmt.Fprintln(w)
	printCounters(w, v.ifc.Name(), v.ifc.Stats())
	if resp.ip.IsValid() {
		fmt.Fprintf(w, "\nanswered %d/%d ARP requests and %d/%d pings for %s\n",
			resp.arpRep.Load(), resp.arpReq.Load(), resp.echoed.Load(), resp.echo.Load(), resp.ip)
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
