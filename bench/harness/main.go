//go:build linux

// Command harness is `make bench`: it measures virtif-xdp's rxdrop, txonly
// and l2fwd against the kernel's own XDP_DROP rate, a C program on libxdp,
// gVisor's pkg/xdp, DPDK's af_xdp PMD (bench/ref/dpdk) and AF_PACKET
// TPACKET_V3, interleaved in one run (A B C ... A B C ...), each run in a
// fresh veth lab with the same generator; in the same rounds the CPU cost
// per frame at a paced rate (virtif-xdp, C, DPDK) and request/response
// latency (latency.go). It writes bench/results: results.md (the tables the
// README shows), results.json (every run) and results.svg (a chart).
//
// Ratios are taken per round (the systems of one round ran back to back on
// the same machine state) and their median is reported; the machines are
// shared and noisy, so single figures mean little.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/virtif-xdp/virtif-xdp/bench/ref/reftest"
	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
)

type system struct {
	Name string `json:"name"` // e.g. "virtif-xdp"
	Mode string `json:"mode"` // rxdrop, txonly, l2fwd
	Note string `json:"note"` // what it is
	// CPU marks a run of the CPU-cost table: paced generator, receiver in
	// poll mode, CPU time per frame instead of a rate.
	CPU bool `json:"cpu,omitempty"`
	run reftest.Run
}

func (s system) key() string {
	if s.CPU {
		return s.Name + " " + s.Mode + " (cpu)"
	}
	return s.Name + " " + s.Mode
}

type runRecord struct {
	System      string  `json:"system"`
	Mode        string  `json:"mode"`
	CPU         bool    `json:"cpu,omitempty"`
	Round       int     `json:"round"`
	PPS         float64 `json:"pps"`
	Packets     uint64  `json:"packets"`
	Seconds     float64 `json:"seconds"`
	Generated   uint64  `json:"generated"`
	VethDropped uint64  `json:"veth_dropped"`
	Arrived     uint64  `json:"arrived"`
	Unaccounted int64   `json:"unaccounted"`
	// CPUSeconds is the receiver's user+system time while the generator
	// ran, NsPerFrame that over the frames it received.
	CPUSeconds float64        `json:"cpu_seconds,omitempty"`
	NsPerFrame float64        `json:"ns_per_frame,omitempty"`
	Error      string         `json:"error,omitempty"`
	Result     map[string]any `json:"result,omitempty"`
}

type summary struct {
	System string  `json:"system"`
	Mode   string  `json:"mode"`
	Note   string  `json:"note"`
	Median float64 `json:"median_pps"`
	Min    float64 `json:"min_pps"`
	Max    float64 `json:"max_pps"`
	Runs   int     `json:"runs"`
	Failed int     `json:"failed"`
	// Unaccounted is the largest number of generated frames a receiving
	// run could not account for (received or counted dropped).
	Unaccounted int64 `json:"max_unaccounted"`
}

type ratio struct {
	Name   string  `json:"name"`
	Target float64 `json:"target"`
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	Met    bool    `json:"met"`
}

type report struct {
	Machine  map[string]string `json:"machine"`
	Rounds   int               `json:"rounds"`
	Seconds  float64           `json:"seconds_per_run"`
	Size     int               `json:"frame_size"`
	CPURate  int               `json:"cpu_rate_pps"`
	Summary  []summary         `json:"summary"`
	Ratios   []ratio           `json:"ratios"`
	CPU      []cpuSummary      `json:"cpu"`
	Latency  []latSummary      `json:"latency"`
	Runs     []runRecord       `json:"runs"`
	LatRuns  []latRecord       `json:"latency_runs"`
	Started  time.Time         `json:"started"`
	Duration string            `json:"duration"`
	// LiveRefused says why every row ran with AF_PACKET (the kernel
	// refuses live frames: trafficgen.LiveAvailable), or is "".
	LiveRefused string `json:"live_refused,omitempty"`
}

