//go:build linux

package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/netstack"
	"github.com/virtif-xdp/virtif-xdp/virtif"
)

// runFlags are the flags of run.
type runFlags struct {
	vifFlags
	addrs   []string
	gateway string
	echo    int
	udpEcho int
	http    string
	trust   bool
	noGRO   bool
	allowID bool // --allow-host-identity
	limits  netstack.Limits
	probe   time.Duration
	mtu     int

	prefixes []netip.Prefix // parsed addrs
	gw       netip.Addr     // parsed gateway
}

func newRunCmd() *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run --link xdp:IFNAME[,...] --addr IP/LEN [--addr IP/LEN ...] [flags]",
		Short: "Run a userspace TCP/IP host on a NIC it shares with the host kernel",
		Long: `run brings up vif0 on the NIC and puts gVisor's TCP/IP stack on it with the
--addr addresses (IPv4 and IPv6): a host of its own on a NIC whose kernel
keeps its own addresses and traffic. The XDP program steers to vif0 only the
frames for its MAC, ARP requests for its IPv4 addresses and its IPv6
solicited-node groups; everything else still reaches the host kernel.

The host answers ping (ICMP and ICMPv6), runs a TCP echo service (RFC 862)
on --echo, a UDP echo service on --udp-echo (off by default) and an HTTP
status page with the interface counters on --http (--echo 0 and --http off
turn them off; the banner says what listens where),
until Ctrl-C or SIGTERM (or --duration). Then it stops the stack, destroys
vif0 and the XDP program leaves the NIC, and it prints the interface
counters and what the host answered. --metrics serves both to Prometheus
(virtif_* for the interface, virtif_stack_* for the host's answers).

An address need not be in the host kernel's subnet on the NIC; two vifs on
one NIC cannot have IPv6 addresses with the same low 24 bits (they share a
solicited-node group), nor can vif0 and the host kernel.

run never takes the host's identity unless --allow-host-identity: it
refuses an --addr the host kernel holds anywhere in the NIC's namespace, an
IPv6 --addr whose solicited-node group (the low 24 bits) is that of an IPv6
address on the NIC's link (the NIC, its VLANs and macvlans, its master),
EUI-64 link-locals included, and a --mac that is the NIC's, one of those
interfaces', or on the NIC's address list ('bridge fdb show dev NIC self').
The error names each conflict.

Then, before it takes them, it checks that nobody on the segment holds its
addresses: three ARP probes a --probe apart for IPv4 (RFC 5227; then an
announcement), duplicate address detection for IPv6 (RFC 4862: one
neighbour solicitation from ::; it steers the all-nodes group to vif0 for
that time, as the answers go there). An address someone answers for is
not taken: run exits 1 naming the MAC that answered.

Anyone on the segment reaches the services, so they are bounded: at most
--max-conns connections at once (one more is closed at once), a connection
silent for --idle-timeout or not taking a write for --write-timeout is
closed (an echo client that never reads holds a 16 KiB buffer and the
socket's send buffer, no more), HTTP request headers are at most 8 KiB.
The status page shows the interface's name, MAC, MTU, flags, addresses and
its own counters and the services' connection counts, never the link
string, the NIC or its settings, nor counters of the NIC's queues and
sockets or of the host kernel's traffic (--metrics has those).

Checksums: on a veth, the sending kernel leaves TCP checksums unfinished
and XDP sees them that way, so TCP to vif0 fails unless the sender turns
checksum offload off ('ethtool -K PEER tx off') or run is told
--trust-rx-checksum. A real NIC delivers finished checksums: leave it off.` + privilegesHelp(),
		Example: `  # in the lab ('virtif-xdp lab up' makes vxlab-h/vxlabh, peer vxlab-p)
  virtif-xdp run --netns vxlab-h --link xdp:vxlabh --addr 198.18.0.3/24 --trust-rx-checksum
  ip netns exec vxlab-p ping 198.18.0.3
  ip netns exec vxlab-p curl http://198.18.0.3/

  # on a real NIC, IPv4 and IPv6, echo on port 7, status page on 8080
  virtif-xdp run --link xdp:eth0 --addr 192.0.2.10/24 --addr 2001:db8::10/64 \
      --gateway 192.0.2.1 --http :8080`,
		Args: cobraArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			return runHost(cmd, &f)
		},
	}
	fs := cmd.Flags()
	f.register(fs, 0, "how long to run (0: until Ctrl-C or SIGTERM)")
	fs.StringArrayVar(&f.addrs, "addr", nil, "an address of the host with its subnet, IPv4 or IPv6 (repeat for more), e.g. 198.18.0.3/24")
	fs.StringVar(&f.gateway, "gateway", "", "default gateway, IPv4 or IPv6 (needs an --addr of its family)")
	fs.IntVar(&f.echo, "echo", 7, "TCP echo service port (0: none)")
	fs.IntVar(&f.udpEcho, "udp-echo", 0, "UDP echo service port: each datagram back to its sender, up to 2048 bytes (0: none)")
	fs.StringVar(&f.http, "http", ":80", `status page address: ":80" on every address, "198.18.0.3:8080" on one ("off" or "": none)`)
	fs.DurationVar(&f.probe, "probe", probeInterval, "time between the probes that check nobody on the segment holds an --addr (ARP probes, IPv6 duplicate address detection) before it is taken; 0: no probing")
	fs.IntVar(&f.limits.MaxConns, "max-conns", netstack.DefaultMaxConns, "connections open at once across echo and the status page; one more is closed at once")
	fs.DurationVar(&f.limits.IdleTimeout, "idle-timeout", netstack.DefaultIdleTimeout, "close a service connection silent this long (also bounds reading one HTTP request)")
	fs.DurationVar(&f.limits.WriteTimeout, "write-timeout", netstack.DefaultWriteTimeout, "close a service connection whose client does not take a write within this")
	fs.BoolVar(&f.allowID, "allow-host-identity", false, "take an --addr or --mac the host uses on the NIC's namespace or link anyway (it cuts the host off)")
	fs.BoolVar(&f.trust, "trust-rx-checksum", false, "trust received checksums (for a veth whose sender offloads them; not for real NICs)")
	fs.BoolVar(&f.noGRO, "no-gro", false, "hand the stack every received frame as it arrives, not TCP segments coalesced per RX batch (GRO)")
	fs.IntVar(&f.mtu, "mtu", 1500, "the vif's MTU, which the stack follows: up to one UMEM frame's worth (1774 with 2048-byte frames), or with multi-buffer (the link string's sg=, default auto, on Linux 6.6+) the NIC's MTU; the banner says the ceiling and why")
	return cmd
}

