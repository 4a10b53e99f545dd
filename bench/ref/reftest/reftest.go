//go:build linux

// Package reftest builds and runs the benchmark's reference programs
// (bench/ref/xsk-c, bench/ref/gvisor, bench/ref/afpacket) in a netlab lab
// with trafficgen's live generator on the peer end, and reads the JSON line
// each prints. The smoke tests use it; so can the bench harness.
package reftest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
)

// Result is the JSON line a reference prints. Extra holds every field,
// including the drop counters each reference adds.
type Result struct {
	System  string  `json:"system"`
	Mode    string  `json:"mode"`
	Packets uint64  `json:"packets"`
	Bytes   uint64  `json:"bytes"`
	Seconds float64 `json:"seconds"`
	PPS     float64 `json:"pps"`

	Extra map[string]any `json:"-"`
	// Generated is how many frames the generator sent during the run,
	// VethDropped how many of them the host's veth end dropped before any
	// XDP program saw them (its ring was full), Arrived how many frames
	// the peer's sink counted (txonly, l2fwd).
	Generated, VethDropped, Arrived uint64
	// CPUSeconds is the user+system CPU time the program and its children
	// used while the generator ran (from /proc/PID/stat; 0 for XDP_DROP).
	CPUSeconds float64
	// Generator is the generator that ran: "live", or "packet" (asked
	// for, or where the kernel refuses live frames).
	Generator string `json:"generator"`
}

// GenDst is the destination MAC of the generated frames: a unicast MAC that
// is not the host's, so the host stack drops them early, while XDP programs
// and AF_PACKET still see them all.
var GenDst = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}

// settleSeconds is how long a receiving reference runs on after the
// generator stops.
const settleSeconds = 1.0

// Unaccounted returns, for a receiving run, the frames the generator sent
// that neither the reference counted as received nor any counter we read
// as dropped; 0 means every frame is accounted for.
//
// For the XDP receivers (xsk-c, gvisor, the XDP_DROP sink) the identity is
// Generated = received + VethDropped: veth counts a frame its XDP program
// could not redirect (the socket's RX ring full, its fill ring empty) in
// rx_dropped too, so the socket's own drop counters are a part of
// VethDropped, not an addition to it. AF_PACKET adds its ring's drops.
func (r Result) Unaccounted() int64 {
	num := func(k string) int64 {
		v, _ := r.Extra[k].(float64)
		return int64(v)
	}
	received := int64(r.Packets)
	if r.Mode == "l2fwd" {
		received = num("rx_packets")
	}
	return int64(r.Generated) - received - num("drops") - int64(r.VethDropped)
}

// ParseResult reads the last non-empty line of out as a reference's JSON;
// it needs at least "packets" and a positive "seconds".
func ParseResult(out []byte) (Result, error) {
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	last := lines[len(lines)-1]
	var r Result
	if err := json.Unmarshal(last, &r); err != nil {
		return r, fmt.Errorf("reftest: parse %q: %w", last, err)
	}
	if err := json.Unmarshal(last, &r.Extra); err != nil {
		return r, fmt.Errorf("reftest: parse %q: %w", last, err)
	}
	if _, ok := r.Extra["packets"]; !ok || r.Seconds <= 0 {
		return r, fmt.Errorf("reftest: incomplete result %q", last)
	}
	return r, nil
}

// Dir is bench/ref, found from this source file.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// ErrCToolchain says the C references could not be built for want of
// packages; bench/deps.sh installs them.
var ErrCToolchain = errors.New("the C references need gcc, make, pkg-config, libxdp-dev and libbpf-dev: run bench/deps.sh as root")

// BuildC runs make in bench/ref/<name> and returns the binary's path.
func BuildC(name, binary string) (string, error) {
	dir := filepath.Join(Dir(), name)
	for _, tool := range []string{"make", "gcc", "pkg-config"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", fmt.Errorf("reftest: build %s: %w (%w)", name, ErrCToolchain, err)
		}
	}
	out, err := exec.Command("make", "-C", dir, "-s").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("reftest: make -C %s: %w: %s\n%w", dir, err, out, ErrCToolchain)
	}
	return filepath.Join(dir, binary), nil
}

// BuildGvisor builds bench/ref/gvisor into dir.
func BuildGvisor(dir string) (string, error) { return BuildGo(dir, "gvisor") }

