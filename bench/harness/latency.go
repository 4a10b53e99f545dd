//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/bench/ref/reftest"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
)

// The latency measure: the peer's kernel sends one small request and waits
// for the answer, latCount times with a random pause of up to latGap
// between an answer and the next request (so the responder both stays
// busy and has to wake up), in a fresh lab per run. Requests: ICMP echo
// and UDP echo to the vif's userspace stack (virtif-xdp run) or to the host
// kernel's own address on the same veth, and a raw frame (a local
// EtherType) through virtif-xdp's l2fwd or C's on libxdp, which send it
// back with the MACs swapped.
var (
	cpuRate  int
	latCount int
	latGap   time.Duration
)

// vifAddr is the vif's address in the latency runs.
var vifAddr = netip.MustParsePrefix("198.18.0.3/24")

// pingPongType is the EtherType of the raw ping-pong frames (IEEE's local
// experimental one: no stack on either side takes it).
const pingPongType = 0x88b5

// latSystem is one latency run: a request kind and who answers it.
type latSystem struct {
	Kind   string `json:"kind"`   // icmp, udp, l2fwd
	Target string `json:"target"` // virtif-xdp, kernel, xsk-c
	Wait   string `json:"wait"`   // rxwait=... or busypoll=... for virtif-xdp
	bin    string
}

func (l latSystem) key() string {
	k := "lat-" + l.Kind + " " + l.Target
	if l.Wait != "" {
		k += " " + l.Wait
	}
	return k
}

type latRecord struct {
	latSystem
	Round int `json:"round"`
	N     int `json:"n"`
	Lost  int `json:"lost"`
	// Percentiles and extremes of the round trip, in microseconds.
	P50, P99, P999, Max, Mean float64
	Error                     string `json:"error,omitempty"`
}

type latSummary struct {
	latSystem
	Note string `json:"note"`
	// Medians over the rounds of each run's percentiles, µs.
	P50, P99, P999, Max float64
	Runs, Failed        int
}

// latSystems lists the latency runs: virtif-xdp in three wait modes, and
// the kernel (or C, for raw frames) answering the same requests.
func latSystems(vx string, xskC string) []latSystem {
	waits := []string{"rxwait=poll", "rxwait=spin", "busypoll=64"}
	var out []latSystem
	for _, kind := range []string{"icmp", "udp", "l2fwd"} {
		for _, w := range waits {
			out = append(out, latSystem{Kind: kind, Target: "virtif-xdp", Wait: w, bin: vx})
		}
		if kind == "l2fwd" {
			out = append(out, latSystem{Kind: kind, Target: "xsk-c", bin: xskC})
		} else {
			out = append(out, latSystem{Kind: kind, Target: "kernel"})
		}
	}
	return out
}

// measureLatency makes a lab, starts the responder on the host end and
// probes it from the peer's kernel.
func measureLatency(l latSystem, round int) (rec latRecord) {
	rec = latRecord{latSystem: l, Round: round}
	samples, lost, err := latencyRun(l)
	if err != nil {
		rec.Error = err.Error()
		return rec
	}
	rec.N, rec.Lost = len(samples), lost
	if len(samples) == 0 {
		rec.Error = "no answer"
		return rec
	}
	slices.Sort(samples)
	pct := func(p float64) float64 {
		i := min(len(samples)-1, int(p*float64(len(samples))))
		return float64(samples[i]) / 1e3
	}
	rec.P50, rec.P99, rec.P999 = pct(0.50), pct(0.99), pct(0.999)
	rec.Max = float64(samples[len(samples)-1]) / 1e3
	var sum time.Duration
	for _, s := range samples {
		sum += s
	}
	rec.Mean = float64(sum) / float64(len(samples)) / 1e3
	return rec
}