// check validates run's flags; its errors are usage errors.
func (f *runFlags) check() error {
	if err := f.vifFlags.check(true); err != nil {
		return err
	}
	if len(f.addrs) == 0 {
		return usagef("--addr is required: the host's address with its subnet, e.g. --addr 198.18.0.3/24 (repeat it for IPv6)")
	}
	f.prefixes = f.prefixes[:0]
	for _, s := range f.addrs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			if a, aerr := netip.ParseAddr(s); aerr == nil {
				bits := 24
				if a.Is6() {
					bits = 64
				}
				return usagef("--addr %s: give the subnet too, e.g. --addr %s/%d", s, s, bits)
			}
			return usagef("--addr %q: not an address with its subnet such as 198.18.0.3/24 or fd00::3/64", s)
		}
		if p.Addr().Is4In6() {
			return usagef("--addr %s: an IPv4-mapped address; give it as IPv4 (%s/%d)", s, p.Addr().Unmap(), p.Bits()-96)
		}
		if p.Addr().Zone() != "" {
			return usagef("--addr %s: no zone, please", s)
		}
		if a := p.Addr(); a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() {
			return usagef("--addr %s: not a unicast address a host can have", s)
		}
		for _, q := range f.prefixes {
			if q.Addr() == p.Addr() {
				return usagef("--addr %s: given twice", p.Addr())
			}
		}
		f.prefixes = append(f.prefixes, p)
	}
	if f.gateway != "" {
		gw, err := netip.ParseAddr(f.gateway)
		if err != nil || gw.Zone() != "" {
			return usagef("--gateway %q: not an IP address", f.gateway)
		}
		gw = gw.Unmap()
		found := false
		for _, p := range f.prefixes {
			found = found || p.Addr().Is4() == gw.Is4()
		}
		if !found {
			return usagef("--gateway %s: no --addr of its family to reach it from", gw)
		}
		f.gw = gw
	}
	if f.probe < 0 {
		return usagef("--probe %s: must not be negative", f.probe)
	}
	if f.mtu < virtif.MinMTU {
		return usagef("--mtu %d: at least %d", f.mtu, virtif.MinMTU)
	}
	if f.http == "off" {
		f.http = ""
	}
	if f.limits.MaxConns < 1 || f.limits.IdleTimeout <= 0 || f.limits.WriteTimeout <= 0 {
		return usagef("--max-conns, --idle-timeout and --write-timeout must be positive")
	}
	if f.echo < 0 || f.echo > 65535 {
		return usagef("--echo %d: a TCP port is 1..65535 (0: no echo service)", f.echo)
	}
	if f.udpEcho < 0 || f.udpEcho > 65535 {
		return usagef("--udp-echo %d: a UDP port is 1..65535 (0: no UDP echo service)", f.udpEcho)
	}
	if f.http != "" {
		host, port, err := net.SplitHostPort(f.http)
		if err != nil {
			return usagef("--http %q: not HOST:PORT, e.g. :80 or 198.18.0.3:8080", f.http)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return usagef("--http %q: port %q is not 1..65535", f.http, port)
		}
		if host != "" {
			if _, err := netip.ParseAddr(host); err != nil {
				return usagef("--http %q: %q is not an IP address (the stack has no names)", f.http, host)
			}
		}
		if f.echo > 0 && port == strconv.Itoa(f.echo) {
			return usagef("--http %s and --echo %d: the same port", f.http, f.echo)
		}
	}
	return nil
}

