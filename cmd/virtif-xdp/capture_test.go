//go:build linux

package main

import (
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket/pcapgo"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// capture -w - into a pipe nobody reads, under traffic: the receive path
// does not wait for the writer (the frames it cannot take are counted as
// tap_queue_full), and the stop, by SIGTERM or --duration, ends the process
// within a bounded time: the blocked writer is given up on (exit 1, saying
// so), and every frame the tap saw is written or counted dropped.
func TestIntegrationCaptureStalledReader(t *testing.T) {
	labtest.RequireRoot(t)
	bin := commandBinary(t)
	for _, how := range []string{"sigterm", "duration"} {
		t.Run(how, func(t *testing.T) {
			lab := labtest.NewT(t, netlab.Options{})
			gen := newSource(t, lab)
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close() // never read: a reader that stopped reading
			args := []string{"capture", "--netns", lab.NS[netlab.Host], "--link", "xdp:" + lab.Link[netlab.Host],
				"--mac", testMAC, "--queue", "64", "-w", "-"}
			if how == "duration" {
				args = append(args, "--duration", "5s", "--metrics", "127.0.0.1:0")
			}
			cmd := exec.Command(bin, args...)
			var errb syncBuffer
			cmd.Stdout, cmd.Stderr = w, &errb
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			w.Close()
			exited := make(chan struct{})
			var waitErr error
			go func() { waitErr = cmd.Wait(); close(exited) }()
			t.Cleanup(func() {
				cmd.Process.Kill() // harmless once it has exited
				<-exited
			})
			waitLogged(t, &errb)
			// Far more than the pipe, the writer's buffer and the queue
			// hold: 64-byte frames are 80 bytes of pcap each.
			const frames = 20000
			if sent, err := gen.SendPaced(toVif(lab), frames, testPPS); err != nil || sent != frames {
				t.Fatalf("generator sent %d of %d: %v", sent, frames, err)
			}
			if how == "duration" {
				// While it runs, the metrics count the drops too.
				url := regexp.MustCompile(`url=(http://\S+/metrics)`).FindStringSubmatch(errb.String())
				if url == nil {
					t.Fatalf("no metrics URL logged:\n%s", errb.String())
				}
				if v, ok := metricValue(scrape(t, url[1]), "virtif_capture_frames_total", `outcome="tap_queue_full"`); !ok || v == 0 {
					t.Errorf("virtif_capture_frames_total{outcome=\"tap_queue_full\"} = %v (found %v), want > 0", v, ok)
				}
			}
			stopped := time.Now()
			if how == "sigterm" {
				if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case <-exited:
				err = waitErr
			case <-time.After(30 * time.Second):
				t.Fatalf("capture still running 30s after the stop (its writer blocked on the pipe):\n%s", errb.String())
			}
			t.Logf("exited %.1fs after the %s", time.Since(stopped).Seconds(), how)
			stderr := errb.String()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitFailure || !strings.Contains(stderr, "gave up on it") {
				t.Fatalf("exit %v, want %d saying it gave up on the writer:\n%s", err, exitFailure, stderr)
			}
			want := map[string]string{"sigterm": "signal", "duration": "--duration reached"}[how]
			m := regexp.MustCompile(`captured (\d+) frames to - in [0-9.]+s; stopped: (.*)\n  the tap saw (\d+) frames; drops: (.*)\n`).FindStringSubmatch(stderr)
			if m == nil || m[2] != want {
				t.Fatalf("no summary stopped by %q:\n%s", want, stderr)
			}
			written, _ := strconv.ParseUint(m[1], 10, 64)
			seen, _ := strconv.ParseUint(m[3], 10, 64)
			drops := map[string]uint64{}
			var dropped uint64
			for _, d := range strings.Split(m[4], ", ") {
				name, n, ok := strings.Cut(d, " ")
				v, err := strconv.ParseUint(n, 10, 64)
				if !ok || err != nil {
					t.Fatalf("drops %q", m[4])
				}
				drops[name] = v
				dropped += v
			}
			if drops["tap_queue_full"] == 0 || seen == 0 || written+dropped != seen {
				t.Fatalf("the tap saw %d frames: %d written, drops %v; want drops for the full queue, and every frame accounted for",
					seen, written, drops)
			}
			// The pipe holds at least the frames said captured, whole: the
			// count claims none the reader cannot get. (It may hold more:
			// part of what the given-up writer was writing.)
			pr, err := pcapgo.NewReader(r)
			if err != nil {
				t.Fatalf("the pipe holds no pcap header: %v", err)
			}
			var records uint64
			for {
				if _, _, err := pr.ReadPacketData(); err != nil {
					break
				}
				records++
			}
			if records < written || records > written+drops["output_lost"]+drops["tap_queue_cut"] {
				t.Errorf("the pipe holds %d whole records; the summary says %d captured, %d lost in the output, %d cut",
					records, written, drops["output_lost"], drops["tap_queue_cut"])
			}
			if how == "duration" && !regexp.MustCompile(`s  captured \d+  drops: .*tap_queue_full \+\d+`).MatchString(stderr) {
				t.Errorf("no live line showed the queue's drops:\n%s", stderr)
			}
			if attached, err := xdpAttached(lab); err != nil || attached {
				t.Fatalf("XDP program left on the NIC (attached %v, %v)", attached, err)
			}
			t.Logf("the tap saw %d, %d written, drops %v", seen, written, drops)
		})
	}
}
