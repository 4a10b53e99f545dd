//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
	"github.com/virtif-xdp/virtif-xdp/virtif"
	"github.com/virtif-xdp/virtif-xdp/virtif/xdp"
)

// benchMode is one of the classic AF_XDP benchmark modes (the kernel's
// samples/bpf/xdpsock and libxdp's xdpsock: rxdrop, txonly, l2fwd), run
// through the whole virtif path.
type benchMode struct {
	name, short, long string
	rx, tx            bool
}

var benchModes = []benchMode{
	{name: "rxdrop", rx: true,
		short: "Receive on a vif and drop: the receive path's rate",
		long: `rxdrop brings up vif0 on the NIC; its input handler drops every frame the
vif accepts (the interface counts it first). Send frames to the vif's MAC
(--mac) from elsewhere, or use --promisc to take every frame no other vif
claims: the host's own traffic too, which its kernel then no longer sees.`},
	{name: "txonly", tx: true,
		short: "Send prebuilt UDP frames from a vif as fast as it goes",
		long: `txonly brings up vif0 on the NIC and sends --size byte UDP frames
(198.18.0.3:9 -> 198.18.0.2:9) to --dst in batches of --batch frames
(OutputBatch: one kernel kick per batch). The frames are built once:
nothing is allocated per frame.`},
	{name: "l2fwd", rx: true, tx: true,
		short: "Send every received frame back with its MACs swapped",
		long: `l2fwd brings up vif0 on the NIC; its input handler swaps the source and
destination MAC of every frame it accepts and sends it back out at once
(Output); the kernel is kicked once per received batch, so a lone frame is
answered without waiting for more (a ping-pong measures the round trip).`},
}

// benchFlags are the flags of rxdrop, txonly and l2fwd.
type benchFlags struct {
	vifFlags
	size  int
	dst   string
	batch int
	count uint64
	json  bool

	dstMAC net.HardwareAddr
}

const defaultDst = "02:00:00:00:00:02"

func newBenchCmd(m benchMode) *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   m.name + " --link xdp:IFNAME[,...] [flags]",
		Short: m.short,
		Long: m.long + `

It runs until --duration, until --count frames (received by rxdrop and
l2fwd, given to OutputBatch by txonly), or until Ctrl-C or SIGTERM, whichever
comes first; a NIC that fails (deleted, say) ends it at once with exit 1 and
the reason. rxdrop and l2fwd busy-loop on their RX rings by default, as
xdpsock does (rxwait=spin, a CPU per queue), unless the link string sets
rxwait= or busypoll=; txonly's sender busy-loops on its TX ring and its
RX side, which gets nothing, waits in poll(2). It prints a line per second (to stderr with --json, else
stdout) and a summary at the end that gives the rate, the wall time it ran
and why it stopped; --json makes the summary one JSON object on stdout, with
"wall_seconds", "stopped" (duration, count, signal, nic or error) and, for
a failure, "stop_error". A line "ready: virtif-xdp MODE" on stderr tells a
harness the vif is up. The vif is destroyed and its XDP program taken off
the NIC however the run ends.` + privilegesHelp(),
		Example: fmt.Sprintf(`  virtif-xdp lab up
  ip netns exec vxlab-h virtif-xdp %s --link xdp:vxlabh --duration 5s
  virtif-xdp %s --netns vxlab-h --link xdp:vxlabh --json`, m.name, m.name),
		Args: cobraArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(true); err != nil {
				return err
			}
			if f.size < trafficgen.MinFrame || f.size > 9018 {
				return usagef("--size %d: must be %d..9018 bytes", f.size, trafficgen.MinFrame)
			}
			if f.batch < 1 || f.batch > 4096 {
				return usagef("--batch %d: must be 1..4096", f.batch)
			}
			hw, err := net.ParseMAC(f.dst)
			if err != nil || len(hw) != 6 {
				return usagef("--dst %q: not a 6-byte MAC", f.dst)
			}
			f.dstMAC = hw
			if m.rx {
				f.link = spinByDefault(f.link)
			}
			return runBench(cmd, m, &f)
		},
	}
	fs := cmd.Flags()
	f.register(fs, 10*time.Second, "how long to run (0: until Ctrl-C)")
	// Every mode takes every flag, so a harness can pass one set; the help
	// says which mode uses it.
	fs.IntVar(&f.size, "size", 64, "txonly: frame size in bytes, without the FCS")
	fs.StringVar(&f.dst, "dst", defaultDst, "txonly: destination MAC of the frames sent")
	fs.IntVar(&f.batch, "batch", 64, "txonly: frames per OutputBatch call (one kernel kick each)")
	fs.Uint64Var(&f.count, "count", 0, "stop after this many frames: received (rxdrop, l2fwd) or sent (txonly); 0: no limit")
	fs.BoolVar(&f.json, "json", false, "print the summary as one JSON object on stdout")
	return cmd
}

