package virtif

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// recBackend is a small recording backend (scheme "rec"). It implements
// every optional interface. Link string options after the name:
// fail (open fails with EIO), mac=XX:..., mtu=N, senderr, dyingerr,
// closeerr (Close fails with EIO).
type recBackend struct {
	cfg BackendConfig

	mu       sync.Mutex
	events   []string
	frames   [][]byte // flattened copies of what Send got
	nsegs    []int    // segments per Send
	flagsAt  []Flags  // interface flags seen inside Send
	flushes  int
	mac      net.HardwareAddr
	maxMTU   int
	sendErr  error
	dyingErr error
	closeErr error
	failNext error     // returned by the next optional-interface call
	block    chan bool // if set, Send waits for a value
	entered  chan bool // if set, Send signals entry
	ifp      *Interface
	busy     atomic.Int32
	overlap  atomic.Bool // Send was ever entered concurrently
}

// recMaxMTU is rec's MaxMTU unless mtu=N says otherwise: a jumbo backend.
const recMaxMTU = 9000

// bareBackend implements only Backend (scheme "bare").
type bareBackend struct{ cfg BackendConfig }

func (b *bareBackend) Send([][]byte) error { return nil }
func (b *bareBackend) Dying() error        { return nil }
func (b *bareBackend) Close() error        { return nil }

var (
	_ Backend            = (*recBackend)(nil)
	_ HardwareAddrer     = (*recBackend)(nil)
	_ HardwareAddrSetter = (*recBackend)(nil)
	_ Flusher            = (*recBackend)(nil)
	_ MulticastFilter    = (*recBackend)(nil)
	_ Promiscuous        = (*recBackend)(nil)
	_ AddrRegistrar      = (*recBackend)(nil)
	_ MTULimiter         = (*recBackend)(nil)
	_ StatsReporter      = (*recBackend)(nil)
)

func init() {
	for _, r := range []struct {
		s  string
		fn OpenFunc
	}{
		{"rec", openRec},
		{"bare", func(cfg BackendConfig) (Backend, error) { return &bareBackend{cfg: cfg}, nil }},
		{"nilbackend", func(BackendConfig) (Backend, error) { return nil, nil }},
	} {
		if err := RegisterBackend(r.s, r.fn); err != nil {
			panic(err) // test setup only
		}
	}
}

func openRec(cfg BackendConfig) (Backend, error) {
	b := &recBackend{cfg: cfg}
	_, rest, _ := strings.Cut(cfg.Link, ":")
	for _, opt := range strings.Split(rest, ",")[1:] {
		k, v, _ := strings.Cut(opt, "=")
		switch k {
		case "fail":
			return nil, unix.EIO
		case "mac":
			m, err := net.ParseMAC(v)
			if err != nil {
				return nil, fmt.Errorf("mac: %w", unix.EINVAL)
			}
			b.mac = m
		case "mtu":
			b.maxMTU, _ = strconv.Atoi(v)
		case "senderr":
			b.sendErr = unix.EIO
		case "dyingerr":
			b.dyingErr = unix.EAGAIN
		case "closeerr":
			b.closeErr = unix.EIO
		}
	}
	return b, nil
}

func (b *recBackend) log(format string, args ...any) {
	b.mu.Lock()
	b.events = append(b.events, fmt.Sprintf(format, args...))
	b.mu.Unlock()
}

func (b *recBackend) Events() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.events...)
}

func (b *recBackend) takeFail() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	err := b.failNext
	b.failNext = nil
	return err
}

func (b *recBackend) Send(segs [][]byte) error {
	if b.busy.Add(1) != 1 {
		b.overlap.Store(true)
	}
	defer b.busy.Add(-1)
	if b.entered != nil {
		b.entered <- true
	}
	if b.block != nil {
		<-b.block
	}
	var f []byte
	for _, s := range segs {
		f = append(f, s...)
	}
	b.mu.Lock()
	b.frames = append(b.frames, f)
	b.nsegs = append(b.nsegs, len(segs))
	if b.ifp != nil {
		b.flagsAt = append(b.flagsAt, b.ifp.Flags())
	}
	b.mu.Unlock()
	return b.sendErr
}

func (b *recBackend) Dying() error {
	b.log("dying")
	return b.dyingErr
}

