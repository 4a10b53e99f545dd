package virtif

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Taps are bpf_mtap's listeners: attached and detached at any time, each
// seeing the frames of both directions.
func TestTapAddRemove(t *testing.T) {
	ifp, b := newRec(t, "", true)
	ifp.SetInput(func([]byte, bool) {})
	var n1 int
	t1 := tapFunc(func([]byte, Direction) { n1++ })
	t2 := &countTap{}
	for _, tc := range []struct {
		name string
		op   func() error
		want unix.Errno
	}{
		{"add func tap", func() error { return ifp.AddTap(t1) }, 0},
		{"add func tap again (uncomparable, so not found equal)", func() error { return ifp.AddTap(t1) }, 0},
		{"add pointer tap", func() error { return ifp.AddTap(t2) }, 0},
		{"add pointer tap again", func() error { return ifp.AddTap(t2) }, unix.EEXIST},
		{"add nil", func() error { return ifp.AddTap(nil) }, unix.EINVAL},
		{"remove func tap (uncomparable)", func() error { return ifp.RemoveTap(t1) }, unix.ENOENT},
	} {
		wantErrno(t, tc.name, tc.op(), tc.want)
	}
	f := frameTo(ifp.HardwareAddr(), 60)
	b.cfg.Deliver(f)
	_ = ifp.Output([][]byte{f})
	if n1 != 4 || t2.n != 2 {
		t.Errorf("taps saw %d and %d frames, want 4 (attached twice) and 2", n1, t2.n)
	}
	wantErrno(t, "remove pointer tap", ifp.RemoveTap(t2), 0)
	wantErrno(t, "remove pointer tap twice", ifp.RemoveTap(t2), unix.ENOENT)
	b.cfg.Deliver(f)
	if t2.n != 2 {
		t.Errorf("removed tap still sees frames")
	}
	_ = ifp.Down()
}

type countTap struct{ n int }

func (c *countTap) Tap([]byte, Direction) { c.n++ }

// Mirrors bpf_mtap with a pcap file: tcpdump -r must read it and show every
// frame, both directions, with their MACs.
func TestPcapTcpdump(t *testing.T) {
	tcpdump, err := exec.LookPath("tcpdump")
	if err != nil {
		t.Fatal("tcpdump not installed (make deps installs it):", err)
	}
	path := filepath.Join(t.TempDir(), "vif.pcap")
	file, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	bw := bufio.NewWriter(file)
	pw, err := NewPcapWriter(bw, PcapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ifp, b := newRec(t, "", true)
	ifp.SetInput(func([]byte, bool) {})
	if err := ifp.AddTap(pw); err != nil {
		t.Fatal(err)
	}
	own := ifp.HardwareAddr()
	// Concurrent receivers and a sender, as the backend and the upper layer
	// would drive them.
	const G, N = 3, 50
	var wg sync.WaitGroup
	for range G {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range N {
				b.cfg.Deliver(frameTo(own, 60))
			}
		}()
	}
	out := frameTo(net6(0x02, 0x42, 0, 0, 0, 7), 80)
	for range N {
		if err := ifp.Output([][]byte{out[:14], out[14:40], out[40:]}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if err := ifp.RemoveTap(pw); err != nil {
		t.Fatal(err)
	}
	if err := pw.Err(); err != nil {
		t.Fatal(err)
	}
	if w, f := pw.Stats(); w != (G+1)*N || f != 0 {
		t.Errorf("pcap wrote %d, failed %d; want %d, 0", w, f, (G+1)*N)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := file.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tcpdump, "-r", path, "-nn", "-e")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("tcpdump: %v: %s", err, stderr.String())
	}
	// One line a frame; tcpdump adds indented hex dumps for unknown EtherTypes.
	var lines []string
	for _, l := range strings.Split(string(stdout), "\n") {
		if l != "" && l[0] != '\t' && l[0] != ' ' {
			lines = append(lines, l)
		}
	}
	in := fmt.Sprintf("02:ee:00:00:00:01 > %s, ethertype Unknown (0x88b5), length 60", own)
	outLine := "02:ee:00:00:00:01 > 02:42:00:00:00:07, ethertype Unknown (0x88b5), length 80"
	var nin, nout int
	for _, l := range lines {
		switch {
		case strings.Contains(l, in):
			nin++
		case strings.Contains(l, outLine):
			nout++
		}
	}
	if nin != G*N || nout != N || len(lines) != (G+1)*N {
		t.Errorf("tcpdump shows %d lines, %d received and %d sent frames; want %d and %d.\nfirst lines:\n%s",
			len(lines), nin, nout, G*N, N, strings.Join(lines[:min(4, len(lines))], "\n"))
	}
	if !strings.Contains(stderr.String(), "EN10MB") {
		t.Errorf("tcpdump did not see link type Ethernet: %s", stderr.String())
	}
	_ = ifp.Down()
}

func net6(b ...byte) []byte { return b }

// A failing writer loses nothing silently: failures are counted and the
// first error keeps its errno.
func TestPcapWriteError(t *testing.T) {
	w := &failWriter{after: 1}
	pw, err := NewPcapWriter(w, PcapOptions{Snaplen: 32, Directions: In})
	if err != nil {
		t.Fatal(err)
	}
	pw.Tap(make([]byte, 60), Out) // filtered out: not written, not failed
	pw.Tap(make([]byte, 60), In)
	pw.Tap(make([]byte, 60), In)
	if wr, f := pw.Stats(); wr != 0 || f != 2 {
		t.Errorf("written %d failed %d, want 0 and 2", wr, f)
	}
	wantErrno(t, "Err", pw.Err(), unix.ENOSPC)
	_, err = NewPcapWriter(&failWriter{}, PcapOptions{})
	wantErrno(t, "header", err, unix.ENOSPC)
}

type failWriter struct{ after, n int }

func (w *failWriter) Write(p []byte) (int, error) {
	if w.n >= w.after {
		return 0, unix.ENOSPC
	}
	w.n++
	return len(p), nil
}