// benchSummary is the summary a run prints (and --json emits).
type benchSummary struct {
	Mode   string `json:"mode"`
	Link   string `json:"link"`
	Vif    string `json:"vif"`
	MAC    string `json:"mac"`
	Attach string `json:"attach"`
	Bind   string `json:"bind"`
	Queues []int  `json:"queues"`
	// Wait is how the RX goroutines wait for frames: "poll", "spin" or
	// "busypoll=N" (waitMode).
	Wait string `json:"rx_wait"`
	// Seconds is the time the rate is over: for the receiving modes from
	// the first to the last frame received (to a millisecond), as the
	// reference programs in bench/ref count it, so neither start-up nor a
	// quiet tail dilutes the rate; for txonly the whole run. WallSeconds is
	// the whole run, from the vif up to the stop.
	Seconds     float64 `json:"seconds"`
	WallSeconds float64 `json:"wall_seconds"`
	// Stopped says why the run ended (a stopReason: duration, count,
	// signal, nic, error); StopError is the reason of a failure.
	Stopped   string `json:"stopped"`
	StopError string `json:"stop_error,omitempty"`
	// Packets and Bytes are what the mode moved: frames received (rxdrop),
	// sent (txonly) or forwarded (l2fwd), since the vif came up.
	Packets   uint64            `json:"packets"`
	Bytes     uint64            `json:"bytes"`
	PPS       float64           `json:"pps"`
	Mbps      float64           `json:"mbps"`
	RXPackets uint64            `json:"rx_packets"`
	TXPackets uint64            `json:"tx_packets"`
	Drops     map[string]uint64 `json:"drops"`
	Counters  map[string]uint64 `json:"counters"`
}

func runBench(cmd *cobra.Command, m benchMode, f *benchFlags) error {
	ctx := cmd.Context()
	stop := newStopper()
	var fwd *forwarder
	var act *activity // not for txonly: its ticker would only cost wakeups
	var input virtif.Input
	if m.rx {
		act = newActivity()
		defer act.stop()
		input = func([]byte, bool) { act.touch() }
	} else {
		input = func([]byte, bool) {}
	}
	if m.rx && m.tx {
		fwd = newForwarder()
		fwd.act = act
		input = fwd.input
	}
	if m.rx && f.count > 0 {
		input = countInput(input, f.count, stop)
	}
	v, err := openVif(vifSetup{link: f.link, netns: f.netns, mac: f.hw, promisc: f.promisc, input: input})
	if err != nil {
		return err
	}
	defer func() {
		if err := v.Close(); err != nil {
			slog.Error("closing the vif", "err", err)
		}
	}()
	stopMetrics, err := startMetrics(f.metrics, m.name, v)
	if err != nil {
		return fmt.Errorf("--metrics: %w", err)
	}
	defer stopMetrics()
	kept, err := dropPrivileges()
	if err != nil {
		return err
	}

	live := cmd.OutOrStdout()
	if f.json {
		live = cmd.ErrOrStderr()
	}
	info := v.be.Info()
	wait := waitMode(f.link)
	slog.Info("running", "mode", m.name, "vif", v.ifc.Name(), "mac", v.ifc.HardwareAddr().String(), "link", f.link,
		"attach", info.Attach, "bind", info.Mode, "queues", info.Queues, "rxwait", wait, "duration", f.duration, "caps", kept)

	// For benchmark harnesses (as bench/ref's programs do): traffic may start.
	fmt.Fprintf(cmd.ErrOrStderr(), "ready: virtif-xdp %s\n", m.name)
	start := time.Now()
	var sender sync.WaitGroup
	var stopFlag atomic.Bool
	if m.tx && !m.rx {
		sender.Add(1)
		go func() {
			defer sender.Done()
			if err := txLoop(v.ifc, txFrames(v.ifc.HardwareAddr(), f), &stopFlag, f.count); err != nil {
				stop.stop(stopError, err)
			} else if !stopFlag.Load() {
				stop.stop(stopCount, nil)
			}
		}()
	}
	if fwd != nil {
		fwd.start(v.ifc)
	}
	prev := v.ifc.Stats()
	prevT := time.Duration(0)
	why, err := runFor(ctx, f.duration, v, stop, func(el time.Duration) {
		cur := v.ifc.Stats()
		printLive(live, m, wait, el, el-prevT, prev, cur)
		prev, prevT = cur, el
	})
	elapsed := time.Since(start)
	stopFlag.Store(true)
	sender.Wait()
	if fwd != nil {
		fwd.stop()
	}
	sum := summarize(m, f, v, elapsed)
	sum.Stopped = string(why)
	if err != nil {
		sum.StopError = err.Error()
	}
	if m.rx {
		if active, ok := act.span(); ok && sum.Packets > 1 {
			sum.Seconds = active.Seconds()
		}
		sum.rate()
	}
	if fwd != nil {
		sum.Drops["fwd_skipped"] = fwd.skipped.Load()
		sum.Drops["fwd_send_errors"] = fwd.errs.Load()
	}
	if f.json {
		enc := json.NewEncoder(cmd.OutOrStdout())
		if jerr := enc.Encode(sum); jerr != nil {
			return jerr
		}
	} else {
		printSummary(cmd.OutOrStdout(), sum)
	}
	return err
}