func latencyRun(l latSystem) (samples []time.Duration, lost int, err error) {
	lab, err := netlab.New(netlab.Options{})
	if err != nil {
		return nil, 0, err
	}
	defer func() { err = errors.Join(err, lab.Close()) }()
	for side := range 2 {
		if _, err := lab.Run(side, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"); err != nil {
			return nil, 0, err
		}
	}
	// The peer's kernel finishes its checksums: through a veth they would
	// reach XDP unfinished, and the vif's stack would drop them as corrupt.
	if err := lab.SetTxChecksum(netlab.Peer, false); err != nil {
		return nil, 0, err
	}
	// Ping sockets (SOCK_DGRAM, IPPROTO_ICMP) for root in the peer.
	if out, err := lab.Run(netlab.Peer, "sysctl", "-q", "-w", "net.ipv4.ping_group_range=0 0"); err != nil {
		return nil, 0, fmt.Errorf("%w: %s", err, out)
	}
	dst := lab.Addr[netlab.Host].Addr()
	stop := func() error { return nil }
	switch {
	case l.Target == "kernel" && l.Kind == "udp":
		if stop, err = kernelUDPEcho(lab); err != nil {
			return nil, 0, err
		}
	case l.Target == "kernel":
	case l.Kind == "l2fwd":
		args := []string{"-i", lab.Link[netlab.Host], "-m", "l2fwd", "-d", "3600"}
		if l.Target == "virtif-xdp" {
			args = []string{"l2fwd", "--link", "xdp:" + lab.Link[netlab.Host] + "," + l.Wait,
				"--mac", reftest.GenDst.String(), "--duration", "0"}
		}
		if stop, err = startResponder(lab, l.bin, args, "ready:"); err != nil {
			return nil, 0, err
		}
	default:
		dst = vifAddr.Addr()
		args := []string{"run", "--link", "xdp:" + lab.Link[netlab.Host] + "," + l.Wait, "--addr", vifAddr.String(),
			"--echo", "0", "--http", "off", "--udp-echo", "7", "--probe", "0", "--duration", "0"}
		if stop, err = startResponder(lab, l.bin, args, "Ctrl-C stops"); err != nil {
			return nil, 0, err
		}
	}
	defer func() { err = errors.Join(err, stop()) }()
	p, err := newProber(lab, l.Kind, dst)
	if err != nil {
		return nil, 0, err
	}
	defer p.close()
	// Warm up (the neighbour entries, the responder's first wakeups);
	// a responder that never answers fails the run.
	ok := false
	for i := 0; i < 200 && !ok; i++ {
		_, ok = p.roundTrip(uint64(1<<40 + i))
	}
	if !ok {
		return nil, 0, fmt.Errorf("%s: no answer to 200 requests", l.key())
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for i := range latCount {
		if d, ok := p.roundTrip(uint64(i)); ok {
			samples = append(samples, d)
		} else {
			lost++
		}
		if latGap > 0 {
			time.Sleep(rand.N(latGap))
		}
	}
	return samples, lost, nil
}

// startResponder runs a program on the host end and waits for its line
// want (on stdout or stderr); stop ends it with SIGTERM.
func startResponder(lab *netlab.Lab, bin string, args []string, want string) (stop func() error, err error) {
	cmd := lab.Command(netlab.Host, bin, args...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	var log bytes.Buffer
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		seen := false
		for sc.Scan() {
			log.Write(sc.Bytes())
			log.WriteByte('\n')
			if !seen && strings.Contains(sc.Text(), want) {
				seen = true
				close(ready)
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); pw.Close() }()
	select {
	case <-ready:
	case err := <-exited:
		return nil, fmt.Errorf("%s exited before %q: %v", strings.Join(cmd.Args, " "), want, err)
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-exited
		return nil, fmt.Errorf("%s: no %q within 60 s", strings.Join(cmd.Args, " "), want)
	}
	return func() error {
		_ = cmd.Process.Signal(unix.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("%s did not stop on SIGTERM", cmd.Args[0])
		}
		return nil
	}, nil
}

// kernelUDPEcho answers UDP on port 7 of the host end's address from a
// kernel socket, one thread in blocking recvfrom/sendto.
func kernelUDPEcho(lab *netlab.Lab) (stop func() error, err error) {
	var fd int
	err = lab.Do(netlab.Host, func() error {
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrInet4{Port: 7, Addr: lab.Addr[netlab.Host].Addr().As4()})
	})
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	var stopped atomic.Bool
	go func() {
		defer close(done)
		runtime.LockOSThread()
		buf := make([]byte, 2048)
		for !stopped.Load() {
			n, from, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				if errors.Is(err, unix.EINTR) {
					continue
				}
				return
			}
			if from == nil { // woken by the shutdown
				continue
			}
			_ = unix.Sendto(fd, buf[:n], 0, from)
		}
	}()
	return func() error {
		stopped.Store(true)
		_ = unix.Shutdown(fd, unix.SHUT_RDWR)
		<-done
		return unix.Close(fd)
	}, nil
}

