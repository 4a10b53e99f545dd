//go:build linux

package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// tcpRun is one run of BenchmarkTCPCompare (netstack/bench_test.go), read
// back from what it printed: `make bench` tees it into bench/results and
// this puts its table into the README.
type tcpRun struct {
	MTU, Bytes int
	Started    string // RFC 3339, UTC; empty in output that predates it
	CPU        string // go test's "cpu:" line
	Receivers  []string
	// Gbps[receiver][round], rounds in the order they ran (interleaved:
	// every receiver once per round).
	Gbps        map[string]map[int]float64
	NotPossible map[string]string // receiver: why, at this MTU
	Rounds      int
}

// tcpWhat says what each of the benchmark's receivers is.
var tcpWhat = map[string]string{
	"netstack-xdp":       "gVisor's TCP/IP stack on a virtif-xdp vif (XDP steering, AF_XDP copy mode), GRO (the default)",
	"netstack-xdp-nogro": "the same without GRO (`EndpointOptions.NoGRO`)",
	"netstack-fdbased":   "the same gVisor stack on gVisor's own AF_PACKET endpoint (`fdbased`)",
	"kernel":             "the host kernel's TCP (no XDP program attached)",
}

// tcpRatios are the per-round ratios the table shows, with issue 12's goal
// where it sets one (the vif's stack at least level with the kernel's TCP,
// and ahead of gVisor's AF_PACKET endpoint).
var tcpRatios = []struct {
	a, b   string
	target float64
}{
	{"netstack-xdp", "kernel", 1},
	{"netstack-xdp-nogro", "kernel", 0},
	{"netstack-xdp", "netstack-fdbased", 1},
}

// parseTCP reads BenchmarkTCPCompare's output. It fails on a benchmark
// that failed (go test's FAIL lines) or measured nothing, so a `make bench`
// whose TCP step broke does not splice an empty table.
func parseTCP(r io.Reader) (tcpRun, error) {
	run := tcpRun{Gbps: map[string]map[int]float64{}, NotPossible: map[string]string{}}
	var fails []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		var (
			round, mtu, n int
			name          string
			g             float64
		)
		switch {
		case strings.HasPrefix(line, "MTU "):
			var rounds int
			if k, _ := fmt.Sscanf(line, "MTU %d, %d bytes per run, %d rounds, started %s", &run.MTU, &run.Bytes, &rounds, &run.Started); k < 2 {
				return run, fmt.Errorf("not a TCPCompare header: %q", line)
			}
		case strings.HasPrefix(line, "cpu: "):
			run.CPU = strings.TrimSpace(strings.TrimPrefix(line, "cpu: "))
		case strings.HasPrefix(line, "--- FAIL"), strings.HasPrefix(line, "FAIL"),
			len(fails) > 0 && strings.HasPrefix(line, " "): // why, under --- FAIL
			fails = append(fails, strings.TrimSpace(line))
		case strings.Contains(line, " not possible at MTU "):
			if k, _ := fmt.Sscanf(line, "%s not possible at MTU %d:", &name, &mtu); k == 2 {
				run.NotPossible[name] = strings.TrimSpace(line[strings.Index(line, ":")+1:])
				run.addReceiver(name)
			}
		case strings.HasPrefix(line, "round ") && !strings.Contains(line, " ratio "):
			if k, _ := fmt.Sscanf(line, "round %d %s %f Gbit/s", &round, &name, &g); k != 3 {
				return run, fmt.Errorf("not a TCPCompare round: %q", line)
			}
			run.addReceiver(name)
			if run.Gbps[name] == nil {
				run.Gbps[name] = map[int]float64{}
			}
			run.Gbps[name][round] = g
			run.Rounds = max(run.Rounds, round+1)
			n++
		}
	}
	if err := sc.Err(); err != nil {
		return run, err
	}
	if len(fails) > 0 {
		return run, fmt.Errorf("the benchmark failed: %s", strings.Join(fails, "; "))
	}
	if run.MTU == 0 || run.Rounds == 0 {
		return run, errors.New("no TCPCompare results in it")
	}
	return run, nil
}

func (r *tcpRun) addReceiver(name string) {
	if !slices.Contains(r.Receivers, name) {
		r.Receivers = append(r.Receivers, name)
	}
}

// perRound returns a's rate over b's, one per round in which both ran.
func (r tcpRun) perRound(a, b string) []float64 {
	var v []float64
	for round := range r.Rounds {
		x, okx := r.Gbps[a][round]
		y, oky := r.Gbps[b][round]
		if okx && oky && y > 0 {
			v = append(v, x/y)
		}
	}
	return v
}

// tcpMarkdown is the README's table of one run; file is where its output
// is, as a link relative to the README.
func tcpMarkdown(r tcpRun, file string) string {
	var b strings.Builder
	when := "Measured"
	if len(r.Started) >= 10 {
		when += " " + r.Started[:10]
	}
	if r.CPU != "" {
		when += " on " + r.CPU
	}
	fmt.Fprintf(&b, "%s, MTU %d, %d MiB per run, %d interleaved rounds ([`%s`](%s)):\n\n", when, r.MTU, r.Bytes>>20, r.Rounds, file, file)
	b.WriteString("| receiver | median Gbit/s | min | max | runs | what |\n|---|---|---|---|---|---|\n")
	for _, name := range r.Receivers {
		what := tcpWhat[name]
		if why, ok := r.NotPossible[name]; ok {
			fmt.Fprintf(&b, "| %s | not possible at MTU %d | | | 0 | %s; %s |\n", name, r.MTU, what, why)
			continue
		}
		var v []float64
		for round := range r.Rounds {
			if g, ok := r.Gbps[name][round]; ok {
				v = append(v, g)
			}
		}
		med, lo, hi := stats(v)
		fmt.Fprintf(&b, "| %s | %.2f | %.2f | %.2f | %d | %s |\n", name, med, lo, hi, len(v), what)
	}
	b.WriteString("\n| ratio (per round) | rounds | median | min | max | target |\n|---|---|---|---|---|---|\n")
	for _, c := range tcpRatios {
		v := r.perRound(c.a, c.b)
		if len(v) == 0 {
			continue
		}
		each := make([]string, len(v))
		for i, x := range v {
			each[i] = fmt.Sprintf("%.2f", x)
		}
		med, lo, hi := stats(v)
		target := "—"
		if c.target > 0 {
			target = fmt.Sprintf("≥ %.1f× %s", c.target, map[bool]string{true: "met", false: "missed"}[med >= c.target])
		}
		fmt.Fprintf(&b, "| %s / %s | %s | %.2f× | %.2f× | %.2f× | %s |\n", c.a, c.b, strings.Join(each, ", "), med, lo, hi, target)
	}
	return b.String()
}

// spliceTCP puts the table of each BenchmarkTCPCompare output in files into
// the README at readme, between <!-- tcp-MTU:begin --> and
// <!-- tcp-MTU:end --> for the MTU the run used.
func spliceTCP(files []string, readme string) error {
	if readme == "" {
		return errors.New("-tcp needs -readme")
	}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return err
		}
		r, err := parseTCP(fh)
		fh.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		link := f
		if rel, err := filepath.Rel(filepath.Dir(readme), f); err == nil {
			link = filepath.ToSlash(rel)
		}
		md := tcpMarkdown(r, link)
		fmt.Print("\n" + md)
		if err := spliceReadme(readme, fmt.Sprintf("tcp-%d", r.MTU), md); err != nil {
			return err
		}
	}
	return nil
}
