//go:build linux

package main

import (
	"strings"
	"testing"
	"time"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// A benchmark mode's summary says how long it really ran and why it
// stopped, in text and in JSON, for each way a run ends but the NIC failing
// (TestIntegrationNICDeleted).
func TestIntegrationBenchStopReasons(t *testing.T) {
	labtest.RequireRoot(t)
	lab := labtest.NewT(t, netlab.Options{})
	link := []string{"--netns", lab.NS[netlab.Host], "--link", "xdp:" + lab.Link[netlab.Host]}
	want := func(t *testing.T, s benchSummary, stopped string, minWall float64) {
		t.Helper()
		if s.Stopped != stopped || s.StopError != "" || s.WallSeconds < minWall {
			t.Fatalf("summary: stopped %q (error %q) after %.2fs, want %q after at least %.1fs",
				s.Stopped, s.StopError, s.WallSeconds, stopped, minWall)
		}
	}

	t.Run("duration", func(t *testing.T) {
		res := runCmd(t, append([]string{"rxdrop", "--duration", "1s", "--json"}, link...)...)
		if res.code != exitOK {
			t.Fatalf("exit %d:\n%s", res.code, res.stderr)
		}
		want(t, summaryJSON(t, res), "duration", 1)
		res = runCmd(t, append([]string{"rxdrop", "--duration", "1s"}, link...)...)
		if res.code != exitOK || !strings.Contains(res.stdout, "\n  ran 1.") || !strings.Contains(res.stdout, "; stopped: --duration reached\n") {
			t.Fatalf("text summary: exit %d, want the wall time and the reason:\n%s", res.code, res.stdout)
		}
	})

	t.Run("count-rxdrop", func(t *testing.T) {
		gen := newSource(t, lab)
		r := startCmd(t, append([]string{"rxdrop", "--mac", testMAC, "--count", "100", "--duration", "0", "--json"}, link...)...)
		r.waitRunning(t)
		// Frames until it stops; a generous cap ends a failing test.
		ended := func() bool {
			select {
			case code := <-r.done:
				r.done <- code
				return true
			default:
				return false
			}
		}
		for i := 0; i < 100 && !ended(); i++ {
			if _, err := gen.SendPaced(toVif(lab), 10, 1000); err != nil {
				t.Fatal(err)
			}
		}
		res := r.wait(t)
		if res.code != exitOK {
			t.Fatalf("exit %d:\n%s", res.code, res.stderr)
		}
		s := summaryJSON(t, res)
		want(t, s, "count", 0)
		if s.RXPackets < 100 {
			t.Fatalf("stopped by --count 100 after %d frames", s.RXPackets)
		}
	})

	t.Run("count-txonly", func(t *testing.T) {
		res := runCmd(t, append([]string{"txonly", "--count", "1000", "--batch", "64", "--duration", "0", "--json"}, link...)...)
		if res.code != exitOK {
			t.Fatalf("exit %d:\n%s", res.code, res.stderr)
		}
		s := summaryJSON(t, res)
		want(t, s, "count", 0)
		// Every frame given to OutputBatch is sent or counted lost.
		if got := s.TXPackets + s.Counters["odrops"] + s.Counters["oerrors"]; got != 1000 {
			t.Fatalf("--count 1000: sent %d, dropped %d, errors %d", s.TXPackets, s.Counters["odrops"], s.Counters["oerrors"])
		}
	})

	t.Run("signal", func(t *testing.T) {
		r := startCmd(t, append([]string{"l2fwd", "--duration", "0", "--json"}, link...)...)
		r.waitRunning(t)
		time.Sleep(500 * time.Millisecond)
		r.cancel()
		res := r.wait(t)
		if res.code != exitOK {
			t.Fatalf("exit %d:\n%s", res.code, res.stderr)
		}
		want(t, summaryJSON(t, res), "signal", 0.5)
	})
}