func main() {
	rounds := flag.Int("rounds", 5, "rounds: every system runs once per round, in the same order")
	secs := flag.Float64("seconds", 3, "seconds per run")
	size := flag.Int("size", 64, "frame size in bytes")
	out := flag.String("out", "bench/results", "folder for results.md, results.json and results.svg")
	readme := flag.String("readme", "", "also put the table into this file between <!-- bench:begin --> and <!-- bench:end -->")
	cpus := flag.String("cpus", "", "pin the measured programs to these CPUs (taskset -c); empty: no pinning")
	genCPU := flag.String("gencpu", "", "pin the generator (and so the receiving veth's NAPI) to this CPU; empty: no pinning")
	only := flag.String("only", "", "comma-separated system names, or rows as the output names them (\"virtif-xdp rxdrop (cpu)\"), to run (default all; latency runs are named lat-icmp, lat-udp, lat-l2fwd)")
	flag.StringVar(&perfPrefix, "perf", "", "record each CPU-cost run with perf record -a -g into PREFIX-SYSTEM-rROUND.data (read it with perf report --comm)")
	flag.IntVar(&cpuRate, "cpu-rate", 200000, "frames a second the generator sends for the CPU-cost table (well below saturation)")
	flag.IntVar(&latCount, "lat-count", 2000, "request/response rounds per latency run")
	flag.DurationVar(&latGap, "lat-gap", 3*time.Millisecond, "latency runs wait a random time up to this between an answer and the next request")
	tcp := flag.String("tcp", "", "measure nothing: put the tables of these BenchmarkTCPCompare outputs (comma-separated files) into -readme, each between <!-- tcp-MTU:begin --> and <!-- tcp-MTU:end -->")
	flag.Parse()
	if *tcp != "" {
		if err := spliceTCP(strings.Split(*tcp, ","), *readme); err != nil {
			fmt.Fprintf(os.Stderr, "harness: %v\n", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*rounds, *secs, *size, *out, *readme, *cpus, *genCPU, *only); err != nil {
		fmt.Fprintf(os.Stderr, "harness: %v\n", err)
		os.Exit(1)
	}
}

func run(rounds int, secs float64, size int, out, readme, cpus, genCPU, only string) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (it builds veth labs and attaches XDP programs)")
	}
	if rounds < 1 || secs <= 0 {
		return errors.New("-rounds and -seconds must be positive")
	}
	tmp, err := os.MkdirTemp("", "virtif-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	systems, err := buildSystems(tmp)
	if err != nil {
		return err
	}
	bin := func(name string) string {
		for _, s := range systems {
			if s.Name == name {
				return s.run.Binary
			}
		}
		return ""
	}
	lats := latSystems(bin("virtif-xdp"), bin("xsk-c"))
	if only != "" {
		keep := strings.Split(only, ",")
		systems = slices.DeleteFunc(systems, func(s system) bool { return !slices.Contains(keep, s.Name) && !slices.Contains(keep, s.key()) })
		lats = slices.DeleteFunc(lats, func(l latSystem) bool { return !slices.Contains(keep, "lat-"+l.Kind) })
	}
	rep := report{Machine: machine(), Rounds: rounds, Seconds: secs, Size: size, CPURate: cpuRate, Started: time.Now()}
	if err := trafficgen.LiveAvailable(); err != nil {
		rep.LiveRefused = err.Error()
	}
	for round := range rounds {
		for _, s := range systems {
			r := s.run
			r.Seconds, r.Size, r.GenCPU = secs, size, genCPU
			if s.CPU {
				r.Rate = cpuRate
			}
			if s.Name != "xdp-drop" {
				r.CPUs = cpus
			}
			stopPerf := perfRecord(s, round, secs)
			res, err := reftest.Measure(r)
			stopPerf()
			rec := runRecord{System: s.Name, Mode: s.Mode, CPU: s.CPU, Round: round}
			if err != nil {
				rec.Error = err.Error()
				fmt.Printf("round %d  %-24s FAILED: %v\n", round, s.key(), err)
			} else {
				rec.PPS, rec.Packets, rec.Seconds = res.PPS, res.Packets, res.Seconds
				rec.Generated, rec.VethDropped, rec.Arrived = res.Generated, res.VethDropped, res.Arrived
				rec.Result = res.Extra
				if s.Mode != "txonly" {
					rec.Unaccounted = res.Unaccounted()
				}
				if s.CPU {
					rec.CPUSeconds = res.CPUSeconds
					if res.Packets > 0 {
						rec.NsPerFrame = res.CPUSeconds * 1e9 / float64(res.Packets)
					}
					fmt.Printf("round %d  %-24s %7.0f ns CPU per frame  (%d frames, %.3f s CPU)\n",
						round, s.key(), rec.NsPerFrame, res.Packets, res.CPUSeconds)
				}
				fmt.Printf("round %d  %-24s %7.3f Mpps  (generated %d, veth dropped %d, unaccounted %d)\n",
					round, s.key(), res.PPS/1e6, res.Generated, res.VethDropped, rec.Unaccounted)
			}
			rep.Runs = append(rep.Runs, rec)
		}
		for _, l := range lats {
			rec := measureLatency(l, round)
			if rec.Error != "" {
				fmt.Printf("round %d  %-24s FAILED: %s\n", round, l.key(), rec.Error)
			} else {
				fmt.Printf("round %d  %-24s p50 %6.1f µs  p99 %6.1f µs  p99.9 %6.1f µs  max %7.1f µs  (%d rounds, %d lost)\n",
					round, l.key(), rec.P50, rec.P99, rec.P999, rec.Max, rec.N, rec.Lost)
			}
			rep.LatRuns = append(rep.LatRuns, rec)
		}
	}
	rep.Duration = time.Since(rep.Started).Round(time.Second).String()
	rep.Summary = summarize(slices.DeleteFunc(slices.Clone(systems), func(s system) bool { return s.CPU }), rep.Runs)
	rep.Ratios = ratios(rep.Runs, rounds)
	rep.CPU = cpuSummaries(systems, rep.Runs, rounds)
	rep.Latency = latSummaries(lats, rep.LatRuns, rounds)
	return write(rep, out, readme)
}

// buildSystems builds virtif-xdp and the references and lists what to run.
func buildSystems(tmp string) ([]system, error) {
	vx := filepath.Join(tmp, "virtif-xdp")
	if b, err := exec.Command("go", "build", "-o", vx, "./cmd/virtif-xdp").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build virtif-xdp: %w: %s", err, b)
	}
	xskC, err := reftest.BuildC("xsk-c", "xsk_ref")
	if err != nil {
		return nil, fmt.Errorf("build the C reference (bench/deps.sh installs its packages): %w", err)
	}
	afp, err := reftest.BuildC("afpacket", "afpacket_ref")
	if err != nil {
		return nil, fmt.Errorf("build the AF_PACKET reference: %w", err)
	}
	gv, err := reftest.BuildGvisor(tmp)
	if err != nil {
		return nil, fmt.Errorf("build the gVisor reference: %w", err)
	}
	dpdk, err := reftest.BuildGo(tmp, "dpdk")
	if err != nil {
		return nil, fmt.Errorf("build the DPDK reference: %w", err)
	}
	if _, err := exec.LookPath("dpdk-testpmd"); err != nil {
		return nil, fmt.Errorf("the DPDK reference runs dpdk-testpmd (bench/deps.sh installs Debian's dpdk-dev): %w", err)
	}
	virtif := func(mode string) system { return virtifWait(vx, mode, "") }
	const cNote = "C on libxdp's xsk.h (xdpsock-like)"
	const dNote = "DPDK's af_xdp PMD (dpdk-testpmd rxonly/txonly/macswap, --no-huge)"
	cpu := func(s system) system {
		s.CPU = true
		s.Note += "; poll mode, paced generator"
		return s
	}
	return []system{
		{Name: "xdp-drop", Mode: "rxdrop", Note: "the limit: the kernel's XDP_DROP on the receiving veth", run: reftest.Run{Mode: "rxdrop"}},
		virtif("rxdrop"),
		{Name: "xsk-c", Mode: "rxdrop", Note: cNote, run: reftest.Run{Binary: xskC, Mode: "rxdrop"}},
		{Name: "gvisor", Mode: "rxdrop", Note: "gVisor's Go pkg/xdp", run: reftest.Run{Binary: gv, Mode: "rxdrop"}},
		{Name: "dpdk", Mode: "rxdrop", Note: dNote, run: reftest.Run{Binary: dpdk, Mode: "rxdrop"}},
		{Name: "afpacket", Mode: "rxdrop", Note: "AF_PACKET TPACKET_V3 ring", run: reftest.Run{Binary: afp, Mode: "rxdrop", HostPass: true}},
		virtif("txonly"),
		{Name: "xsk-c", Mode: "txonly", Note: cNote, run: reftest.Run{Binary: xskC, Mode: "txonly"}},
		{Name: "gvisor", Mode: "txonly", Note: "gVisor's Go pkg/xdp", run: reftest.Run{Binary: gv, Mode: "txonly"}},
		{Name: "dpdk", Mode: "txonly", Note: dNote, run: reftest.Run{Binary: dpdk, Mode: "txonly"}},
		virtif("l2fwd"),
		{Name: "xsk-c", Mode: "l2fwd", Note: cNote, run: reftest.Run{Binary: xskC, Mode: "l2fwd"}},
		{Name: "dpdk", Mode: "l2fwd", Note: dNote, run: reftest.Run{Binary: dpdk, Mode: "l2fwd"}},
		// skb-borne traffic: the peer's kernel sends with AF_PACKET sendmmsg,
		// as ordinary host traffic arrives, rather than XDP_TX live frames.
		skb(virtif("rxdrop")),
		skb(system{Name: "xsk-c", Mode: "rxdrop", Note: cNote, run: reftest.Run{Binary: xskC, Mode: "rxdrop"}}),
		skb(system{Name: "afpacket", Mode: "rxdrop", Note: "AF_PACKET TPACKET_V3 ring", run: reftest.Run{Binary: afp, Mode: "rxdrop", HostPass: true}}),
		// CPU cost per frame at a paced rate, each receiver sleeping when idle
		// (DPDK cannot: its forwarding core always spins).
		cpu(virtifWait(vx, "rxdrop", "poll")),
		cpu(system{Name: "xsk-c", Mode: "rxdrop", Note: cNote + " (-p: poll())", run: reftest.Run{Binary: xskC, Mode: "rxdrop", Args: []string{"-p"}}}),
		cpu(system{Name: "dpdk", Mode: "rxdrop", Note: dNote + " (always spins)", run: reftest.Run{Binary: dpdk, Mode: "rxdrop"}}),
	}, nil
}