// prober is the peer's side: one socket, one request at a time.
type prober struct {
	kind string
	fd   int
	req  []byte
	buf  []byte
}

func newProber(lab *netlab.Lab, kind string, dst netip.Addr) (*prober, error) {
	p := &prober{kind: kind, buf: make([]byte, 4096)}
	err := lab.Do(netlab.Peer, func() error {
		var err error
		switch kind {
		case "icmp":
			if p.fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP); err != nil {
				return fmt.Errorf("ping socket: %w", err)
			}
			p.req = make([]byte, 8+16) // type 8 (echo request), code 0; the kernel sets the id and checksum
			p.req[0] = 8
			return unix.Connect(p.fd, &unix.SockaddrInet4{Addr: dst.As4()})
		case "udp":
			if p.fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
				return err
			}
			p.req = make([]byte, 16)
			return unix.Connect(p.fd, &unix.SockaddrInet4{Port: 7, Addr: dst.As4()})
		default: // a raw frame to the forwarder's MAC
			if p.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(pingPongType))); err != nil {
				return err
			}
			p.req = make([]byte, 60)
			copy(p.req[0:6], reftest.GenDst)
			copy(p.req[6:12], lab.MAC[netlab.Peer])
			binary.BigEndian.PutUint16(p.req[12:14], pingPongType)
			return unix.Bind(p.fd, &unix.SockaddrLinklayer{Protocol: htons(pingPongType), Ifindex: lab.Index[netlab.Peer]})
		}
	})
	if err != nil {
		if p.fd > 0 {
			unix.Close(p.fd)
		}
		return nil, err
	}
	tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
	if err := unix.SetsockoptTimeval(p.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(p.fd)
		return nil, err
	}
	return p, nil
}

// seqAt is where the sequence number sits in a request and its answer.
func (p *prober) seqAt() int {
	switch p.kind {
	case "icmp":
		return 8
	case "udp":
		return 0
	}
	return 14
}

