//go:build linux

package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/virtif"
	"github.com/virtif-xdp/virtif-xdp/virtif/xdp"
)

// captureCloseTimeout bounds how long capture waits, once stopped, for the
// writer to take the frames still queued.
const captureCloseTimeout = 2 * time.Second

func newCaptureCmd() *cobra.Command {
	var f vifFlags
	var file string
	var count uint64
	var snaplen, queue int
	var force bool
	cmd := &cobra.Command{
		Use:   "capture --link xdp:IFNAME[,...] -w FILE.pcap [flags]",
		Short: "Write the frames a vif receives to a pcap file (tcpdump -r and Wireshark read it)",
		Long: `capture brings up vif0 on the NIC and writes every frame the XDP program
steers to it (frames to its MAC; with --promisc every frame no other vif
claims) to a classic pcap file through the interface's tap, as bpf_mtap shows
frames to tcpdump on NetBSD. It stops after --count frames written, after
--duration, or on Ctrl-C / SIGTERM. The frames captured are taken from the
host kernel, which does not see them: with --promisc the host is cut off
from the NIC while capture runs.

The receive path never waits for the writer: the tap copies each frame into
a queue of --queue frames, and a goroutine of its own writes them out (the
output is flushed whenever the queue runs empty). A writer that cannot keep
up (a slow reader of -w -) costs frames, counted as drops (tap_queue_full),
never the receive path's time. Once stopped, capture waits up to ` + captureCloseTimeout.String() + ` for the
writer to take what is queued; a writer still blocked then (a reader that
does not read) is given up on: the frames still queued are counted
(tap_queue_cut), the output may end in a partial record, and capture exits
with status 1 saying so. The summary's "captured N" counts only frames
flushed out whole; those a failed or abandoned write took with it are
output_lost. A line a second on stderr, the summary and the --metrics
counters give the drops.

-w FILE is created with mode 0600 (a capture holds whatever the segment
carried). An existing FILE is refused unless --force (then it is truncated
and set to 0600), and a symlink is refused even then: FILE must be the file
itself. -w - writes to standard output (the summary then goes to stderr).` + privilegesHelp(),
		Example: `  ip netns exec vxlab-h virtif-xdp capture --link xdp:vxlabh --promisc -w /tmp/vif.pcap --count 100
  tcpdump -nr /tmp/vif.pcap
  ip netns exec vxlab-h virtif-xdp capture --link xdp:vxlabh -w - | tcpdump -nr -`,
		Args: cobraArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(true); err != nil {
				return err
			}
			if file == "" {
				return usagef("-w FILE is required (- for stdout)")
			}
			if snaplen < 64 || snaplen > 262144 {
				return usagef("--snaplen %d: must be 64..262144", snaplen)
			}
			if queue < 1 || queue > 1<<20 {
				return usagef("--queue %d: must be 1..%d frames", queue, 1<<20)
			}
			return runCapture(cmd, &f, captureOpts{file: file, force: force, count: count, snaplen: snaplen, queue: queue})
		},
	}
	f.register(cmd.Flags(), 0, "how long to capture (0: until --count or Ctrl-C)")
	cmd.Flags().StringVarP(&file, "write", "w", "", "pcap file to write (- for stdout)")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite an existing -w FILE (never through a symlink)")
	cmd.Flags().Uint64VarP(&count, "count", "c", 0, "stop after this many frames written (0: no limit)")
	cmd.Flags().IntVar(&snaplen, "snaplen", 65535, "bytes kept of each frame")
	cmd.Flags().IntVar(&queue, "queue", 1024, "frames the tap queue holds for the writer; beyond, frames are dropped and counted")
	return cmd
}

type captureOpts struct {
	file           string
	force          bool
	count          uint64
	snaplen, queue int
}

