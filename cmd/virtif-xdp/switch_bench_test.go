//go:build linux

package main

import (
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
)

// BenchmarkSwitchVsDirect measures rxdrop and l2fwd of one vif through a
// tenant port of a switch against the same vif owning the NIC directly, side
// by side in one run on one lab, with the live-frame generator on the peer
// sending 64-byte frames to the vif's MAC, in three alternating rounds. It
// reports the median frames per second of each and their ratio
// (switch/direct): run it with -benchtime=1x, e.g.
//
//	go test -run '^$' -bench SwitchVsDirect -benchtime=1x ./cmd/virtif-xdp
//
// VIRTIF_SWITCH_PERF=PREFIX also records a system-wide perf profile (3 s)
// of each run into PREFIX-{direct,switch}-{rxdrop,l2fwd}.data.
func BenchmarkSwitchVsDirect(b *testing.B) {
	labtest.RequireRoot(b)
	bin := commandBinary(b)
	const seconds, rounds = 4, 3
	for _, mode := range []string{"rxdrop", "l2fwd"} {
		b.Run(mode, func(b *testing.B) {
			for range b.N {
				lab := labtest.NewT(b, netlab.Options{})
				if out, err := lab.Run(netlab.Peer, "ethtool", "-K", lab.Link[netlab.Peer], "gro", "on"); err != nil {
					b.Fatalf("GRO on the peer: %v\n%s", err, out)
				}
				mac := net.HardwareAddr{0x02, 0, 0x5e, 0, 0x53, 0x42}
				frame := trafficgen.UDPFrame(mac, lab.MAC[netlab.Peer], netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3"), 9, 9, 64)
				measure := func(ns, link, profile string) float64 {
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
					// Live frames, or AF_PACKET where the kernel refuses them
					// (the same source for both paths).
					gen, _, err := trafficgen.SourceIn(lab, netlab.Peer)
					if err != nil {
						b.Fatal(err)
					}
					var perf *exec.Cmd
					if profile != "" {
						// The whole machine, while the frames flow.
						perf = exec.Command("perf", "record", "-a", "-g", "-o", profile, "--", "sleep", "3")
						if err := perf.Start(); err != nil {
							b.Fatal(err)
						}
					}
					_, genErr := gen.SendFor(frame, (seconds+1)*time.Second)
					if perf != nil {
						perf.Wait()
					}
					gen.Close()
					if err := cmd.Wait(); err != nil {
						b.Fatalf("%s: %v\n%s", mode, err, errb.String())
					}
					if genErr != nil {
						// Not a rate of 0: nothing was offered.
						b.Fatalf("%s: the generator: %v", mode, genErr)
					}
					var s benchSummary
					if err := json.Unmarshal([]byte(out.String()), &s); err != nil {
						b.Fatalf("%s: %v\n%s", mode, err, out.String())
					}
					return s.PPS
				}
				prof := os.Getenv("VIRTIF_SWITCH_PERF") // perf record the switched and direct runs into PREFIX-{direct,switch}-MODE.data
				profile := func(which string) string {
					if prof == "" {
						return ""
					}
					return prof + "-" + which + "-" + mode + ".data"
				}
				// Rounds alternate the two so that the load of a shared
				// machine falls on both alike; the medians are compared.
				var directs, switcheds []float64
				ns := (&switchLab{Lab: lab}).tenantNS(b, "t")
				for range rounds {
					directs = append(directs, measure(lab.NS[netlab.Host], "xdp:"+lab.Link[netlab.Host], profile("direct")))
					sw := &switchLab{Lab: lab, bin: bin}
					sw.startSwitch(b)
					switcheds = append(switcheds, measure(ns, "xdp:"+lab.Link[netlab.Host]+",switch="+sw.control, profile("switch")))
					sw.sw.Process.Signal(syscall.SIGTERM)
					sw.sw.Wait()
				}
				direct, switched := median(directs), median(switcheds)
				b.Logf("%s frames/s: direct %.0f, switch %.0f", mode, directs, switcheds)
				b.ReportMetric(direct, "direct_pps")
				b.ReportMetric(switched, "switch_pps")
				if direct > 0 {
					b.ReportMetric(switched/direct, "ratio")
				}
			}
		})
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