// BuildGo builds the Go reference bench/ref/<name> into dir as <name>-ref.
func BuildGo(dir, name string) (string, error) {
	bin := filepath.Join(dir, name+"-ref")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = filepath.Join(Dir(), name)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("reftest: go build bench/ref/%s: %w: %s", name, err, out)
	}
	return bin, nil
}

// Run describes one measured run.
type Run struct {
	Binary  string   // the reference; empty measures the kernel's XDP_DROP on the host end
	Mode    string   // rxdrop, txonly, l2fwd
	Args    []string // extra flags
	Seconds float64
	Size    int // frame size, default 64
	// HostPass attaches an XDP_PASS sink on the host end (AF_PACKET needs
	// XDP there for veth to take the generator's frames).
	HostPass bool
	// CPUs, if set, pins the reference with taskset -c (e.g. "1").
	CPUs string
	// Generator is "live" (default: BPF_PROG_RUN live frames, XDP_TX on
	// the peer) or "packet" (AF_PACKET sendmmsg: skb-borne frames, and
	// the default where the kernel refuses live frames).
	Generator string
	// GenCPU, if set, pins the generator (and so the receiving veth's
	// NAPI) to that CPU (e.g. "0").
	GenCPU string
	// Rate, if > 0, paces the generator to that many frames a second
	// (trafficgen's SendPaced) instead of sending flat out.
	Rate int

	// Argv, if set, builds the command line in place of the references'
	// flags, so another program (virtif-xdp's own rxdrop/txonly/l2fwd) is
	// measured the same way. Its last stdout line must be a JSON object
	// with at least packets and seconds; System names it in the result.
	Argv   func(Args) []string
	System string
	// WaitXDP starts the generator once an XDP program is attached to the
	// host end, for programs that do not print "ready:" on stderr.
	WaitXDP bool
}

// Args is what Run.Argv gets to build a command line from.
type Args struct {
	Ifname   string           // the host end, where the program runs
	Mode     string           // rxdrop, txonly, l2fwd
	Seconds  float64          // how long the program should run
	Size     int              // frame size for sending modes
	Dst, Src net.HardwareAddr // the peer's and the host end's MAC
}