// virtifWait is virtif-xdp's own mode through the command; wait, if set,
// is its rxwait= (else the command's default: spin for rxdrop and l2fwd).
func virtifWait(vx, mode, wait string) system {
	note := "this project, through the full virtif path (rx: rxwait=spin, the command's default)"
	if wait != "" {
		note = "this project, through the full virtif path (rx: rxwait=" + wait + ")"
	}
	if mode == "txonly" {
		note = "this project, through the full virtif path"
	}

	return system{Name: "virtif-xdp", Mode: mode, Note: note, run: reftest.Run{
		Binary: vx, Mode: mode, System: "virtif-xdp",
		Argv: func(a reftest.Args) []string {
			link := "xdp:" + a.Ifname
			if wait != "" {
				link += ",rxwait=" + wait
			}
			argv := []string{mode, "--link", link, "--json",
				"--duration", fmt.Sprintf("%.3fs", a.Seconds), "--size", fmt.Sprint(a.Size), "--dst", a.Dst.String()}
			if mode != "txonly" {
				// reftest's generator sends to this unicast MAC (not the
				// host's), which the references take by grabbing the
				// whole queue; the vif takes it by MAC, through the
				// steering program.
				argv = append(argv, "--mac", reftest.GenDst.String())
			}
			return argv
		},
	}}
}

