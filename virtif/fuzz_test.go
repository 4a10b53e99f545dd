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

// seedSetLinkStr is if_virt.c 1.52's SIOCSLINKSTR (virtif_ioctl, lines
// 222-261 of the if_virt.c listing) for ifd_cmd 0, written out from the C and
// not from SetLinkStr: the checks in the C's order, on the C's inputs.
// ifdLen is ifd_len, the bytes handed in counting the NUL. A zero errno
// means the C goes on to copyinstr and virtif_create.
func seedSetLinkStr(ifUp, haveLinkstr bool, ifdLen int) unix.Errno {
	const rumpVifLinkstrmax = 4096 // RUMP_VIF_LINKSTRMAX's default
	switch {
	case ifUp: // if (ifp->if_flags & IFF_UP)
		return unix.EBUSY
	case haveLinkstr: // else if (sc->sc_linkstr)
		return unix.EBUSY
	case ifdLen > rumpVifLinkstrmax:
		return unix.E2BIG
	case ifdLen < 1:
		return unix.EINVAL
	}
	return 0
}

// portLinkRules are the rules the port adds before VIFHYPER_CREATE, from
// SetLinkStr's doc comment: a Go string may hold a NUL, where copyinstr
// would cut the C string, so it is refused; so is the empty string, which
// if_virt.c would hand to the hypercall; the scheme picks the backend. It
// returns the scheme chosen.
func portLinkRules(s, defaultScheme string) (string, unix.Errno) {
	if len(s) == 0 {
		return "", unix.EINVAL
	}
	colon := -1
	for k := len(s) - 1; k >= 0; k-- { // the first ':', found from the end
		switch s[k] {
		case 0:
			return "", unix.EINVAL
		case ':':
			colon = k
		}
	}
	scheme := defaultScheme
	switch {
	case colon == 0:
		return "", unix.EINVAL
	case colon > 0:
		scheme = s[:colon]
	case defaultScheme == "":
		return "", unix.ENXIO
	}
	for _, b := range Backends() {
		if b == scheme {
			return scheme, 0
		}
	}
	return "", unix.ENXIO
}

// FuzzLinkStr: SIOCSLINKSTR never panics on any string in any state, and
// answers as if_virt.c's rules, written out independently above, say: the
// if_virt.c's checks first in its order (up, already set, ifd_len), then
// the port's. A set link string reads back with IFLINKSTR_QUERYLEN's
// strlen+1, which is the ifd_len it was set with.
func FuzzLinkStr(f *testing.F) {
	maxOK := "bare:" + strings.Repeat("x", 4095-len("bare:")) // ifd_len 4096
	for _, s := range []string{"mem:seg0", "bare:x", "", ":", "bare", "nosuch:x", "rec:x,fail", "a\x00b", "bare:a\x00", "nilbackend:x", maxOK, maxOK + "x", strings.Repeat("b", 5000)} {
		for state := range uint8(4) {
			f.Add(s, state&1 != 0, state)
		}
	}
	f.Fuzz(func(t *testing.T, s string, withDefault bool, state uint8) {
		preset, up := state&1 != 0, state&3 == 3
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
		const presetLink = "bare:preset"
		if preset {
			if err := ifp.SetLinkStr(presetLink); err != nil {
				t.Fatal(err)
			}
		}
		if up {
			if err := ifp.Up(); err != nil {
				t.Fatal(err)
			}
		}
		want := seedSetLinkStr(up, preset, len(s)+1)
		scheme := ""
		if want == 0 {
			scheme, want = portLinkRules(s, cfg.DefaultScheme)
		}
		if want == 0 && scheme == "nilbackend" {
			want = unix.EINVAL // an OpenFunc returning no backend
		}
		err = ifp.SetLinkStr(s)
		if want == 0 && err != nil && scheme == "rec" {
			// rec's own options may refuse (fail, a bad mac=): a backend error.
			if !errors.Is(err, unix.EIO) && !errors.Is(err, unix.EINVAL) {
				t.Fatalf("SetLinkStr(%.60q): rec refused with %v", s, err)
			}
			want = unix.EIO
			if !errors.Is(err, want) {
				want = unix.EINVAL
			}
		}
		if want != 0 {
			if !errors.Is(err, want) {
				t.Fatalf("SetLinkStr(%.60q) up=%v set=%v = %v, want %v", s, up, preset, err, want)
			}
			if up && !strings.Contains(err.Error(), "up") {
				t.Fatalf("SetLinkStr while up: %q does not say the interface is up (if_virt.c checks IFF_UP first)", err)
			}
			got, gerr := ifp.LinkStr()
			if preset && (got != presetLink || gerr != nil) || !preset && !errors.Is(gerr, unix.ENOENT) {
				t.Fatalf("failed SetLinkStr changed the link string: %.60q, %v", got, gerr)
			}
			return
		}
		if err != nil {
			t.Fatalf("SetLinkStr(%.60q) = %v, want success", s, err)
		}
		got, gerr := ifp.LinkStr()
		n, nerr := ifp.LinkStrLen()
		if got != s || gerr != nil || n != len(s)+1 || nerr != nil {
			t.Fatalf("read back %.60q (%v), length %d (%v); want the string and its ifd_len %d", got, gerr, n, nerr, len(s)+1)
		}
		link := backendLink(ifp.Backend())
		if wantLink := scheme + ":" + strings.TrimPrefix(s, scheme+":"); link != wantLink {
			t.Fatalf("backend got link %.60q, want %.60q", link, wantLink)
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