// spinByDefault adds rxwait=spin to a link string that says neither
// rxwait= nor busypoll=: the receiving benchmark modes busy-loop on their
// rings unless told otherwise (the library's default stays poll).
func spinByDefault(link string) string {
	for _, kv := range strings.Split(link, ",")[1:] {
		if k, _, _ := strings.Cut(kv, "="); k == "rxwait" || k == "busypoll" {
			return link
		}
	}
	return link + ",rxwait=" + xdp.RXWaitSpin.String()
}

// waitMode names how the RX goroutines of a (valid) link string wait:
// "busypoll=N" (which spins too), "spin" or "poll".
func waitMode(link string) string {
	c, err := xdp.ParseLinkStr(link)
	if err != nil {
		return "?"
	}
	if c.BusyPoll > 0 {
		return fmt.Sprintf("busypoll=%d", c.BusyPoll)
	}
	return c.RXWait.String()
}

// txFrames builds txonly's batch once: --batch frames of --size bytes.
func txFrames(src []byte, f *benchFlags) [][][]byte {
	frames := make([][][]byte, f.batch)
	for i := range frames {
		fr := trafficgen.UDPFrame(f.dstMAC, src, netip.MustParseAddr("198.18.0.3"), netip.MustParseAddr("198.18.0.2"), 9, 9, f.size)
		trafficgen.SetSeq(fr, uint64(i))
		frames[i] = [][]byte{fr}
	}
	return frames
}

// countInput wraps an input handler to stop the run once it has seen
// count frames.
func countInput(next virtif.Input, count uint64, stop *stopper) virtif.Input {
	var n atomic.Uint64
	return func(frame []byte, promisc bool) {
		next(frame, promisc)
		if n.Add(1) == count {
			stop.stop(stopCount, nil)
		}
	}
}

// txLoop sends the batch of frames over and over until stop is set or, when
// limit > 0, until it has given OutputBatch limit frames (the last batch cut
// short). ENOBUFS (no free UMEM frame: the kernel is behind) is
// back-pressure, counted by the interface.
func txLoop(ifc *virtif.Interface, frames [][][]byte, stop *atomic.Bool, limit uint64) error {
	for given := uint64(0); !stop.Load() && (limit == 0 || given < limit); {
		batch := frames
		if left := limit - given; limit > 0 && left < uint64(len(batch)) {
			batch = batch[:left]
		}
		given += uint64(len(batch))
		sent := 0
		for sent < len(batch) {
			n, err := ifc.OutputBatch(batch[sent:])
			sent += n
			if err == nil {
				break
			}
			if errors.Is(err, unix.ENOBUFS) {
				sent++ // that frame was counted as dropped; go on
				continue
			}
			if isGone(err) && stop.Load() {
				return nil
			}
			return fmt.Errorf("txonly: %w", err)
		}
	}
	return nil
}

// forwarder is l2fwd's input handler: it copies each frame with its MACs
// swapped into a buffer and sends it at once (Output). A frame is only
// valid during the input call, so it cannot be sent without a copy; the
// backend defers the kernel kick of a send made during an RX batch to the
// batch's end, so a burst costs one kick and a lone frame (a ping-pong)
// leaves without waiting for more.
type forwarder struct {
	mu      sync.Mutex
	ifc     *virtif.Interface
	buf     []byte
	frame   [][]byte
	act     *activity
	errs    atomic.Uint64 // send errors other than back-pressure
	skipped atomic.Uint64 // frames received but not forwarded: too big, or outside the run
}