// perfPrefix, if set (-perf), records every CPU-cost run with perf.
var perfPrefix string

// perfRecord starts perf record -a -g over the middle of s's run (a second
// in, for secs less a second), when -perf asks for it and s is a CPU-cost
// run; the returned func waits for it.
func perfRecord(s system, round int, secs float64) (wait func()) {
	if perfPrefix == "" || !s.CPU || secs <= 1 {
		return func() {}
	}
	out := fmt.Sprintf("%s-%s-r%d.data", perfPrefix, s.Name, round)
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(time.Second)
		cmd := exec.Command("perf", "record", "-a", "-g", "-q", "-o", out, "--", "sleep", fmt.Sprintf("%.1f", secs-1))
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Printf("perf record %s: %v\n%s", out, err, b)
		}
	}()
	return func() { <-done }
}

// skb makes s run with the AF_PACKET sendmmsg generator (skb-borne frames).
func skb(s system) system {
	s.Name += " (skb gen)"
	s.Note += "; generator: AF_PACKET sendmmsg"
	s.run.Generator = "packet"
	return s
}

func machine() map[string]string {
	m := map[string]string{"go": runtime.Version(), "cpus": fmt.Sprint(runtime.NumCPU())}
	if b, err := exec.Command("uname", "-r").Output(); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if h, err := os.Hostname(); err == nil {
		m["host"] = h
	}
	return m
}