func runCapture(cmd *cobra.Command, f *vifFlags, o captureOpts) error {
	var out io.Writer
	closeFile := func() error { return nil }
	report := cmd.OutOrStdout()
	if o.file == "-" {
		out, report = cmd.OutOrStdout(), cmd.ErrOrStderr()
	} else {
		fh, err := createCaptureFile(o.file, o.force)
		if err != nil {
			return err
		}
		out, closeFile = fh, fh.Close
	}
	bw := bufio.NewWriterSize(out, 256<<10)
	pw, err := virtif.NewPcapWriter(bw, virtif.PcapOptions{Snaplen: o.snaplen, Directions: virtif.In})
	if err == nil {
		// The header goes out at once (an empty pipe takes it without
		// blocking): a reader of -w - can start.
		err = bw.Flush()
	}
	if err != nil {
		closeFile()
		return err
	}
	// No received frame is longer than a UMEM frame: the queue keeps that
	// much of each, or the snaplen if shorter.
	cfg, err := xdp.ParseLinkStr(f.link)
	if err != nil {
		closeFile()
		return err
	}
	stop := newStopper()
	sink := &captureSink{pw: pw, bw: bw, limit: o.count, stop: stop}
	q, err := virtif.NewTapQueue(sink, virtif.TapQueueOptions{
		Frames: o.queue, FrameSize: min(o.snaplen, cfg.FrameSize), CloseTimeout: captureCloseTimeout})
	if err != nil {
		closeFile()
		return err
	}
	v, err := openVif(vifSetup{link: f.link, netns: f.netns, mac: f.hw, promisc: f.promisc,
		input: func([]byte, bool) {}, taps: []virtif.Tap{q}})
	if err != nil {
		q.Close()
		closeFile()
		return err
	}
	defer v.Close() // on a panic; closing twice is harmless
	c := &captureCounts{q: q, pw: pw, sink: sink}
	stopMetrics, err := startMetrics(f.metrics, "capture", v, c)
	if err != nil {
		v.Close()
		q.Close()
		closeFile()
		return fmt.Errorf("--metrics: %w", err)
	}
	defer stopMetrics()
	kept, err := dropPrivileges()
	if err != nil {
		v.Close()
		q.Close()
		closeFile()
		return err
	}
	slog.Info("running", "mode", "capture", "vif", v.ifc.Name(), "mac", v.ifc.HardwareAddr().String(), "link", f.link, "file", o.file,
		"promisc", f.promisc, "count", o.count, "queue", o.queue, "caps", kept)

	start := time.Now()
	prev := c.drops()
	why, err := runFor(cmd.Context(), f.duration, v, stop, func(el time.Duration) {
		cur := c.drops()
		fmt.Fprintf(cmd.ErrOrStderr(), "%6.1fs  captured %d  drops: %s\n", el.Seconds(), c.written(), dropsGrown(prev, cur))
		prev = cur
	})
	elapsed := time.Since(start)
	// The tap never blocks the receive path, so this ends within a batch;
	// then the queue gets its bounded time to drain.
	err = errors.Join(err, v.Close())
	qerr := q.Close()
	st := q.Stats()
	var ferr error
	if qerr == nil {
		// The queue's goroutine is done and flushed, so this returns at
		// once (nothing is buffered); after a failure it could block.
		ferr = sink.Flush()
	}
	c.over.Store(true)
	fmt.Fprintf(report, "captured %d frames to %s in %.2fs; stopped: %s\n", c.written(), o.file, elapsed.Seconds(), why)
	past := ""
	if n := sink.skipped.Load(); n > 0 {
		past = fmt.Sprintf(" (%d after --count was reached, not written)", n)
	}
	fmt.Fprintf(report, "  the tap saw %d frames%s; drops: %s\n", st.Offered, past, dropsGrown(nil, c.drops()))
	if st.Abandoned {
		// The writer is still inside pw and bw: neither may be touched.
		return errors.Join(err, fmt.Errorf("the pcap output was still blocked %v after the stop (a reader that does not read?): "+
			"gave up on it, %s may end in a partial record: %w", captureCloseTimeout, o.file, qerr))
	}
	return errors.Join(err, qerr, pw.Err(), ferr, closeFile())
}

// createCaptureFile creates the pcap file -w names: mode 0600, never
// through a symlink (O_NOFOLLOW: ELOOP), and not over an existing file
// (EEXIST) unless force, which truncates it and sets its mode to 0600.
func createCaptureFile(name string, force bool) (*os.File, error) {
	flags := os.O_WRONLY | os.O_CREATE | unix.O_NOFOLLOW
	if force {
		flags |= os.O_TRUNC
	} else {
		flags |= os.O_EXCL
	}
	fh, err := os.OpenFile(name, flags, 0o600)
	if errors.Is(err, unix.EEXIST) {
		// O_EXCL does not follow a symlink either: say which it is.
		if fi, lerr := os.Lstat(name); lerr == nil && fi.Mode()&os.ModeSymlink != 0 {
			err = fmt.Errorf("%w (%w)", err, unix.ELOOP)
		}
	}
	switch {
	case errors.Is(err, unix.ELOOP):
		return nil, fmt.Errorf("-w %s: a symlink; capture writes only to the file itself: %w", name, err)
	case errors.Is(err, unix.EEXIST):
		return nil, fmt.Errorf("-w %s: the file exists (--force overwrites it): %w", name, err)
	case err != nil:
		return nil, err
	}
	if force {
		// An existing file keeps its mode through O_TRUNC.
		if err := fh.Chmod(0o600); err != nil {
			fh.Close()
			return nil, err
		}
	}
	return fh, nil
}

