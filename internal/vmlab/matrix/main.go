// Command matrix reads what internal/vmlab's guests left in the cache (one
// folder per kernel: guest.txt, and per step <device>.<attach>.<bind>.<what>
// its go test -v output and exit status) and writes the kernel matrix —
// kernel × device × attach mode × bind mode × package: tests passed,
// skipped and failed, with the failures' and skips' messages — as Markdown
// and JSON, and prints the Markdown.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Row is one step of one kernel.
type Row struct {
	Kernel  string `json:"kernel"`  // as fetch.sh names it: 6.1, 6.12, new
	Release string `json:"release"` // uname -r in the guest
	Device  string `json:"device"`
	Attach  string `json:"attach"`
	Bind    string `json:"bind"`
	What    string `json:"what"` // the package, or "demo"
	Passed  int    `json:"passed"`
	Skipped int    `json:"skipped"`
	Failed  int    `json:"failed"`
	// Exit is the step's exit status (124: killed by its timeout; -1: the
	// guest never reported it).
	Exit     int      `json:"exit"`
	Failures []Result `json:"failures,omitempty"`
	Skips    []Result `json:"skips,omitempty"`
}

// Result is a test that failed or skipped, with the first lines it logged.
type Result struct {
	Test    string `json:"test"`
	Message string `json:"message"`
}

// Matrix is the whole file.
type Matrix struct {
	Profile string         `json:"profile"`
	Date    string         `json:"date"`
	Seconds map[string]int `json:"guest_seconds"` // kernel → boot to power-off, tests included
	Rows    []Row          `json:"rows"`
}

var (
	runRE    = regexp.MustCompile(`^=== RUN\s+(\S+)$`)
	resultRE = regexp.MustCompile(`^--- (PASS|FAIL|SKIP): (\S+) \(`)
	// A row of the demo's check table: CHECK, RESULT, PATH, SEEN.
	checkRE = regexp.MustCompile(`^(\S.*?)\s{2,}(PASS|FAIL|SKIP)\s{2,}\S.*?\s{2,}(.*)$`)
)

// parseDemo counts the checks of virtif-xdp demo's table.
func parseDemo(r io.Reader, row *Row) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		m := checkRE.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		switch m[2] {
		case "PASS":
			row.Passed++
		case "FAIL":
			row.Failed++
			row.Failures = append(row.Failures, Result{m[1], m[3]})
		case "SKIP":
			row.Skipped++
			row.Skips = append(row.Skips, Result{m[1], m[3]})
		}
	}
}

// crash describes how a test binary died between verdicts: the panic and
// the first frame of this module under it, and the test that was running.
func crash(out []byte) string {
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if last := lines[len(lines)-1]; last == "PASS" || last == "FAIL" {
		return "" // it ended on its own (a child's panic is only a test's log)
	}
	running := ""
	for i, line := range lines {
		if m := runRE.FindStringSubmatch(line); m != nil {
			running = m[1]
		}
		if !strings.HasPrefix(line, "panic: ") && !strings.HasPrefix(line, "fatal error: ") {
			continue
		}
		msg := line
		for _, f := range lines[i+1:] {
			if strings.HasPrefix(f, "github.com/virtif-xdp/") {
				msg += " in " + f
				break
			}
		}
		return fmt.Sprintf("%s during %s", msg, running)
	}
	return ""
}

// parse counts the top-level tests of go test -v output.
func parse(r io.Reader, row *Row) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	logs := map[string][]string{}
	cur := ""
	for sc.Scan() {
		line := sc.Text()
		if m := runRE.FindStringSubmatch(line); m != nil {
			cur = m[1]
			continue
		}
		trimmed := strings.TrimLeft(line, " ")
		if m := resultRE.FindStringSubmatch(trimmed); m != nil {
			name := m[2]
			if trimmed != line || strings.Contains(name, "/") {
				continue // a subtest: its parent carries the verdict
			}
			msg := strings.Join(logs[name], " | ")
			switch m[1] {
			case "PASS":
				row.Passed++
			case "FAIL":
				row.Failed++
				row.Failures = append(row.Failures, Result{name, msg})
			case "SKIP":
				row.Skipped++
				row.Skips = append(row.Skips, Result{name, msg})
			}
			continue
		}
		if cur != "" && strings.HasPrefix(line, "    ") {
			top, _, _ := strings.Cut(cur, "/")
			if len(logs[top]) < 4 {
				logs[top] = append(logs[top], strings.TrimSpace(line))
			}
		}
	}
}

