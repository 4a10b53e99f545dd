//go:build linux

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Two rounds at MTU 9000, one receiver that cannot take it, as
// BenchmarkTCPCompare prints them (go test's lines included).
const tcpOut = `MTU 9000, 268435456 bytes per run, 2 rounds, started 2026-12-08T00:25:52Z
netstack-xdp-nogro not possible at MTU 9000: MTU not possible: vif0: MTU 9000 above 3498
round 0 netstack-xdp         1.00 Gbit/s
round 0 netstack-fdbased     0.50 Gbit/s
round 0 kernel               2.00 Gbit/s
round 0 ratio netstack-xdp/kernel 0.50  netstack-xdp-nogro/kernel NaN  netstack-xdp/netstack-fdbased 2.00
round 1 netstack-xdp         3.00 Gbit/s
round 1 netstack-fdbased     1.00 Gbit/s
round 1 kernel               2.00 Gbit/s
round 1 ratio netstack-xdp/kernel 1.50  netstack-xdp-nogro/kernel NaN  netstack-xdp/netstack-fdbased 3.00
netstack-xdp       median   3.00 Gbit/s  min   1.00  max   3.00
goos: linux
goarch: amd64
pkg: github.com/virtif-xdp/virtif-xdp/netstack
cpu: AMD EPYC
BenchmarkTCPCompare-2   	       1	28159961876 ns/op	         2.000 kernel-Gbit/s
PASS
ok  	github.com/virtif-xdp/virtif-xdp/netstack	28.286s
`

func TestTCPMarkdown(t *testing.T) {
	r, err := parseTCP(strings.NewReader(tcpOut))
	if err != nil {
		t.Fatal(err)
	}
	if r.MTU != 9000 || r.Bytes != 256<<20 || r.Rounds != 2 || r.CPU != "AMD EPYC" || r.Started != "2026-12-08T00:25:52Z" {
		t.Fatalf("parsed %+v", r)
	}
	md := tcpMarkdown(r, "bench/results/tcp9000.txt")
	for _, want := range []string{
		"Measured 2026-12-08 on AMD EPYC, MTU 9000, 256 MiB per run, 2 interleaved rounds ([`bench/results/tcp9000.txt`](bench/results/tcp9000.txt)):\n",
		// Medians of two rounds are their mean, as in the packet tables.
		"| netstack-xdp | 2.00 | 1.00 | 3.00 | 2 | gVisor's",
		"| netstack-xdp-nogro | not possible at MTU 9000 | | | 0 | the same without GRO (`EndpointOptions.NoGRO`); MTU not possible: vif0: MTU 9000 above 3498 |",
		"| netstack-fdbased | 0.75 | 0.50 | 1.00 | 2 |",
		"| kernel | 2.00 | 2.00 | 2.00 | 2 |",
		"| netstack-xdp / kernel | 0.50, 1.50 | 1.00× | 0.50× | 1.50× | ≥ 1.0× met |",
		"| netstack-xdp / netstack-fdbased | 2.00, 3.00 | 2.50× | 2.00× | 3.00× | ≥ 1.0× met |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("table lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "netstack-xdp-nogro / kernel") {
		t.Errorf("a ratio for a receiver that never ran:\n%s", md)
	}
	if i, j := strings.Index(md, "| netstack-xdp |"), strings.Index(md, "| kernel |"); i < 0 || j < i {
		t.Errorf("receivers not in the order they ran:\n%s", md)
	}

	// A round in which the kernel ran slower makes the goal missed.
	r.Gbps["kernel"][1] = 6
	if md := tcpMarkdown(r, "x"); !strings.Contains(md, "| netstack-xdp / kernel | 0.50, 0.50 | 0.50× | 0.50× | 0.50× | ≥ 1.0× missed |") {
		t.Errorf("goal not missed:\n%s", md)
	}
}

func TestTCPParseRefuses(t *testing.T) {
	failed := "MTU 1500, 268435456 bytes per run, 3 rounds, started 2026-12-08T00:22:16Z\n" +
		"--- FAIL: BenchmarkTCPCompare\n" +
		"    bench_test.go:371: netstack-xdp round 0: vif0: create xdp backend: boom\n" +
		"FAIL\nexit status 1\n"
	for name, in := range map[string]string{
		"failed":   failed,
		"empty":    "",
		"no round": "MTU 1500, 268435456 bytes per run, 3 rounds, started 2026-12-08T00:22:16Z\nPASS\n",
		"no MTU":   "round 0 kernel 2.00 Gbit/s\n",
	} {
		if _, err := parseTCP(strings.NewReader(in)); err == nil {
			t.Errorf("%s: parsed", name)
		} else if name == "failed" && !strings.Contains(err.Error(), "create xdp backend: boom") {
			t.Errorf("failed: the error does not say why: %v", err)
		}
	}
}

// spliceTCP puts each run's table between the markers of its MTU and
// leaves the rest of the README, the other markers' contents included, as
// it was.
func TestSpliceTCP(t *testing.T) {
	dir := t.TempDir()
	readme := filepath.Join(dir, "README.md")
	before := "# x\n<!-- bench:begin -->\npackets\n<!-- bench:end -->\n" +
		"TCP:\n<!-- tcp-1500:begin -->\nold 1500\n<!-- tcp-1500:end -->\n" +
		"and\n<!-- tcp-9000:begin -->\nold 9000\n<!-- tcp-9000:end -->\nprose\n"
	if err := os.WriteFile(readme, []byte(before), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "results", "tcp9000.txt")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, []byte(tcpOut), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := spliceTCP([]string{out}, readme); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := parseTCP(strings.NewReader(tcpOut))
	want := strings.Replace(before, "\nold 9000\n", "\n"+tcpMarkdown(r, "results/tcp9000.txt"), 1)
	if string(b) != want {
		t.Fatalf("README after the splice:\n%s\nwant:\n%s", b, want)
	}
	// Again: the markers stay, so make bench can run any number of times.
	if err := spliceTCP([]string{out}, readme); err != nil {
		t.Fatal(err)
	}
	if b2, _ := os.ReadFile(readme); string(b2) != want {
		t.Fatalf("a second splice changed it:\n%s", b2)
	}

	if err := os.WriteFile(readme, []byte("no markers\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := spliceTCP([]string{out}, readme); err == nil || !strings.Contains(err.Error(), "<!-- tcp-9000:begin -->") {
		t.Fatalf("README without the markers: %v", err)
	}
	if err := spliceTCP([]string{out}, ""); err == nil {
		t.Fatal("no README: no error")
	}
}

// The results say which generator ran: where the kernel refuses live
// frames every row was AF_PACKET's, and the note must not claim otherwise.
func TestMarkdownNamesGenerator(t *testing.T) {
	rep := report{Machine: map[string]string{}}
	if md := markdown(rep); !strings.Contains(md, "BPF_PROG_RUN live frames") || strings.Contains(md, "for every row") {
		t.Errorf("live generator: %q", md)
	}
	rep.LiveRefused = "the kernel refuses live-frame BPF_PROG_RUN"
	md := markdown(rep)
	if !strings.Contains(md, "AF_PACKET sendmmsg from the peer's kernel for every row, skb gen or not: the kernel refuses live-frame BPF_PROG_RUN.") || strings.Contains(md, "BPF_PROG_RUN live frames") {
		t.Errorf("refused: %q", md)
	}
}