// captureSink is what the tap queue hands frames to: it writes the first
// limit of them (all when limit is 0) and stops the run at the last, so
// --count writes exactly that many; Flush pushes the buffered output out
// when the queue runs empty. Only the queue's goroutine calls it (and
// capture, once that goroutine is done).
type captureSink struct {
	pw      *virtif.PcapWriter
	bw      *bufio.Writer
	limit   uint64
	stop    *stopper
	n       uint64
	skipped atomic.Uint64 // frames after --count was reached
	flushed atomic.Uint64 // frames written when a flush last succeeded: out whole
}

func (s *captureSink) Tap(frame []byte, dir virtif.Direction) {
	s.TapQueued(frame, dir, time.Now(), len(frame))
}

func (s *captureSink) TapQueued(frame []byte, dir virtif.Direction, at time.Time, length int) {
	s.n++
	if s.limit != 0 && s.n > s.limit {
		s.skipped.Add(1)
		return
	}
	s.pw.TapQueued(frame, dir, at, length)
	if s.n == s.limit {
		s.stop.stop(stopCount, nil)
	}
}

func (s *captureSink) Flush() error {
	w, _ := s.pw.Stats()
	err := s.bw.Flush()
	if err == nil {
		s.flushed.Store(w)
	}
	return err
}

// captureCounts reads what became of the frames capture's tap saw, for the
// live line, the summary and the metrics.
type captureCounts struct {
	q    *virtif.TapQueue
	pw   *virtif.PcapWriter
	sink *captureSink
	over atomic.Bool // the writing is over: what is not flushed now is lost
}

// written is the frames written; once over, only those flushed out whole.
func (c *captureCounts) written() uint64 {
	w, _ := c.pw.Stats()
	if c.over.Load() {
		return c.sink.flushed.Load()
	}
	return w
}

// drops are the frames lost, by where.
func (c *captureCounts) drops() map[string]uint64 {
	st := c.q.Stats()
	w, failed := c.pw.Stats()
	d := map[string]uint64{
		"tap_queue_full":       st.Full,
		"tap_queue_after_stop": st.Closed,
		"tap_queue_cut":        st.Cut,
		"write_errors":         failed,
	}
	if c.over.Load() {
		// Written to the buffer, but its flush failed or was given up on.
		d["output_lost"] = w - c.sink.flushed.Load()
	}
	return d
}

// dropsGrown lists the drops that grew since prev (nil: since the start),
// or "none".
func dropsGrown(prev, cur map[string]uint64) string {
	var grew []string
	for n, v := range cur {
		if d := v - prev[n]; d > 0 {
			if prev == nil {
				grew = append(grew, fmt.Sprintf("%s %d", n, d))
			} else {
				grew = append(grew, fmt.Sprintf("%s +%d", n, d))
			}
		}
	}
	if len(grew) == 0 {
		return "none"
	}
	sort.Strings(grew)
	return strings.Join(grew, ", ")
}

var captureFramesDesc = prometheus.NewDesc("virtif_capture_frames_total",
	"What became of the frames capture's tap saw: written, past_count, or dropped (write_errors, output_lost, tap_queue_full, tap_queue_after_stop, tap_queue_cut).",
	[]string{"outcome"}, nil)

func (c *captureCounts) Describe(ch chan<- *prometheus.Desc) { ch <- captureFramesDesc }

func (c *captureCounts) Collect(ch chan<- prometheus.Metric) {
	emit := func(outcome string, v uint64) {
		ch <- prometheus.MustNewConstMetric(captureFramesDesc, prometheus.CounterValue, float64(v), outcome)
	}
	emit("written", c.written())
	emit("past_count", c.sink.skipped.Load())
	for n, v := range c.drops() {
		emit(n, v)
	}
}