// maxFwdFrame is the largest frame l2fwd forwards: a 4096-byte UMEM frame.
const maxFwdFrame = 4096

func newForwarder() *forwarder {
	return &forwarder{buf: make([]byte, maxFwdFrame), frame: make([][]byte, 1)}
}

func (f *forwarder) start(ifc *virtif.Interface) {
	f.mu.Lock()
	f.ifc = ifc
	f.mu.Unlock()
}

func (f *forwarder) stop() {
	f.mu.Lock()
	f.ifc = nil
	f.mu.Unlock()
}

func (f *forwarder) input(frame []byte, _ bool) {
	if f.act != nil {
		f.act.touch()
	}
	if len(frame) < 14 || len(frame) > maxFwdFrame {
		f.skipped.Add(1)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ifc == nil {
		f.skipped.Add(1)
		return
	}
	b := f.buf[:len(frame)]
	copy(b[0:6], frame[6:12])
	copy(b[6:12], frame[0:6])
	copy(b[12:], frame[12:])
	f.frame[0] = b
	// Counted by the interface as a drop or an error if it fails.
	if err := f.ifc.Output(f.frame); err != nil && !errors.Is(err, unix.ENOBUFS) {
		f.errs.Add(1)
	}
}

// counterMap flattens the stats into name → value.
func counterMap(st virtif.Stats) map[string]uint64 {
	m := map[string]uint64{
		"ipackets": st.IPackets, "ibytes": st.IBytes, "ierrors": st.IErrors, "idrops": st.IDrops,
		"ifiltered": st.IFiltered, "inohandler": st.INoHandler, "imcasts": st.IMcasts,
		"opackets": st.OPackets, "obytes": st.OBytes, "oerrors": st.OErrors, "odrops": st.ODrops,
		"omcasts": st.OMcasts, "coalesced": st.Coalesced,
	}
	for _, s := range st.Backend {
		m[s.Name] = s.Value
	}
	return m
}

// dropNames are the counters that say a frame was lost, and where.
var dropNames = []string{
	"idrops", "ierrors", "oerrors", "odrops",
	"xsk_rx_dropped", "xsk_rx_ring_full", "xsk_rx_fill_ring_empty", "xsk_rx_invalid_descs", "xsk_tx_invalid_descs",
	"xdp_nosocket", "xdp_nometa", "rx_unclaimed", "rx_untagged",
	"tx_ring_full", "tx_no_frame", "tx_unsent_at_close", "tx_too_big", "tx_kick_errors",
}

func summarize(m benchMode, f *benchFlags, v *vif, elapsed time.Duration) benchSummary {
	st := v.ifc.Stats()
	info := v.be.Info()
	all := counterMap(st)
	s := benchSummary{
		Mode: m.name, Link: f.link, Vif: v.ifc.Name(), MAC: v.ifc.HardwareAddr().String(),
		Attach: info.Attach, Bind: info.Mode, Queues: info.Queues, Wait: waitMode(f.link),
		Seconds: elapsed.Seconds(), WallSeconds: elapsed.Seconds(),
		RXPackets: st.IPackets, TXPackets: st.OPackets,
		Drops: map[string]uint64{}, Counters: all,
	}
	if m.tx {
		s.Packets, s.Bytes = st.OPackets, st.OBytes
	} else {
		s.Packets, s.Bytes = st.IPackets, st.IBytes
	}
	for _, n := range dropNames {
		if val, ok := all[n]; ok {
			s.Drops[n] = val
		}
	}
	s.rate()
	return s
}

func (s *benchSummary) rate() {
	if s.Seconds > 0 {
		s.PPS = float64(s.Packets) / s.Seconds
		s.Mbps = float64(s.Bytes) * 8 / s.Seconds / 1e6
	}
}

// activity notes when the first and the last frame arrived, to a
// millisecond, for a few nanoseconds a frame: a ticker keeps a coarse
// clock and the input handler copies it only when it moved.
type activity struct {
	clock, first, last atomic.Int64 // ms since start, +1 (0: unset)
	done               chan struct{}
	start              time.Time
}

func newActivity() *activity {
	a := &activity{done: make(chan struct{}), start: time.Now()}
	a.clock.Store(1)
	go func() {
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-a.done:
				return
			case now := <-t.C:
				a.clock.Store(int64(now.Sub(a.start)/time.Millisecond) + 1)
			}
		}
	}()
	return a
}

