//go:build linux

// Command dpdk-ref is the DPDK reference for virtif-xdp's benchmarks: it
// runs Debian's dpdk-testpmd with DPDK's af_xdp PMD on one queue of an
// interface (rxonly, txonly, or macswap for l2fwd), without hugepages, and
// reads testpmd's port counters through its interactive prompt, so it takes
// the flags of the other references and prints the same JSON line.
//
// testpmd's forwarding lcore busy-polls (DPDK has no sleeping mode); the
// main lcore, which serves the prompt, sleeps. The af_xdp PMD loads
// libxdp's default program, which redirects the whole queue to its socket,
// as xsk-c's does. "seconds" runs from the first to the last change of the
// receive counter seen (sampled every 20 ms) for the receiving modes, the
// forwarding time for txonly; "cpu_seconds" is testpmd's user+system time.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type result struct {
	System     string  `json:"system"`
	Mode       string  `json:"mode"`
	Packets    uint64  `json:"packets"`
	Bytes      uint64  `json:"bytes"`
	Seconds    float64 `json:"seconds"`
	PPS        float64 `json:"pps"`
	Wall       float64 `json:"wall_seconds"`
	RXPackets  uint64  `json:"rx_packets"`
	TXPackets  uint64  `json:"tx_packets"`
	RXMissed   uint64  `json:"rx_missed"`
	RXErrors   uint64  `json:"rx_errors"`
	TXErrors   uint64  `json:"tx_errors"`
	RXNoMbuf   uint64  `json:"rx_nombuf"`
	CPUSeconds float64 `json:"cpu_seconds"`
	Drops      uint64  `json:"drops"` // kept 0: the socket's drops are in the veth's rx_dropped
	EAL        string  `json:"eal"`
}

// stats is one "show port stats 0" block.
type stats struct {
	rxPackets, rxMissed, rxBytes, rxErrors, rxNoMbuf, txPackets, txErrors, txBytes uint64
}