func summarize(systems []system, runs []runRecord) []summary {
	var out []summary
	for _, s := range systems {
		sm := summary{System: s.Name, Mode: s.Mode, Note: s.Note}
		var pps []float64
		for _, r := range runs {
			if r.System != s.Name || r.Mode != s.Mode || r.CPU {
				continue
			}
			sm.Runs++
			if r.Error != "" {
				sm.Failed++
				continue
			}
			pps = append(pps, r.PPS)
			sm.Unaccounted = max(sm.Unaccounted, abs(r.Unaccounted))
		}
		sm.Median, sm.Min, sm.Max = stats(pps)
		out = append(out, sm)
	}
	return out
}

// ratios compares virtif-xdp with the others round by round.
func ratios(runs []runRecord, rounds int) []ratio {
	pps := func(sys, mode string, round int) float64 {
		for _, r := range runs {
			if r.System == sys && r.Mode == mode && r.Round == round && r.Error == "" && !r.CPU {
				return r.PPS
			}
		}
		return 0
	}
	var out []ratio
	for _, c := range []struct {
		other, mode string
		target      float64
	}{
		{"xsk-c", "rxdrop", 1}, {"xsk-c", "txonly", 1}, {"xsk-c", "l2fwd", 1},
		{"dpdk", "rxdrop", 1}, {"dpdk", "txonly", 1}, {"dpdk", "l2fwd", 1},
		{"gvisor", "rxdrop", 1}, {"afpacket", "rxdrop", 5}, {"xdp-drop", "rxdrop", 0},
		{"xsk-c (skb gen)", "rxdrop", 0}, {"afpacket (skb gen)", "rxdrop", 0},
	} {
		var v []float64
		self := "virtif-xdp"
		if strings.HasSuffix(c.other, " (skb gen)") {
			self += " (skb gen)"
		}
		for round := range rounds {
			a, b := pps(self, c.mode, round), pps(c.other, c.mode, round)
			if a > 0 && b > 0 {
				v = append(v, a/b)
			}
		}
		if len(v) == 0 {
			continue
		}
		r := ratio{Name: fmt.Sprintf("%s / %s, %s", self, c.other, c.mode), Target: c.target}
		r.Median, r.Min, r.Max = stats(v)
		r.Met = r.Median >= c.target
		out = append(out, r)
	}
	return out
}