func main() {
	profile := flag.String("profile", "full", "full or smoke: names the files")
	results := flag.String("results", "", "the folder of one folder per kernel (default: the cache's out/PROFILE)")
	out := flag.String("out", "bench/results", "folder for kernels[-smoke].{md,json}")
	flag.Parse()
	if *results == "" {
		*results = filepath.Join(envOr("VMLAB_CACHE", "/var/cache/virtif-xdp"), "out", *profile)
	}
	m := Matrix{Profile: *profile, Date: time.Now().UTC().Format(time.RFC3339), Seconds: map[string]int{}}
	for _, k := range flag.Args() {
		rows, secs, err := readKernel(filepath.Join(*results, k), k)
		if err != nil {
			fmt.Fprintln(os.Stderr, "matrix:", err)
			os.Exit(1)
		}
		m.Rows = append(m.Rows, rows...)
		m.Seconds[k] = secs
	}
	base := "kernels"
	if *profile != "full" {
		base += "-" + *profile
	}
	js, _ := json.MarshalIndent(m, "", "  ")
	md := markdown(&m)
	if err := errors.Join(
		os.WriteFile(filepath.Join(*out, base+".json"), append(js, '\n'), 0o644),
		os.WriteFile(filepath.Join(*out, base+".md"), []byte(md), 0o644),
	); err != nil {
		fmt.Fprintln(os.Stderr, "matrix:", err)
		os.Exit(1)
	}
	fmt.Print(md)
	for _, r := range m.Rows {
		if r.Failed > 0 || r.Exit != 0 {
			os.Exit(1)
		}
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func readKernel(dir, kernel string) ([]Row, int, error) {
	plan, err := os.ReadFile(filepath.Join(dir, "plan"))
	if err != nil {
		return nil, 0, fmt.Errorf("kernel %s never ran: %w", kernel, err)
	}
	release := "(did not boot)"
	if g, err := os.ReadFile(filepath.Join(dir, "guest.txt")); err == nil {
		if first, _, _ := strings.Cut(string(g), "\n"); strings.HasPrefix(first, "kernel: ") {
			release = strings.TrimPrefix(first, "kernel: ")
		}
	}
	secs := 0
	if b, err := os.ReadFile(filepath.Join(dir, "seconds")); err == nil {
		secs, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	var rows []Row
	for _, line := range strings.Split(string(plan), "\n") {
		step, _, _ := strings.Cut(line, " ")
		parts := strings.SplitN(step, ".", 4)
		if len(parts) != 4 || strings.HasPrefix(line, "NIC ") || strings.HasPrefix(line, "KDIR=") {
			continue
		}
		row := Row{Kernel: kernel, Release: release, Device: parts[0], Attach: parts[1], Bind: parts[2], What: parts[3], Exit: -1}
		if b, err := os.ReadFile(filepath.Join(dir, step+".rc")); err == nil {
			row.Exit, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		if out, err := os.ReadFile(filepath.Join(dir, step+".out")); err == nil {
			if row.What == "demo" {
				parseDemo(bytes.NewReader(out), &row)
			} else {
				parse(bytes.NewReader(out), &row)
			}
			if msg := crash(out); msg != "" {
				row.Failed++
				row.Failures = append(row.Failures, Result{"(crash)", msg})
			} else if row.Exit != 0 && row.Failed == 0 {
				// Died without a verdict: say how it ended.
				row.Failed++
				row.Failures = append(row.Failures, Result{"(exit)", fmt.Sprintf("exit %d: %s", row.Exit, lastLines(out, 3))})
			}
		}
		rows = append(rows, row)
	}
	return rows, secs, nil
}

func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

func markdown(m *Matrix) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Kernel matrix (%s, %s)\n\n", m.Profile, m.Date)
	b.WriteString("`make test-kernels` (internal/vmlab): Debian's kernels under QEMU (TCG), integration tests on virtio-net NIC pairs.\n")
	b.WriteString("Devices: `virtio-net` = transitional virtio-net-pci as QEMU makes it by default (one queue; labs of more queues use a 4-queue pair, mq=on); ")
	b.WriteString("`virtio-net-zc` = modern-only with `iommu_platform=on` (can bind zero-copy). Attach and bind as the link string asked (auto: the default).\n\n")
	b.WriteString("| kernel | release | device | attach | bind | tests of | passed | skipped | failed |\n|---|---|---|---|---|---|---:|---:|---:|\n")
	for _, r := range m.Rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %d | %d | %d |\n", r.Kernel, r.Release, r.Device, r.Attach, r.Bind, r.What, r.Passed, r.Skipped, r.Failed)
	}
	ks := make([]string, 0, len(m.Seconds))
	for k := range m.Seconds {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	b.WriteString("\nGuest time (boot to power-off):")
	for _, k := range ks {
		fmt.Fprintf(&b, " %s %d s;", k, m.Seconds[k])
	}
	b.WriteString("\n")
	for _, r := range m.Rows {
		if len(r.Failures)+len(r.Skips) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n## %s %s %s bind=%s: %s\n\n", r.Kernel, r.Device, r.Attach, r.Bind, r.What)
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "- FAIL %s: %s\n", f.Test, clip(f.Message))
		}
		for _, s := range r.Skips {
			fmt.Fprintf(&b, "- skip %s: %s\n", s.Test, clip(s.Message))
		}
	}
	return b.String()
}

func clip(s string) string {
	s = strings.ReplaceAll(s, "`", "'")
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return s
}
