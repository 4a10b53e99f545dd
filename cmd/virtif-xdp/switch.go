//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/virtif-xdp/virtif-xdp/bpf"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/switchd"
)

// defaultControl is the switch's control socket unless --control.
const defaultControl = "/run/virtif-xdp/switch.sock"

func newSwitchCmd() *cobra.Command {
	var nic, control, group, netns, metrics, attach string
	cmd := &cobra.Command{
		Use:   "switch --link NIC [--control PATH] [--metrics ADDR]",
		Short: "Share one NIC between processes, each tenant's MACs steered in the kernel to a veth of its own",
		Long: `switch owns the NIC's XDP program and nothing else on the data path. Each
tenant (a connection to the control socket; 'run --link xdp:NIC,switch=PATH'
makes one) gets a veth pair: the switch end beside the NIC, the tenant end
moved into the tenant's network namespace. The NIC's program redirects the
frames for a tenant's registered unicast MACs, ARP requests for its IPv4
addresses and the multicast groups it joined into its switch end (DEVMAP);
everything else passes to the host kernel. A program on each switch end
sends what the tenant transmits out of the NIC, or to another tenant when
the destination is that tenant's MAC (or an ARP request for its address, or
its group), and drops, counting, any frame whose source MAC the tenant did
not register. A tenant whose connection closes (its process exits or dies)
is removed: its map entries and its veth pair.

The control socket is mode 0600 (--group: 0660 for that group). Until
Ctrl-C or SIGTERM; then every tenant is removed and the program leaves the
NIC. A killed switch leaves the NIC clean (bpf_link); its tenants see their
port go and exit; the next switch on the NIC removes the veths left.`,
		Args: cobraArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if nic == "" {
				return usagef("--link NIC is required")
			}
			nic = strings.TrimPrefix(nic, "xdp:")
			mode := bpf.AttachAuto
			switch attach {
			case "auto":
			case "native":
				mode = bpf.AttachNative
			case "generic":
				mode = bpf.AttachGeneric
			default:
				return usagef("--attach %q: auto, native or generic", attach)
			}
			gid := -1
			if group != "" {
				g, err := user.LookupGroup(group)
				if err != nil {
					return usagef("--group %q: %v", group, err)
				}
				gid, _ = strconv.Atoi(g.Gid)
			}
			if netns != "" {
				if err := netlab.CheckNamespaceName(netns); err != nil {
					return usageError{fmt.Errorf("--netns: %w", err)}
				}
			}
			return runSwitch(cmd, switchd.Config{NIC: nic, Control: control, Group: gid, Attach: mode}, netns, metrics)
		},
	}
	cmd.Flags().StringVar(&nic, "link", "", "the NIC to share (its name, or xdp:NAME)")
	cmd.Flags().StringVar(&control, "control", defaultControl, "the control socket's path")
	cmd.Flags().StringVar(&group, "group", "", "a group that may use the control socket too (mode 0660)")
	cmd.Flags().StringVar(&netns, "netns", "", "the named network namespace of the NIC (default: the process's own)")
	cmd.Flags().StringVar(&metrics, "metrics", "", "serve Prometheus metrics on this address (e.g. 127.0.0.1:9100)")
	cmd.Flags().StringVar(&attach, "attach", "auto", "how the NIC's program is attached: auto, native or generic")
	cmd.AddCommand(newSwitchStatusCmd())
	return cmd
}

func runSwitch(cmd *cobra.Command, cfg switchd.Config, netns, metrics string) error {
	if err := ensureDir(filepath.Dir(cfg.Control)); err != nil {
		return err
	}
	var s *switchd.Server
	start := func() (err error) { s, err = switchd.New(cfg); return err }
	var err error
	if netns != "" {
		err = netlab.DoIn(netns, start)
	} else {
		err = start()
	}
	if err != nil {
		return withRootHint(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	stopMetrics := func() {}
	if metrics != "" {
		srv, ln, err := serveMetrics(metrics, "switch", nil, switchCollector{s})
		if err != nil {
			s.Close()
			return err
		}
		slog.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
		stopMetrics = func() { srv.Close() }
	}
	defer stopMetrics()
	slog.Info("switch running", "nic", cfg.NIC, "attach", s.Attach().String(), "control", cfg.Control)
	select {
	case <-cmd.Context().Done():
		err = nil
	case err = <-served:
	}
	if cerr := s.Close(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	slog.Info("switch stopped", "nic", cfg.NIC)
	return err
}

func ensureDir(dir string) error {
	if dir == "" || dir == "." {
		return nil
	}
	return os.MkdirAll(dir, 0o755)
}

func newSwitchStatusCmd() *cobra.Command {
	var control string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--control PATH]",
		Short: "List a switch's tenants with their counters",
		Args:  cobraArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := switchd.Dial(control)
			if err != nil {
				return err
			}
			defer cl.Close()
			nic, err := cl.Stats()
			if err != nil {
				return err
			}
			ts, err := cl.List()
			if err != nil {
				return err
			}
			return printSwitchStatus(cmd.OutOrStdout(), nic, ts, asJSON)
		},
	}
	cmd.Flags().StringVar(&control, "control", defaultControl, "the switch's control socket")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	return cmd
}

func printSwitchStatus(w io.Writer, nic switchd.NICInfo, ts []switchd.TenantInfo, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(struct {
			NIC     switchd.NICInfo      `json:"nic"`
			Tenants []switchd.TenantInfo `json:"tenants"`
		}{nic, ts})
	}
	fmt.Fprintf(w, "NIC %s (ifindex %d, %s): %d tenants; to the host %d, runts %d, for a port gone %d\n",
		nic.Name, nic.Ifindex, nic.Attach, nic.Tenants, nic.Counters.Pass, nic.Counters.Runt, nic.Counters.NoPort)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tNAME\tPID\tIFNAME\tMACS\tIPV4\tGROUPS\tFROM_NIC\tTO_NIC\tTO_TENANT\tFROM_TENANT\tSPOOFED\tNOPORT")
	list := func(s []string) string {
		if len(s) == 0 {
			return "-"
		}
		return strings.Join(s, ",")
	}
	for _, t := range ts {
		c := t.Counters
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", t.Port, t.Name, t.PID, t.Ifname,
			list(t.MACs), list(t.IPv4s), list(t.Groups), c.FromNIC, c.ToNIC, c.ToTenant, c.FromTenant, c.Spoofed, c.NoPort)
	}
	return tw.Flush()
}

// switchCollector serves the switch's counters per tenant.
type switchCollector struct{ s *switchd.Server }

func (switchCollector) Describe(chan<- *prometheus.Desc) {}

func (c switchCollector) Collect(ch chan<- prometheus.Metric) {
	d := prometheus.NewDesc("virtif_switch_frames_total", "Frames through the switch, by tenant port and what happened to them.",
		[]string{"port", "tenant", "what"}, nil)
	emit := func(port int, name string, counters bpf.SwitchCounters) {
		for what, v := range map[string]uint64{"from_nic": counters.FromNIC, "to_nic": counters.ToNIC, "to_tenant": counters.ToTenant,
			"from_tenant": counters.FromTenant, "spoofed": counters.Spoofed, "noport": counters.NoPort, "pass": counters.Pass, "runt": counters.Runt} {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), strconv.Itoa(port), name, what)
		}
	}
	n := c.s.NICInfo()
	emit(0, "", n.Counters)
	for _, t := range c.s.List() {
		emit(t.Port, t.Name, t.Counters)
	}
}