func stats(v []float64) (median, lo, hi float64) {
	if len(v) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		median = s[n/2]
	} else {
		median = (s[n/2-1] + s[n/2]) / 2
	}
	return median, s[0], s[len(s)-1]
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

func write(rep report, out, readme string) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	md := markdown(rep)
	files := map[string][]byte{"results.json": append(js, '\n'), "results.md": []byte(md), "results.svg": []byte(chart(rep))}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(out, name), b, 0o644); err != nil {
			return err
		}
	}
	fmt.Print("\n" + md)
	if readme != "" {
		return spliceReadme(readme, "bench", md+"\n![chart](bench/results/results.svg)\n")
	}
	return nil
}

func markdown(rep report) string {
	var b strings.Builder
	m := rep.Machine
	fmt.Fprintf(&b, "Measured %s on %s (%s CPUs, %s), Linux %s, %s; %d interleaved rounds of %.0f s per system, %d-byte frames, took %s.\n\n",
		rep.Started.UTC().Format("2006-01-02"), m["cpu"], m["cpus"], m["host"], m["kernel"], m["go"], rep.Rounds, rep.Seconds, rep.Size, rep.Duration)
	b.WriteString("| system | mode | median Mpps | min | max | runs (failed) | unaccounted frames | what |\n|---|---|---|---|---|---|---|---|\n")
	for _, s := range rep.Summary {
		fmt.Fprintf(&b, "| %s | %s | %.3f | %.3f | %.3f | %d (%d) | %d | %s |\n",
			s.System, s.Mode, s.Median/1e6, s.Min/1e6, s.Max/1e6, s.Runs, s.Failed, s.Unaccounted, s.Note)
	}
	b.WriteString("\n| ratio (per round) | median | min | max | target |\n|---|---|---|---|---|\n")
	for _, r := range rep.Ratios {
		target := "—"
		if r.Target > 0 {
			target = fmt.Sprintf("≥ %.1f× %s", r.Target, map[bool]string{true: "met", false: "missed"}[r.Met])
		}
		fmt.Fprintf(&b, "| %s | %.2f× | %.2f× | %.2f× | %s |\n", r.Name, r.Median, r.Min, r.Max, target)
	}
	cpuMarkdown(&b, rep)
	latMarkdown(&b, rep)
	if rep.LiveRefused != "" {
		fmt.Fprintf(&b, "\nGenerator: AF_PACKET sendmmsg from the peer's kernel for every row, skb gen or not: %s.", rep.LiveRefused)
	} else {
		b.WriteString("\nGenerator: BPF_PROG_RUN live frames (XDP_TX on the peer end), or AF_PACKET sendmmsg from the peer's kernel where it says skb gen.")
	}
	b.WriteString(" Receiving rates are over first to last frame received; every generated frame is received or counted dropped (veth or socket), and `unaccounted` shows any that were not.\n")
	return b.String()
}