func (a *activity) touch() {
	if t := a.clock.Load(); a.last.Load() != t {
		a.first.CompareAndSwap(0, t)
		a.last.Store(t)
	}
}

// span is the time from the first to the last frame, when there were
// frames over more than a millisecond.
func (a *activity) span() (time.Duration, bool) {
	f, l := a.first.Load(), a.last.Load()
	if f == 0 || l <= f {
		return 0, false
	}
	return time.Duration(l-f) * time.Millisecond, true
}

func (a *activity) stop() { close(a.done) }

// printLive prints one line of per-second rates and the drops that grew.
func printLive(w io.Writer, m benchMode, wait string, el, dt time.Duration, prev, cur virtif.Stats) {
	sec := dt.Seconds()
	if sec <= 0 {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%6.1fs  rxwait %s", el.Seconds(), wait)
	if m.rx {
		fmt.Fprintf(&b, "  rx %s pps %8.1f Mbit/s", fmtRate(float64(cur.IPackets-prev.IPackets)/sec),
			float64(cur.IBytes-prev.IBytes)*8/sec/1e6)
	}
	if m.tx {
		fmt.Fprintf(&b, "  tx %s pps %8.1f Mbit/s", fmtRate(float64(cur.OPackets-prev.OPackets)/sec),
			float64(cur.OBytes-prev.OBytes)*8/sec/1e6)
	}
	pm, cm := counterMap(prev), counterMap(cur)
	if m.rx {
		// Per queue, where the NIC has several (the backend reports
		// q<N>_rx_frames and q<N>_xsk_* then).
		var qs []string
		for _, st := range cur.Backend {
			if q, ok := strings.CutSuffix(st.Name, "_rx_frames"); ok && strings.HasPrefix(q, "q") {
				qs = append(qs, fmt.Sprintf("%s %s", q, fmtRate(float64(cm[st.Name]-pm[st.Name])/sec)))
			}
		}
		if len(qs) > 0 {
			b.WriteString("  [" + strings.Join(qs, ", ") + "]")
		}
	}
	var grew []string
	for _, n := range dropNames {
		if d := cm[n] - pm[n]; d > 0 {
			grew = append(grew, fmt.Sprintf("%s +%d", n, d))
		}
	}
	for _, st := range cur.Backend {
		if strings.HasPrefix(st.Name, "q") && strings.Contains(st.Name, "_xsk_") {
			if d := cm[st.Name] - pm[st.Name]; d > 0 {
				grew = append(grew, fmt.Sprintf("%s +%d", st.Name, d))
			}
		}
	}
	if len(grew) == 0 {
		b.WriteString("  drops: none")
	} else {
		b.WriteString("  drops: " + strings.Join(grew, ", "))
	}
	fmt.Fprintln(w, b.String())
}

func fmtRate(pps float64) string {
	switch {
	case pps >= 1e6:
		return fmt.Sprintf("%7.3fM", pps/1e6)
	case pps >= 1e3:
		return fmt.Sprintf("%7.1fk", pps/1e3)
	}
	return fmt.Sprintf("%8.0f", pps)
}

func printSummary(w io.Writer, s benchSummary) {
	fmt.Fprintf(w, "%s on %s (%s %s, attach %s, bind %s, queues %s, rxwait %s): %d packets, %d bytes in %.2fs = %s pps, %.1f Mbit/s\n",
		s.Mode, s.Link, s.Vif, s.MAC, s.Attach, s.Bind, intsString(s.Queues), s.Wait, s.Packets, s.Bytes, s.Seconds,
		strings.TrimSpace(fmtRate(s.PPS)), s.Mbps)
	stopped := stopReason(s.Stopped).String()
	if s.StopError != "" {
		stopped += ": " + s.StopError
	}
	fmt.Fprintf(w, "  ran %.2fs; stopped: %s\n", s.WallSeconds, stopped)
	fmt.Fprintf(w, "  received %d, sent %d\n", s.RXPackets, s.TXPackets)
	names := make([]string, 0, len(s.Drops))
	for n, v := range s.Drops {
		if v > 0 {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		fmt.Fprintln(w, "  drops: none")
		return
	}
	fmt.Fprint(w, "  drops:")
	for _, n := range names {
		fmt.Fprintf(w, " %s %d", n, s.Drops[n])
	}
	fmt.Fprintln(w)
}