var statRe = regexp.MustCompile(`([A-Za-z-]+):\s+(\d+)`)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "dpdk-ref:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		ifname  = flag.String("i", "", "interface to run on (required)")
		mode    = flag.String("m", "rxdrop", "rxdrop|txonly|l2fwd")
		queue   = flag.Uint("q", 0, "queue id")
		seconds = flag.Float64("d", 10, "seconds to run")
		size    = flag.Int("s", 64, "frame size for txonly, 60..1500")
		dst     = flag.String("dst", "ff:ff:ff:ff:ff:ff", "destination MAC of the txonly frames")
		_       = flag.String("src", "", "ignored: testpmd sends from the port's MAC")
		lcores  = flag.String("l", "", "EAL cores: main,forwarding (default 0,1, or 0,0 on one CPU)")
		testpmd = flag.String("testpmd", "dpdk-testpmd", "the testpmd binary")
	)
	flag.Parse()
	if *ifname == "" {
		return errors.New("-i IFNAME is required")
	}
	fwd := map[string]string{"rxdrop": "rxonly", "txonly": "txonly", "l2fwd": "macswap"}[*mode]
	if fwd == "" {
		return fmt.Errorf("-m %q: want rxdrop, txonly or l2fwd", *mode)
	}
	if *lcores == "" {
		*lcores = "0,1"
		if n := numCPU(); n < 2 {
			*lcores = "0"
		}
	}
	// Without hugepages (--no-huge: anonymous memory, IOVA as VA), without
	// PCI scanning, with a private runtime directory so runs never meet,
	// and a small mbuf pool (the default sizes one for 2 ports of 4 cores).
	eal := []string{"--no-huge", "-m", "512", "--no-pci", "--file-prefix", fmt.Sprintf("vxbench%d", os.Getpid()),
		"-l", *lcores, "--log-level", "lib.eal:error",
		"--vdev", fmt.Sprintf("net_af_xdp0,iface=%s,start_queue=%d,queue_count=1", *ifname, *queue)}
	app := []string{"-i", "--total-num-mbufs=16384", "--nb-cores=1", "--forward-mode=" + fwd,
		"--eth-peer=0," + *dst, "--txpkts=" + strconv.Itoa(*size), "--burst=64"}
	// testpmd's stdout is a pipe here: stdbuf makes its stdio flush each
	// line, so the answer to a command comes when asked for.
	cmd := exec.Command("stdbuf", append([]string{"-oL", *testpmd}, append(append(eal, "--"), app...)...)...)
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s (bench/deps.sh installs Debian's dpdk-dev): %w", *testpmd, err)
	}
	defer os.RemoveAll("/var/run/dpdk/" + fmt.Sprintf("vxbench%d", os.Getpid()))
	samples := make(chan stats, 1)
	exited := make(chan struct{})
	go func() { readStats(out, samples); close(exited) }()
	send := func(s string) error { _, err := io.WriteString(in, s+"\n"); return err }
	sample := func() (stats, error) {
		if err := send("show port stats 0"); err != nil {
			return stats{}, err
		}
		select {
		case s := <-samples:
			return s, nil
		case <-exited:
			return stats{}, errors.New("testpmd exited")
		case <-time.After(30 * time.Second):
			return stats{}, errors.New("testpmd does not answer")
		}
	}
	fail := func(err error) error {
		cmd.Process.Kill()
		cmd.Wait()
		return err
	}
	if err := send("start"); err != nil {
		return fail(err)
	}
	base, err := sample()
	if err != nil {
		return fail(err)
	}
	fmt.Fprintf(os.Stderr, "ready: dpdk-testpmd %s on %s queue %d\n", fwd, *ifname, *queue)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	start := time.Now()
	end := start.Add(time.Duration(*seconds * float64(time.Second)))
	var first, last time.Time
	cur := base
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
loop:
	for time.Now().Before(end) {
		select {
		case <-sig:
			break loop
		case <-tick.C:
		}
		s, err := sample()
		if err != nil {
			return fail(err)
		}
		if s.rxPackets != cur.rxPackets {
			now := time.Now()
			if first.IsZero() {
				first = now
			}
			last = now
		}
		cur = s
	}
	wall := time.Since(start).Seconds()
	_ = send("stop")
	final, err := sample()
	if err != nil {
		return fail(err)
	}
	_ = send("quit")
	in.Close()
	<-exited
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("testpmd: %w", err)
	}
	d := final.sub(base)
	r := result{System: "dpdk", Mode: *mode, RXPackets: d.rxPackets, TXPackets: d.txPackets,
		RXMissed: d.rxMissed, RXErrors: d.rxErrors, TXErrors: d.txErrors, RXNoMbuf: d.rxNoMbuf, Wall: wall,
		EAL: strings.Join(eal, " ")}
	r.CPUSeconds = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	switch *mode {
	case "rxdrop":
		r.Packets, r.Bytes = d.rxPackets, d.rxBytes
	default:
		r.Packets, r.Bytes = d.txPackets, d.txBytes
	}
	r.Seconds = wall
	if *mode != "txonly" {
		// Frames over more than one sample: first to last change seen,
		// one sample interval added for the frames before the first.
		if !first.IsZero() && last.After(first) {
			r.Seconds = last.Sub(first).Seconds() + 0.02
		}
	}
	if r.Seconds > 0 {
		r.PPS = float64(r.Packets) / r.Seconds
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

// readStats parses testpmd's output: each "NIC statistics for port" block,
// once its closing line of #s comes, is sent on samples.
func readStats(r io.Reader, samples chan<- stats) {
	sc := bufio.NewScanner(r)
	var s stats
	in := false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.Contains(line, "NIC statistics for port"):
			in, s = true, stats{}
			continue
		case in && strings.Contains(line, "##########"):
			in = false
			samples <- s
			continue
		case !in:
			continue
		}
		for _, m := range statRe.FindAllStringSubmatch(line, -1) {
			v, _ := strconv.ParseUint(m[2], 10, 64)
			switch m[1] {
			case "RX-packets":
				s.rxPackets = v
			case "RX-missed":
				s.rxMissed = v
			case "RX-bytes":
				s.rxBytes = v
			case "RX-errors":
				s.rxErrors = v
			case "RX-nombuf":
				s.rxNoMbuf = v
			case "TX-packets":
				s.txPackets = v
			case "TX-errors":
				s.txErrors = v
			case "TX-bytes":
				s.txBytes = v
			}
		}
	}
}

func (a stats) sub(b stats) stats {
	return stats{a.rxPackets - b.rxPackets, a.rxMissed - b.rxMissed, a.rxBytes - b.rxBytes, a.rxErrors - b.rxErrors,
		a.rxNoMbuf - b.rxNoMbuf, a.txPackets - b.txPackets, a.txErrors - b.txErrors, a.txBytes - b.txBytes}
}

func numCPU() int {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return 1
	}
	n := 0
	for _, r := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, ok := strings.Cut(r, "-")
		a, _ := strconv.Atoi(lo)
		if !ok {
			n++
			continue
		}
		z, _ := strconv.Atoi(hi)
		n += z - a + 1
	}
	return n
}