// chart draws one horizontal bar per system and mode (median, with a
// min–max whisker), grouped by mode.
func chart(rep report) string {
	const left, barH, gap, width = 230, 18, 6, 520
	maxPPS := 1.0
	for _, s := range rep.Summary {
		maxPPS = max(maxPPS, s.Max)
	}
	x := func(v float64) float64 { return left + v/maxPPS*width }
	var b strings.Builder
	height := 40 + len(rep.Summary)*(barH+gap) + 30
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", left+width+90, height)
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="14">packets per second, %d-byte frames (median, min–max), %d rounds</text>`+"\n", rep.Size, rep.Rounds)
	colors := map[string]string{"virtif-xdp": "#2a7ab9", "xsk-c": "#999", "gvisor": "#8a6", "dpdk": "#a5c", "afpacket": "#c84", "xdp-drop": "#ddd"}
	y := 40
	for _, s := range rep.Summary {
		c := colors[strings.Fields(s.System)[0]]
		if c == "" {
			c = "#666"
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s %s</text>`+"\n", left-8, y+13, s.System, s.Mode)
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", left, y, x(s.Median)-left, barH, c)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#000"/>`+"\n", x(s.Min), x(s.Max), y+barH/2, y+barH/2)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d">%.2f M</text>`+"\n", x(s.Max)+6, y+13, s.Median/1e6)
		y += barH + gap
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// spliceReadme replaces what the file at path holds between
// <!-- marker:begin --> and <!-- marker:end --> with md.
func spliceReadme(path, marker, md string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	begin, end := "<!-- "+marker+":begin -->", "<!-- "+marker+":end -->"
	s := string(b)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %s ... %s markers", path, begin, end)
	}
	s = s[:i+len(begin)] + "\n" + md + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}

// cpuSummary is one receiver's CPU cost per frame at the paced rate.
type cpuSummary struct {
	System string  `json:"system"`
	Note   string  `json:"note"`
	Median float64 `json:"median_ns_per_frame"`
	Min    float64 `json:"min_ns_per_frame"`
	Max    float64 `json:"max_ns_per_frame"`
	Runs   int     `json:"runs"`
	Failed int     `json:"failed"`
	// Ratio is virtif-xdp's cost over this one's, per round (median).
	Ratio float64 `json:"virtif_ratio,omitempty"`
}

func cpuSummaries(systems []system, runs []runRecord, rounds int) []cpuSummary {
	cost := func(sys string, round int) float64 {
		for _, r := range runs {
			if r.CPU && r.System == sys && r.Round == round && r.Error == "" {
				return r.NsPerFrame
			}
		}
		return 0
	}
	var out []cpuSummary
	for _, s := range systems {
		if !s.CPU {
			continue
		}
		sm := cpuSummary{System: s.Name, Note: s.Note}
		var v, ratio []float64
		for round := range rounds {
			for _, r := range runs {
				if r.CPU && r.System == s.Name && r.Round == round {
					sm.Runs++
					if r.Error != "" || r.NsPerFrame == 0 {
						sm.Failed++
					}
				}
			}
			if c := cost(s.Name, round); c > 0 {
				v = append(v, c)
				if a := cost("virtif-xdp", round); a > 0 && s.Name != "virtif-xdp" {
					ratio = append(ratio, a/c)
				}
			}
		}
		sm.Median, sm.Min, sm.Max = stats(v)
		sm.Ratio, _, _ = stats(ratio)
		out = append(out, sm)
	}
	return out
}

func cpuMarkdown(b *strings.Builder, rep report) {
	if len(rep.CPU) == 0 {
		return
	}
	fmt.Fprintf(b, "\nCPU cost per received frame at a paced %d frames/s (rxdrop; user+system time of the receiver's process while the generator ran, from /proc/PID/stat, over the frames it received):\n\n", rep.CPURate)
	b.WriteString("| receiver | median ns/frame | min | max | runs (failed) | virtif-xdp / this (per round) | what |\n|---|---|---|---|---|---|---|\n")
	for _, c := range rep.CPU {
		r := "—"
		if c.Ratio > 0 {
			r = fmt.Sprintf("%.2f×", c.Ratio)
			if c.System == "xsk-c" {
				r += map[bool]string{true: " (goal ≤ 1.0× met)", false: " (goal ≤ 1.0× missed)"}[c.Ratio <= 1]
			}
		}
		fmt.Fprintf(b, "| %s | %.0f | %.0f | %.0f | %d (%d) | %s | %s |\n", c.System, c.Median, c.Min, c.Max, c.Runs, c.Failed, r, c.Note)
	}
}
