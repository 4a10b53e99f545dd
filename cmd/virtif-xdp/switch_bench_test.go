package main

import (
	"encoding/json"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
)

// BenchmarkSwitchVsDirect measures rxdrop and l2fwd of one vif through a
// tenant port of a switch against the same vif owning the NIC directly, side
// by side in one run on one lab, with the live-frame generator on the peer
// sending 64-byte frames to the vif's MAC. It reports the frames per second
// of each and their ratio (switch/direct): run it with -benchtime=1x, e.g.
//
//	go test -run '^$' -bench SwitchVsDirect -benchtime=1x ./cmd/virtif-xdp
func BenchmarkSwitchVsDirect(b *testing.B) {
	netlab.RequireRoot(b)
	bin := commandBinary(b)
	const seconds = 5
	for _, mode := range []string{"rxdrop", "l2fwd"} {
		b.Run(mode, func(b *testing.B) {
			for range b.N {
				lab := netlab.NewT(b, netlab.Options{})
				if out, err := lab.Run(netlab.Peer, "ethtool", "-K", lab.Link[netlab.Peer], "gro", "on"); err != nil {
					b.Fatalf("GRO on the peer: %v\n%s", err, out)
				}
				mac := net.HardwareAddr{0x02, 0, 0x5e, 0, 0x53, 0x42}
				frame := trafficgen.UDPFrame(mac, lab.MAC[netlab.Peer], netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3"), 9, 9, 64)
				measure := func(ns, link string) float64 {
					cmd := exec.Command(bin, mode, "--netns", ns, "--link", link+",rxwait=spin", "--mac", mac.String(),
						"--duration", (seconds * time.Second).String(), "--json")
					errb := &syncBuffer{}
					cmd.Stderr = errb
					out := &syncBuffer{}
					cmd.Stdout = out
					if err := cmd.Start(); err != nil {
						b.Fatal(err)
					}
					for deadline := time.Now().Add(20 * time.Second); !strings.Contains(errb.String(), "msg=running"); time.Sleep(10 * time.Millisecond) {
						if time.Now().After(deadline) {
							cmd.Process.Kill()
							cmd.Wait()
							b.Fatalf("%s not running:\n%s", mode, errb.String())
						}
					}
					gen, err := trafficgen.LiveIn(lab, netlab.Peer)
					if err != nil {
						b.Fatal(err)
					}
					_, _ = gen.SendFor(frame, (seconds+1)*time.Second)
					gen.Close()
					if err := cmd.Wait(); err != nil {
						b.Fatalf("%s: %v\n%s", mode, err, errb.String())
					}
					var s benchSummary
					if err := json.Unmarshal([]byte(out.String()), &s); err != nil {
						b.Fatalf("%s: %v\n%s", mode, err, out.String())
					}
					return s.PPS
				}
				direct := measure(lab.NS[netlab.Host], "xdp:"+lab.Link[netlab.Host])

				sw := &switchLab{Lab: lab, bin: bin}
				sw.startSwitch(b)
				ns := sw.tenantNS(b, "t")
				switched := measure(ns, "xdp:"+lab.Link[netlab.Host]+",switch="+sw.control)
				b.ReportMetric(direct, "direct_pps")
				b.ReportMetric(switched, "switch_pps")
				if direct > 0 {
					b.ReportMetric(switched/direct, "ratio")
				}
			}
		})
	}
}