func (b *recBackend) Close() error {
	f := Flags(0)
	if b.ifp != nil {
		f = b.ifp.Flags()
	}
	b.log("close running=%v", f&FlagRunning != 0)
	return b.closeErr
}

func (b *recBackend) HardwareAddr() net.HardwareAddr { return b.mac }
func (b *recBackend) SetHardwareAddr(m net.HardwareAddr) error {
	if err := b.takeFail(); err != nil {
		return err
	}
	b.log("mac %v", m)
	return nil
}
func (b *recBackend) Flush() error {
	b.mu.Lock()
	b.flushes++
	b.mu.Unlock()
	return nil
}
func (b *recBackend) SetMulticast(g net.HardwareAddr, join bool) error {
	if err := b.takeFail(); err != nil {
		return err
	}
	b.log("multicast %v %v", g, join)
	return nil
}
func (b *recBackend) SetPromisc(on bool) error {
	if err := b.takeFail(); err != nil {
		return err
	}
	b.log("promisc %v", on)
	return nil
}
func (b *recBackend) SetIPv4(a netip.Addr, add bool) error {
	if err := b.takeFail(); err != nil {
		return err
	}
	b.log("ipv4 %v %v", a, add)
	return nil
}
func (b *recBackend) MaxMTU() int {
	if b.maxMTU == 0 {
		return recMaxMTU
	}
	return b.maxMTU
}
func (b *recBackend) AppendStats(dst []Stat) []Stat {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append(dst, Stat{Name: "rec_sends", Value: uint64(len(b.frames))})
}

// backendLink is the link string a test backend was opened with.
func backendLink(b Backend) string {
	switch b := b.(type) {
	case *recBackend:
		return b.cfg.Link
	case *bareBackend:
		return b.cfg.Link
	}
	return ""
}

// newCloner is a cloner closed at the end of the test.
func newCloner(t testing.TB, cfg ClonerConfig) *Cloner {
	t.Helper()
	c, err := NewCloner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("cloner close: %v", err)
		}
	})
	return c
}

// newRec creates an interface on a recording backend (link "rec:NAME"+opts),
// optionally up.
func newRec(t testing.TB, opts string, up bool) (*Interface, *recBackend) {
	t.Helper()
	c := newCloner(t, ClonerConfig{})
	ifp, err := c.Create()
	if err != nil {
		t.Fatal(err)
	}
	if err := ifp.SetLinkStr("rec:" + t.Name() + opts); err != nil {
		t.Fatal(err)
	}
	b := ifp.Backend().(*recBackend)
	b.ifp = ifp
	if up {
		if err := ifp.Up(); err != nil {
			t.Fatal(err)
		}
	}
	return ifp, b
}

// wantErrno checks err against an errno (0: no error).
func wantErrno(t testing.TB, what string, err error, want unix.Errno) {
	t.Helper()
	switch {
	case want == 0 && err != nil:
		t.Errorf("%s: unexpected error %v", what, err)
	case want != 0 && !errors.Is(err, want):
		t.Errorf("%s: error %v, want %v (%s)", what, err, want, unix.ErrnoName(want))
	}
}

var regRuns atomic.Int32

func TestRegisterBackend(t *testing.T) {
	open := func(BackendConfig) (Backend, error) { return nil, unix.EIO }
	fresh := fmt.Sprintf("regtest%d", regRuns.Add(1)) // the registry is global: -count, -cpu rerun
	for _, tc := range []struct {
		scheme string
		fn     OpenFunc
		want   unix.Errno
	}{
		{"", open, unix.EINVAL},
		{"a:b", open, unix.EINVAL},
		{"a,b", open, unix.EINVAL},
		{"nilfn", nil, unix.EINVAL},
		{"rec", open, unix.EEXIST},
		{fresh, open, 0},
		{fresh, open, unix.EEXIST},
	} {
		wantErrno(t, fmt.Sprintf("RegisterBackend(%q)", tc.scheme), RegisterBackend(tc.scheme, tc.fn), tc.want)
	}
	found := false
	for _, s := range Backends() {
		found = found || s == fresh
	}
	if !found {
		t.Errorf("Backends() = %v, lacks %s", Backends(), fresh)
	}
}
