//go:build linux

package reftest

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// BenchmarkReferences measures every reference and the kernel's XDP_DROP
// limit with 64-byte frames, interleaved (A B C ... A B C ...), and reports
// the median pps of each. REF_ROUNDS (default 3) and REF_SECONDS (default 3)
// set the size of the run; REF_CPUS pins the references (taskset -c) and
// REF_GEN_CPU the generator; REF_OUT names a file that gets every run as a
// JSON line; REF_VIRTIF names a virtif-xdp binary to measure alongside, in
// the same rounds (its rxdrop, txonly and l2fwd, the vif's MAC set to the
// generator's destination). Progress goes to stdout (benchmark logs are truncated). One op
// is the whole set: run it with -benchtime 1x.
func BenchmarkReferences(b *testing.B) {
	labtest.RequireRoot(b)
	rounds := envInt("REF_ROUNDS", 3)
	secs := float64(envInt("REF_SECONDS", 3))
	cpus, genCPU := os.Getenv("REF_CPUS"), os.Getenv("REF_GEN_CPU")
	xsk := buildC(b, "xsk-c", "xsk_ref")
	afp := buildC(b, "afpacket", "afpacket_ref")
	gv, err := BuildGvisor(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	runs := []struct {
		name string
		run  Run
	}{
		{"xdp-drop", Run{Mode: "rxdrop"}},
		{"xsk-c-rxdrop", Run{Binary: xsk, Mode: "rxdrop"}},
		{"xsk-c-txonly", Run{Binary: xsk, Mode: "txonly"}},
		{"xsk-c-l2fwd", Run{Binary: xsk, Mode: "l2fwd"}},
		{"gvisor-rxdrop", Run{Binary: gv, Mode: "rxdrop"}},
		{"gvisor-txonly", Run{Binary: gv, Mode: "txonly"}},
		{"afpacket-rxdrop", Run{Binary: afp, Mode: "rxdrop", HostPass: true}},
	}
	if vx := os.Getenv("REF_VIRTIF"); vx != "" {
		for _, mode := range []string{"rxdrop", "txonly", "l2fwd"} {
			runs = append(runs, struct {
				name string
				run  Run
			}{"virtif-xdp-" + mode, Run{Binary: vx, Mode: mode, System: "virtif-xdp", Argv: virtifArgv(mode)}})
		}
	}
	var out *json.Encoder
	if name := os.Getenv("REF_OUT"); name != "" {
		f, err := os.Create(name)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		out = json.NewEncoder(f)
	}
	for range b.N {
		pps := make(map[string][]float64)
		for round := range rounds {
			for _, r := range runs {
				r.run.Seconds = secs
				r.run.GenCPU = genCPU
				if r.run.Binary != "" {
					r.run.CPUs = cpus
				}
				res, err := Measure(r.run)
				if err != nil {
					b.Fatalf("%s round %d: %v", r.name, round, err)
				}
				fmt.Printf("round %d %-18s %6.3f Mpps  (generator %d, veth dropped %d, at peer %d, unaccounted %d)%s\n",
					round, r.name, res.PPS/1e6, res.Generated, res.VethDropped, res.Arrived, res.Unaccounted(), drops(res))
				if out != nil {
					if err := out.Encode(map[string]any{"name": r.name, "round": round, "generated": res.Generated,
						"veth_dropped": res.VethDropped, "arrived": res.Arrived, "result": res.Extra}); err != nil {
						b.Fatal(err)
					}
				}
				pps[r.name] = append(pps[r.name], res.PPS)
			}
		}
		for _, r := range runs {
			v := pps[r.name]
			slices.Sort(v)
			fmt.Printf("%-18s median %6.3f Mpps  min %6.3f  max %6.3f\n", r.name, v[len(v)/2]/1e6, v[0]/1e6, v[len(v)-1]/1e6)
			b.ReportMetric(v[len(v)/2]/1e6, r.name+"-Mpps")
		}
	}
}

// virtifArgv is virtif-xdp's command line for a mode. The vif's MAC is the
// generator's destination, so frames take the unicast steering rule, as a
// vif's own traffic would.
func virtifArgv(mode string) func(Args) []string {
	return func(a Args) []string {
		return []string{mode, "--link", "xdp:" + a.Ifname, "--mac", GenDst.String(),
			"--dst", a.Dst.String(), "--size", strconv.Itoa(a.Size),
			"--duration", strconv.FormatFloat(a.Seconds, 'f', 3, 64) + "s", "--json"}
	}
}

// drops lists a result's non-zero drop counters.
func drops(r Result) string {
	s := ""
	for _, k := range []string{"rx_dropped", "rx_ring_full", "rx_fill_ring_empty_descs", "tx_ring_empty_descs", "drops"} {
		if v, ok := r.Extra[k].(float64); ok && v > 0 {
			s += fmt.Sprintf(" %s=%.0f", k, v)
		}
	}
	return s
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