// probeInterval is the default of run's --probe and what the demo uses:
// RFC 5227's and RFC 4862's timing; the tests shorten it.
var probeInterval = netstack.DefaultProbeInterval

// runHost is run's body: vif0 with a netstack.Host on it until stopped.
func runHost(cmd *cobra.Command, f *runFlags) (err error) {
	w := cmd.OutOrStdout()
	if err := checkHostIdentity(f.netns, f.link, f.prefixes, f.hw, f.allowID); err != nil {
		return err
	}
	v, err := openVif(vifSetup{link: f.link, netns: f.netns, mac: f.hw, promisc: f.promisc})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := v.Close(); cerr != nil {
			slog.Error("destroying the vif", "err", cerr)
			err = errors.Join(err, cerr)
		}
	}()
	if err := v.ifc.SetMTU(f.mtu); err != nil {
		return fmt.Errorf("--mtu: %w", err)
	}
	info := v.be.Info()
	start := time.Now()
	var privs atomic.Pointer[string] // the capabilities kept, once dropped
	h, err := netstack.NewHost(v.ifc, netstack.HostConfig{
		Addrs:       f.prefixes,
		Gateway:     f.gw,
		EchoPort:    f.echo,
		UDPEchoPort: f.udpEcho,
		HTTPAddr:    f.http,
		Limits:      f.limits,
		Probe:       netstack.ProbeConfig{Interval: f.probe, Off: f.probe == 0},
		// Whoever reaches the page reads it: counters, uptime and how frames
		// are demultiplexed, not the NIC or how it is set up (the banner
		// has that).
		StatusFunc: func(w io.Writer) {
			info := v.be.Info() // Demux may change: a driver without XDP metadata is found out late
			caps := "not dropped yet"
			if p := privs.Load(); p != nil {
				caps = *p
			}
			fmt.Fprintf(w, "served by virtif-xdp run, frames demultiplexed by %s, up %s, capabilities %s\n",
				info.Demux, time.Since(start).Round(time.Second), caps)
		},
		// The vif's own counters only: not the NIC's sockets, queues or
		// demultiplexing, shared with other vifs, nor the frames the
		// program passed to the host kernel.
		StatusCounter: func() virtif.Stats { return vifStatus(v) },
		Stack:         netstack.StackConfig{Endpoint: netstack.EndpointOptions{RXChecksumOffload: f.trust, NoGRO: f.noGRO}},
	})
	if err != nil {
		if errors.Is(err, unix.EADDRINUSE) {
			err = fmt.Errorf("%w (not taken; --probe 0 skips the check)", err)
		}
		if errors.Is(err, unix.EEXIST) {
			err = fmt.Errorf("%w (another vif on the NIC holds that address or an IPv6 address with the same low 24 bits)", err)
		}
		return fmt.Errorf("starting the userspace host: %w", err)
	}
	defer func() {
		if cerr := h.Close(); cerr != nil {
			slog.Error("stopping the userspace host", "err", cerr)
			err = errors.Join(err, cerr)
		}
	}()
	stopMetrics, err := startMetrics(f.metrics, "run", v, newHostCollector(h, prometheus.Labels{"vif": v.ifc.Name()}))
	if err != nil {
		return fmt.Errorf("--metrics: %w", err)
	}
	defer stopMetrics()
	kept, err := dropPrivileges()
	if err != nil {
		return err
	}
	privs.Store(&kept)

	printHostBanner(w, f, v, kept)
	slog.Info("running", "mode", "run", "vif", v.ifc.Name(), "mac", v.ifc.HardwareAddr().String(), "link", f.link,
		"addrs", f.addrs, "attach", info.Attach, "bind", info.Mode, "queues", info.Queues, "duration", f.duration, "caps", kept)
	_, err = runFor(cmd.Context(), f.duration, v, nil, nil)

	// What the host answered, before the stack goes (its counters go too).
	c := h.Counters()
	st := v.ifc.Stats()
	fmt.Fprintln(w)
	printCounters(w, v.ifc.Name(), st)
	fmt.Fprintf(w, "\nanswered: ping %d, ping6 %d, tcp connections %d (echo %d), udp echoes %d, http requests %d\n",
		c.EchoRepliesV4, c.EchoRepliesV6, c.TCPAccepted, c.EchoConns, c.UDPEchoes, c.HTTPRequests)
	return err
}

