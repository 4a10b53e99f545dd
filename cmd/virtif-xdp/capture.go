package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"

	"github.com/spf13/cobra"

	"github.com/virtif-xdp/virtif-xdp/virtif"
)

func newCaptureCmd() *cobra.Command {
	var f vifFlags
	var file string
	var count uint64
	var snaplen int
	cmd := &cobra.Command{
		Use:   "capture --link xdp:IFNAME[,...] -w FILE.pcap [flags]",
		Short: "Write the frames a vif receives to a pcap file (tcpdump -r and Wireshark read it)",
		Long: `capture brings up vif0 on the NIC and writes every frame the XDP program
steers to it (frames to its MAC; with --promisc every frame no other vif
claims) to a classic pcap file through the interface's tap, as bpf_mtap shows
frames to tcpdump on NetBSD. It stops after --count frames, after --duration,
or on Ctrl-C / SIGTERM. The frames captured are taken from the host kernel,
which does not see them: with --promisc the host is cut off from the NIC
while capture runs.`,
		Example: `  ip netns exec vxlab-h virtif-xdp capture --link xdp:vxlabh --promisc -w /tmp/vif.pcap --count 100
  tcpdump -nr /tmp/vif.pcap`,
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
			return runCapture(cmd, &f, file, count, snaplen)
		},
	}
	f.register(cmd.Flags(), 0, "how long to capture (0: until --count or Ctrl-C)")
	cmd.Flags().StringVarP(&file, "write", "w", "", "pcap file to write (- for stdout)")
	cmd.Flags().Uint64VarP(&count, "count", "c", 0, "stop after this many frames (0: no limit)")
	cmd.Flags().IntVar(&snaplen, "snaplen", 65535, "bytes kept of each frame")
	return cmd
}

func runCapture(cmd *cobra.Command, f *vifFlags, file string, count uint64, snaplen int) (err error) {
	var out io.Writer
	var closeFile func() error
	if file == "-" {
		out = cmd.OutOrStdout()
		closeFile = func() error { return nil }
	} else {
		fh, err := os.Create(file)
		if err != nil {
			return err
		}
		out, closeFile = fh, fh.Close
	}
	bw := bufio.NewWriterSize(out, 1<<20)
	pw, err := virtif.NewPcapWriter(bw, virtif.PcapOptions{Snaplen: snaplen, Directions: virtif.In})
	if err != nil {
		closeFile()
		return err
	}
	defer func() {
		// The vif is closed by now: no tap call can race the flush.
		ferr := bw.Flush()
		cerr := closeFile()
		if err == nil {
			err = errors.Join(pw.Err(), ferr, cerr)
		}
	}()

	lt := &limitTap{next: pw, limit: count, reached: make(chan struct{})}
	v, err := openVif(vifSetup{link: f.link, netns: f.netns, mac: f.hw, promisc: f.promisc,
		input: func([]byte, bool) {}, taps: []virtif.Tap{lt}})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := v.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	stopMetrics, err := startMetrics(f.metrics, "capture", v)
	if err != nil {
		return fmt.Errorf("--metrics: %w", err)
	}
	defer stopMetrics()
	slog.Info("running", "mode", "capture", "vif", v.ifc.Name(), "mac", v.ifc.HardwareAddr().String(), "link", f.link, "file", file,
		"promisc", f.promisc, "count", count)

	err = runFor(cmd.Context(), f.duration, v, lt.reached, nil)
	if cerr := v.Close(); cerr != nil && err == nil {
		err = cerr
	}
	written, failed := pw.Stats()
	msg := fmt.Sprintf("captured %d frames to %s", written, file)
	if failed > 0 {
		msg += fmt.Sprintf(" (%d could not be written)", failed)
	}
	if file == "-" {
		slog.Info(msg)
	} else {
		fmt.Fprintln(cmd.OutOrStdout(), msg)
	}
	return err
}

// limitTap passes the first limit frames (all when limit is 0) to next and
// closes reached at the last one, so --count writes exactly that many.
type limitTap struct {
	next    virtif.Tap
	limit   uint64
	n       atomic.Uint64
	reached chan struct{}
}

func (t *limitTap) Tap(frame []byte, dir virtif.Direction) {
	n := t.n.Add(1)
	if t.limit == 0 || n <= t.limit {
		t.next.Tap(frame, dir)
	}
	if n == t.limit {
		close(t.reached)
	}
}
