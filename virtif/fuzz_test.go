package virtif

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzDeliver: the VIF_DELIVERPKT filter never panics on any frame and
// state, and every frame is counted exactly once.
func FuzzDeliver(f *testing.F) {
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 8, 0}, uint8(0b011))
	f.Add([]byte{2, 0, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 8, 0, 0}, uint8(0b111))
	f.Add([]byte{1, 0, 0x5e}, uint8(0b001))
	f.Add([]byte{}, uint8(0))
	ifp, deliver := newBench(f)
	_ = ifp.Down()
	f.Fuzz(func(t *testing.T, frame []byte, state uint8) {
		running, handler, promisc := state&1 != 0, state&2 != 0, state&4 != 0
		if state&8 != 0 && len(frame) >= 6 {
			copy(frame, ifp.HardwareAddr()) // aim at our MAC
		}
		if running {
			_ = ifp.Up()
		} else {
			_ = ifp.Down()
		}
		_ = ifp.SetPromisc(promisc)
		var got []byte
		var mark, called bool
		if handler {
			ifp.SetInput(func(f []byte, p bool) { got, mark, called = bytes.Clone(f), p, true })
		} else {
			ifp.SetInput(nil)
		}
		before := ifp.Stats()
		deliver(frame)
		after := ifp.Stats()
		d := func(a, b uint64) uint64 { return a - b }
		dp, de, dd := d(after.IPackets, before.IPackets), d(after.IErrors, before.IErrors), d(after.IDrops, before.IDrops)
		if dp+de+dd != 1 {
			t.Fatalf("frame counted %d times (packets %d errors %d drops %d)", dp+de+dd, dp, de, dd)
		}
		if df, dn := d(after.IFiltered, before.IFiltered), d(after.INoHandler, before.INoHandler); df+dn > dd {
			t.Fatalf("drop breakdown %d+%d exceeds drops %d", df, dn, dd)
		}
		if dp == 1 && d(after.IBytes, before.IBytes) != uint64(len(frame)) {
			t.Fatalf("IBytes grew by %d for a %d-byte frame", d(after.IBytes, before.IBytes), len(frame))
		}
		if called != (dp == 1) {
			t.Fatalf("handler called=%v but IPackets grew by %d", called, dp)
		}
		if !called {
			return
		}
		own := bytes.Equal(frame[:6], ifp.HardwareAddr())
		mcast := frame[0]&1 != 0
		switch {
		case !running || len(frame) < 14:
			t.Fatal("frame delivered while not running or runt")
		case !own && !mcast && !promisc:
			t.Fatal("foreign unicast delivered without promiscuous mode")
		case mark != (!own && !mcast):
			t.Fatalf("promisc mark %v for own=%v mcast=%v", mark, own, mcast)
		case !bytes.Equal(got, frame):
			t.Fatal("handler got a different frame")
		}
	})
}

// FuzzLinkStr: SIOCSLINKSTR never panics on any string, errors carry the
// right errno, and a set link string reads back with strlen+1.
func FuzzLinkStr(f *testing.F) {
	for _, s := range []string{"mem:seg0", "bare:x", "", ":", "bare", "nosuch:x", "rec:x,fail", "a\x00b", strings.Repeat("b", 5000)} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, withDefault bool) {
		cfg := ClonerConfig{}
		if withDefault {
			cfg.DefaultScheme = "bare"
		}
		c, err := NewCloner(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ifp, err := c.Create()
		if err != nil {
			t.Fatal(err)
		}
		err = ifp.SetLinkStr(s)
		scheme, _, hasColon := strings.Cut(s, ":")
		var want unix.Errno
		switch {
		case len(s)+1 > LinkStrMax:
			want = unix.E2BIG
		case s == "" || strings.IndexByte(s, 0) >= 0 || (hasColon && scheme == ""):
			want = unix.EINVAL
		case !hasColon && !withDefault:
			want = unix.ENXIO
		case hasColon && lookupBackend(scheme) == nil:
			want = unix.ENXIO
		}
		if want != 0 {
			if !errors.Is(err, want) {
				t.Fatalf("SetLinkStr(%.60q) = %v, want %v", s, err, want)
			}
			if _, gerr := ifp.LinkStr(); !errors.Is(gerr, unix.ENOENT) {
				t.Fatalf("failed SetLinkStr kept a link string: %v", gerr)
			}
			return
		}
		if err != nil {
			// The backend itself refused (rec's "fail" option): still nothing kept.
			if ifp.Backend() != nil {
				t.Fatalf("backend kept after %v", err)
			}
			return
		}
		got, gerr := ifp.LinkStr()
		n, nerr := ifp.LinkStrLen()
		if got != s || gerr != nil || n != len(s)+1 || nerr != nil {
			t.Fatalf("read back %.60q (%v), length %d (%v)", got, gerr, n, nerr)
		}
		if !errors.Is(ifp.SetLinkStr(s), unix.EBUSY) {
			t.Fatal("second SetLinkStr not EBUSY")
		}
	})
}

// FuzzOutputSegments: virtif_start never panics on any segmentation, hands
// the backend 1..MaxSegments non-empty segments that add up to the frame.
func FuzzOutputSegments(f *testing.F) {
	f.Add(bytes.Repeat([]byte{0xff}, 200), []byte{1, 0, 3, 0, 0, 7})
	f.Add([]byte{}, []byte{})
	f.Add(make([]byte, 64), bytes.Repeat([]byte{1}, 64))
	ifp, b := newRec(f, "", true)
	if err := ifp.SetMTU(recMaxMTU); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data, cuts []byte) {
		// cuts are segment lengths (0 makes an empty segment); the rest of
		// data is the last segment.
		var segs [][]byte
		rest := data
		for _, c := range cuts {
			n := min(int(c), len(rest))
			segs = append(segs, rest[:n])
			rest = rest[n:]
		}
		segs = append(segs, rest)
		b.frames, b.nsegs = nil, nil
		err := ifp.Output(segs)
		switch {
		case len(data) == 0:
			if !errors.Is(err, unix.EINVAL) {
				t.Fatalf("empty frame: %v", err)
			}
		case len(data) > recMaxMTU+18:
			if !errors.Is(err, unix.EMSGSIZE) {
				t.Fatalf("oversized frame: %v", err)
			}
		case err != nil:
			t.Fatal(err)
		case len(b.frames) != 1 || !bytes.Equal(b.frames[0], data):
			t.Fatal("backend got a different frame")
		case b.nsegs[0] < 1 || b.nsegs[0] > MaxSegments:
			t.Fatalf("backend got %d segments", b.nsegs[0])
		}
	})
}
