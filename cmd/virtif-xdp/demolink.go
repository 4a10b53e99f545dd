//go:build linux

package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/spf13/cobra"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/virtif-xdp/virtif-xdp/netstack"
)

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