// Measure builds a lab, starts the reference on the host end (and the live
// generator on the peer for rxdrop and l2fwd, a counting sink on the peer
// for txonly and l2fwd), and returns its result.
func Measure(r Run) (res Result, err error) {
	if r.Size == 0 {
		r.Size = 64
	}
	if r.Generator == "" {
		r.Generator = "live"
		if trafficgen.LiveAvailable() != nil {
			// A kernel that refuses live frames: skb-borne ones, from
			// the peer's kernel, for every system alike.
			r.Generator = "packet"
		}
	}
	res.Generator = r.Generator
	lab, err := netlab.New(netlab.Options{})
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, lab.Close()) }()
	// No IPv6: the kernel's own neighbour discovery would add frames the
	// generator did not send.
	for side := range 2 {
		if _, err := lab.Run(side, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"); err != nil {
			return res, err
		}
	}

	rx := r.Mode != "txonly"
	var hostSink, peerSink *trafficgen.Sink
	if r.Binary == "" || r.HostPass {
		action := trafficgen.SinkDrop
		if r.HostPass {
			action = trafficgen.SinkPass
		}
		if hostSink, err = trafficgen.SinkIn(lab, netlab.Host, action); err != nil {
			return res, err
		}
		defer hostSink.Close()
	}
	if !rx || r.Mode == "l2fwd" {
		if peerSink, err = trafficgen.SinkIn(lab, netlab.Peer, trafficgen.SinkDrop); err != nil {
			return res, err
		}
		defer peerSink.Close()
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The reference (or, for XDP_DROP, the sink already attached) says when
	// it is ready; only then does the generator start, so no frame goes
	// where nothing counts it.
	ready := make(chan struct{})
	var readyOnce sync.Once
	markReady := func() { readyOnce.Do(func() { close(ready) }) }
	var cmd *exec.Cmd
	var stdout, stderr bytes.Buffer
	var stderrDone chan struct{}
	if r.Binary == "" {
		markReady()
	} else {
		// A receiving reference runs on after the generator stops, so all
		// frames are counted before it reports.
		secs := r.Seconds
		if rx {
			secs += settleSeconds
		}
		var args []string
		if r.Argv != nil {
			args = r.Argv(Args{Ifname: lab.Link[netlab.Host], Mode: r.Mode, Seconds: secs, Size: r.Size,
				Dst: lab.MAC[netlab.Peer], Src: lab.MAC[netlab.Host]})
		} else {
			args = []string{"-i", lab.Link[netlab.Host], "-m", r.Mode,
				"-d", strconv.FormatFloat(secs, 'f', -1, 64),
				"-s", strconv.Itoa(r.Size),
				"--dst", lab.MAC[netlab.Peer].String(), "--src", lab.MAC[netlab.Host].String()}
		}
		args = append(args, r.Args...)
		cmd = lab.Command(netlab.Host, r.Binary, args...)
		if r.CPUs != "" {
			cmd = exec.Command("taskset", append([]string{"-c", r.CPUs}, cmd.Args...)...)
		}
		cmd.Stdout = &stdout
		pipe, err := cmd.StderrPipe()
		if err != nil {
			return res, err
		}
		if err := cmd.Start(); err != nil {
			return res, fmt.Errorf("reftest: start %s: %w", r.Binary, err)
		}
		if r.WaitXDP {
			go func() {
				if waitXDP(ctx, lab) == nil {
					markReady()
				}
			}()
		}
		stderrDone = make(chan struct{})
		go func() {
			defer close(stderrDone)
			sc := bufio.NewScanner(pipe)
			for sc.Scan() {
				if bytes.HasPrefix(sc.Bytes(), []byte("ready:")) {
					markReady()
					continue
				}
				stderr.Write(sc.Bytes())
				stderr.WriteByte('\n')
			}
		}()
	}

	var gen sync.WaitGroup
	var generated, dropBase uint64
	var genErr error
	var genSeconds, cpuSeconds float64
	if rx {
		send, sendFor, chunk, closeGen, err := newGenerator(lab, r)
		if err != nil {
			cancel()
			if cmd != nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
			return res, err
		}
		defer closeGen()
		frame := trafficgen.UDPFrame(GenDst, lab.MAC[netlab.Peer],
			lab.Addr[netlab.Peer].Addr(), lab.Addr[netlab.Host].Addr(), 9, 9, r.Size)
		gen.Add(1)
		go func() {
			defer gen.Done()
			if r.Generator == "packet" && r.GenCPU != "" {
				// Pin this thread; it is discarded with the goroutine.
				runtime.LockOSThread()
				if err := pinThread(r.GenCPU); err != nil {
					genErr = err
					return
				}
			}
			select {
			case <-ready:
			case <-ctx.Done():
				return
			}
			if dropBase, genErr = rxDropped(lab); genErr != nil {
				return
			}
			cpu0 := cpuOf(cmd)
			start := time.Now()
			defer func() {
				genSeconds = time.Since(start).Seconds()
				if cmd != nil {
					time.Sleep(100 * time.Millisecond) // the last frames drain
					cpuSeconds = (cpuOf(cmd) - cpu0).Seconds()
				}
			}()
			if sendFor != nil {
				n, err := sendFor(frame, time.Duration(r.Seconds*float64(time.Second)))
				generated, genErr = uint64(n), err
				return
			}
			for ctx.Err() == nil && time.Since(start).Seconds() < r.Seconds {
				n, err := send(frame, chunk)
				generated += uint64(n)
				if err != nil {
					genErr = err
					return
				}
			}
		}()
	}

	if r.Binary == "" {
		// The kernel's XDP_DROP: what the sink counted while the generator ran.
		gen.Wait()
		var n uint64
		n, err = hostSink.Count()
		res = Result{System: "xdp-drop", Mode: "rxdrop", Packets: n, Seconds: genSeconds, PPS: float64(n) / genSeconds}
		res.Extra = map[string]any{"system": res.System, "mode": res.Mode, "packets": n, "seconds": res.Seconds, "pps": res.PPS}
	} else {
		<-stderrDone
		if err = cmd.Wait(); err != nil {
			err = fmt.Errorf("reftest: %s: %w: %s", strings.Join(cmd.Args, " "), err, stderr.Bytes())
		} else {
			res, err = ParseResult(stdout.Bytes())
			if res.System == "" {
				res.System = r.System
			}
			if res.Mode == "" {
				res.Mode = r.Mode
			}
		}
	}
	cancel()
	gen.Wait()
	res.Generated = generated
	res.CPUSeconds = cpuSeconds
	if rx && genErr == nil && err == nil {
		d, derr := rxDropped(lab)
		err = derr
		res.VethDropped = d - dropBase
	}
	if peerSink != nil {
		time.Sleep(50 * time.Millisecond) // let the last frames land
		res.Arrived, _ = peerSink.Count()
	}
	return res, errors.Join(err, genErr)
}