// roundTrip sends request seq and waits for its answer (others, late
// answers to earlier requests, are skipped); false after the timeout.
func (p *prober) roundTrip(seq uint64) (time.Duration, bool) {
	at := p.seqAt()
	binary.BigEndian.PutUint64(p.req[at:], seq)
	start := time.Now()
	var err error
	if p.kind == "l2fwd" {
		_, err = unix.Write(p.fd, p.req)
	} else {
		err = unix.Send(p.fd, p.req, 0)
	}
	if err != nil {
		return 0, false
	}
	for {
		n, from, err := unix.Recvfrom(p.fd, p.buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return 0, false
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if p.kind == "icmp" && (n < 16 || p.buf[0] != 0) { // not an echo reply
			continue
		}
		if n >= at+8 && binary.BigEndian.Uint64(p.buf[at:]) == seq {
			return time.Since(start), true
		}
	}
}

func (p *prober) close() { unix.Close(p.fd) }

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// latSummaries takes, for each latency run, the median over the rounds of
// each percentile.
func latSummaries(lats []latSystem, runs []latRecord, rounds int) []latSummary {
	var out []latSummary
	for _, l := range lats {
		sm := latSummary{latSystem: l}
		var p50, p99, p999, mx []float64
		for _, r := range runs {
			if r.latSystem.key() != l.key() {
				continue
			}
			sm.Runs++
			if r.Error != "" {
				sm.Failed++
				continue
			}
			p50, p99, p999, mx = append(p50, r.P50), append(p99, r.P99), append(p999, r.P999), append(mx, r.Max)
		}
		sm.P50, _, _ = stats(p50)
		sm.P99, _, _ = stats(p99)
		sm.P999, _, _ = stats(p999)
		sm.Max, _, _ = stats(mx)
		out = append(out, sm)
	}
	return out
}

// latRatios compares virtif-xdp's busy-poll round trips with the kernel's,
// round by round: the goals (p50 ≤ 1.5×, p99 ≤ 2×), and the other
// wait modes for reference.
func latRatios(runs []latRecord, rounds int) []ratio {
	find := func(kind, target, wait string, round int) *latRecord {
		for i, r := range runs {
			if r.Kind == kind && r.Target == target && r.Wait == wait && r.Round == round && r.Error == "" {
				return &runs[i]
			}
		}
		return nil
	}
	var out []ratio
	for _, kind := range []string{"icmp", "udp", "l2fwd"} {
		ref := "kernel"
		if kind == "l2fwd" {
			ref = "xsk-c"
		}
		for _, wait := range []string{"busypoll=64", "rxwait=spin", "rxwait=poll"} {
			for _, pc := range []struct {
				name   string
				get    func(*latRecord) float64
				target float64
			}{{"p50", func(r *latRecord) float64 { return r.P50 }, 1.5}, {"p99", func(r *latRecord) float64 { return r.P99 }, 2}} {
				var v []float64
				for round := range rounds {
					a, b := find(kind, "virtif-xdp", wait, round), find(kind, ref, "", round)
					if a != nil && b != nil && pc.get(b) > 0 {
						v = append(v, pc.get(a)/pc.get(b))
					}
				}
				if len(v) == 0 {
					continue
				}
				r := ratio{Name: fmt.Sprintf("%s round trip %s, virtif-xdp %s / %s", kind, pc.name, wait, ref)}
				if wait == "busypoll=64" && kind != "l2fwd" {
					r.Target = pc.target
				}
				r.Median, r.Min, r.Max = stats(v)
				r.Met = r.Median <= r.Target
				out = append(out, r)
			}
		}
	}
	return out
}

func latMarkdown(b *strings.Builder, rep report) {
	if len(rep.Latency) == 0 {
		return
	}
	fmt.Fprintf(b, "\nRequest/response round trips from the peer's kernel (%d per run, a random pause of up to %s between an answer and the next request; medians over the rounds of each run's percentiles, µs):\n\n", latCount, latGap)
	b.WriteString("| request | answered by | wait mode | p50 | p99 | p99.9 | max | runs (failed) |\n|---|---|---|---|---|---|---|---|\n")
	for _, s := range rep.Latency {
		wait := s.Wait
		if wait == "" {
			wait = "—"
		}
		fmt.Fprintf(b, "| %s | %s | %s | %.1f | %.1f | %.1f | %.1f | %d (%d) |\n", s.Kind, latTarget(s), wait, s.P50, s.P99, s.P999, s.Max, s.Runs, s.Failed)
	}
	rs := latRatios(rep.LatRuns, rep.Rounds)
	if len(rs) == 0 {
		return
	}
	b.WriteString("\n| round-trip ratio (per round) | median | min | max | target |\n|---|---|---|---|---|\n")
	for _, r := range rs {
		target := "—"
		if r.Target > 0 {
			target = fmt.Sprintf("≤ %.1f× %s", r.Target, map[bool]string{true: "met", false: "missed"}[r.Met])
		}
		fmt.Fprintf(b, "| %s | %.2f× | %.2f× | %.2f× | %s |\n", r.Name, r.Median, r.Min, r.Max, target)
	}
}

func latTarget(s latSummary) string {
	switch {
	case s.Target == "kernel":
		return "the host kernel (its own address on the same veth" + map[bool]string{true: ", a UDP socket echoing", false: ""}[s.Kind == "udp"] + ")"
	case s.Target == "xsk-c":
		return "C on libxdp, l2fwd (busy loop)"
	case s.Kind == "l2fwd":
		return "virtif-xdp l2fwd"
	}
	return "virtif-xdp run (gVisor's stack on the vif)"
}