// vifStatus is the counters run's status page shows: the vif's Stats with
// only its own backend counters. A test wraps it to see what it gave.
var vifStatus = func(v *vif) virtif.Stats {
	st := v.ifc.Stats()
	st.Backend = v.be.AppendOwnStats(nil)
	return st
}

// printHostBanner says where the host is and what it serves.
func printHostBanner(w io.Writer, f *runFlags, v *vif, caps string) {
	info := v.be.Info()
	where := ""
	if f.netns != "" {
		where = " in " + f.netns
	}
	fmt.Fprintf(w, "%s (mac %s) on %s%s: attach %s, bind %s, queues %s\n",
		v.ifc.Name(), v.ifc.HardwareAddr(), f.link, where, info.Attach, info.Mode, intsString(info.Queues))
	fmt.Fprintf(w, "  mtu %d (at most %d: %s)\n", v.ifc.MTU(), info.MaxMTU, info.MTULimit)
	if info.BusyPoll != "off" {
		fmt.Fprintf(w, "  busy polling %s\n", info.BusyPoll)
	}
	fmt.Fprintf(w, "  the NIC accepts the vif's MACs by %s", info.AddrFilter)
	if info.LeftoversRemoved > 0 {
		fmt.Fprintf(w, "; removed %d entries a killed process left on its address lists", info.LeftoversRemoved)
	}
	fmt.Fprintln(w)
	for _, p := range f.prefixes {
		fam := "inet"
		if p.Addr().Is6() {
			fam = "inet6"
		}
		fmt.Fprintf(w, "  %-6s %s\n", fam, p)
	}
	if f.gw.IsValid() {
		fmt.Fprintf(w, "  gateway %s\n", f.gw)
	}
	if f.echo > 0 {
		fmt.Fprintf(w, "  echo   tcp port %d on every address\n", f.echo)
	} else {
		fmt.Fprintf(w, "  echo   off\n")
	}
	if f.udpEcho > 0 {
		fmt.Fprintf(w, "  echo   udp port %d on every address\n", f.udpEcho)
	}
	if urls := statusURLs(f.http, f.prefixes); len(urls) > 0 {
		fmt.Fprintf(w, "  status %s (counters only)\n", strings.Join(urls, " "))
	} else {
		fmt.Fprintf(w, "  status off\n")
	}
	if f.echo > 0 || f.http != "" {
		fmt.Fprintf(w, "  limits %d connections at once, idle %s, writes %s, HTTP headers %d KiB\n",
			f.limits.MaxConns, f.limits.IdleTimeout, f.limits.WriteTimeout, netstack.DefaultMaxHeaderBytes>>10)
	}
	fmt.Fprintf(w, "  capabilities %s in every thread (the rest dropped after setup)\n", caps)
	fmt.Fprintln(w, "Ctrl-C stops")
}

// statusURLs are the status page's URLs for --http: one per address of the
// host it answers on.
func statusURLs(httpAddr string, prefixes []netip.Prefix) []string {
	host, port, err := net.SplitHostPort(httpAddr)
	if err != nil {
		return nil
	}
	a, err := netip.ParseAddr(host)
	if err == nil && !a.IsUnspecified() {
		return []string{"http://" + net.JoinHostPort(a.Unmap().String(), port) + "/"}
	}
	var urls []string
	for _, p := range prefixes {
		// 0.0.0.0 serves only IPv4; "" and gVisor's [::] serve both.
		if err == nil && a.Is4() && !p.Addr().Is4() {
			continue
		}
		urls = append(urls, "http://"+net.JoinHostPort(p.Addr().String(), port)+"/")
	}
	return urls
}