// newGenerator opens the generator r asks for on the peer end: either
// sendFor sends for a duration, or the caller sends chunk frames per call.
func newGenerator(lab *netlab.Lab, r Run) (send func([]byte, int) (int, error), sendFor func([]byte, time.Duration) (int, error), chunk int, closeGen func() error, err error) {
	switch r.Generator {
	case "live":
		live, err := trafficgen.LiveIn(lab, netlab.Peer)
		if err != nil {
			return nil, nil, 0, nil, err
		}
		if r.GenCPU != "" {
			cpu, err := strconv.Atoi(r.GenCPU)
			if err != nil {
				live.Close()
				return nil, nil, 0, nil, fmt.Errorf("reftest: generator CPU %q: %w", r.GenCPU, err)
			}
			if err := live.Pin(cpu); err != nil {
				live.Close()
				return nil, nil, 0, nil, err
			}
		}
		if r.Rate > 0 {
			paced := func(frame []byte, d time.Duration) (int, error) {
				return live.SendPaced(frame, int(float64(r.Rate)*d.Seconds()), r.Rate)
			}
			return nil, paced, 0, live.Close, nil
		}
		return nil, live.SendFor, 0, live.Close, nil
	case "packet":
		p, err := trafficgen.PacketIn(lab, netlab.Peer)
		if err != nil {
			return nil, nil, 0, nil, err
		}
		if r.Rate > 0 {
			paced := func(frame []byte, d time.Duration) (int, error) {
				return p.SendPaced(frame, int(float64(r.Rate)*d.Seconds()), r.Rate)
			}
			return nil, paced, 0, p.Close, nil
		}
		return p.Send, nil, 1 << 12, p.Close, nil
	}
	return nil, nil, 0, nil, fmt.Errorf("reftest: unknown generator %q (want live or packet)", r.Generator)
}

// pinThread binds the calling (locked) thread to cpu.
func pinThread(cpu string) error {
	n, err := strconv.Atoi(cpu)
	if err != nil {
		return fmt.Errorf("reftest: generator CPU %q: %w", cpu, err)
	}
	var set unix.CPUSet
	set.Set(n)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("reftest: pin generator to CPU %d: %w", n, os.NewSyscallError("sched_setaffinity", err))
	}
	return nil
}

// waitXDP waits until the host end of the lab has an XDP program attached.
func waitXDP(ctx context.Context, lab *netlab.Lab) error {
	for ctx.Err() == nil {
		a, err := lab.LinkAttrs(netlab.Host)
		if err != nil {
			return err
		}
		if a.Xdp != nil && a.Xdp.Attached {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return ctx.Err()
}

// rxDropped reads the host end's rx_dropped, where veth counts the frames
// its peer's XDP_TX could not queue (peer_tq_xdp_xmit_err), plus the peer
// end's tx_dropped, where it counts the skbs it could not queue.
func rxDropped(lab *netlab.Lab) (uint64, error) {
	a, err := lab.LinkAttrs(netlab.Host)
	if err != nil || a.Statistics == nil {
		return 0, err
	}
	// An skb the host end's ring could not take (AF_PACKET's frames) is
	// counted as the peer end's TX drop.
	p, err := lab.LinkAttrs(netlab.Peer)
	if err != nil || p.Statistics == nil {
		return 0, err
	}
	return a.Statistics.RxDropped + p.Statistics.TxDropped, nil
}

// cpuOf is the user+system CPU time of cmd's process and its descendants
// so far (0 if it cannot be read).
func cpuOf(cmd *exec.Cmd) time.Duration {
	if cmd == nil || cmd.Process == nil {
		return 0
	}
	return treeCPU(cmd.Process.Pid, 0)
}

// clockTick is USER_HZ, the unit of /proc/PID/stat's times (100 on every
// Linux architecture Go runs on).
const clockTick = 100

func treeCPU(pid, depth int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil || depth > 8 {
		return 0
	}
	// The fields after the command name (which may hold spaces), from
	// field 3 (state): utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	d := time.Duration(ut+st) * time.Second / clockTick
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		c, _ := os.ReadFile(t)
		for _, k := range strings.Fields(string(c)) {
			if kid, err := strconv.Atoi(k); err == nil {
				d += treeCPU(kid, depth+1)
			}
		}
	}
	return d
}
