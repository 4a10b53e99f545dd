//go:build linux

package main

import (
	"net"
	"net/netip"
	"time"

	"github.com/spf13/cobra"
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

// The lab's IPv6 addresses: the host kernel's and the peer's, beside
// demoVifIP6 of the userspace stack. Their low 24 bits differ, so their
// solicited-node groups do too (the XDP program steers vif0's to vif0).
var (
	demoHostIP6 = netip.MustParsePrefix("fd00:198:18::1/64")
	demoPeerIP6 = netip.MustParsePrefix("fd00:198:18::2/64")
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
