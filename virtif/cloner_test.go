package virtif

import (
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Mirrors virtif_clone: names, flags and MTU of a fresh interface, unit
// allocation and its errors.
func TestClone(t *testing.T) {
	c := newCloner(t, ClonerConfig{})
	for n := range 3 {
		ifp, err := c.Create()
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("vif%d", n); ifp.Name() != want || ifp.Unit() != n {
			t.Errorf("Create #%d = %s unit %d, want %s", n, ifp.Name(), ifp.Unit(), want)
		}
		if f, want := ifp.Flags(), FlagBroadcast|FlagSimplex|FlagMulticast; f != want {
			t.Errorf("%s flags %v, want %v", ifp.Name(), f, want)
		}
		if ifp.MTU() != 1500 {
			t.Errorf("%s MTU %d, want ETHERMTU", ifp.Name(), ifp.MTU())
		}
		if ifp.HardwareAddr() != nil {
			t.Errorf("%s has a MAC before its backend", ifp.Name())
		}
	}
	if err := c.Destroy("vif1"); err != nil {
		t.Fatal(err)
	}
	if ifp, err := c.Create(); err != nil || ifp.Name() != "vif1" {
		t.Errorf("Create after destroying vif1 = %v, %v; want the lowest free unit, vif1", ifp, err)
	}
	for _, tc := range []struct {
		unit int
		want unix.Errno
	}{
		{2, unix.EEXIST},
		{-1, unix.EINVAL},
		{1e13, unix.EINVAL}, // name longer than IFNAMSIZ
		{7, 0},
	} {
		_, err := c.CreateUnit(tc.unit)
		wantErrno(t, fmt.Sprintf("CreateUnit(%d)", tc.unit), err, tc.want)
	}
	var names []string
	for _, i := range c.Interfaces() {
		names = append(names, i.Name())
	}
	if got := strings.Join(names, " "); got != "vif0 vif1 vif2 vif7" {
		t.Errorf("Interfaces() = %s", got)
	}
	if ifp, ok := c.Interface("vif7"); !ok || ifp.Unit() != 7 {
		t.Errorf("Interface(vif7) = %v, %v", ifp, ok)
	}
	if _, ok := c.Interface("vif3"); ok {
		t.Error("Interface(vif3) found")
	}
}

func TestClonerConfig(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		want   unix.Errno
		first  string
	}{
		{"", 0, "vif0"},
		{"virt", 0, "virt0"},
		{"v1", unix.EINVAL, ""},
		{"abcdefghijklm", unix.EINVAL, ""},
		{"ab/c", unix.EINVAL, ""},
	} {
		c, err := NewCloner(ClonerConfig{Prefix: tc.prefix})
		wantErrno(t, fmt.Sprintf("NewCloner(%q)", tc.prefix), err, tc.want)
		if err != nil {
			continue
		}
		ifp, err := c.Create()
		if err != nil || ifp.Name() != tc.first {
			t.Errorf("prefix %q: first interface %v, %v; want %s", tc.prefix, ifp, err, tc.first)
		}
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	}
}

// Mirrors virtif_clone without RUMP_VIF_LINKSTR: the unit number is the link
// string and the backend is created at clone time; on failure nothing stays.
func TestUnitMode(t *testing.T) {
	c := newCloner(t, ClonerConfig{UnitMode: true, DefaultScheme: "rec"})
	ifp, err := c.CreateUnit(3)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := ifp.LinkStr(); s != "3" || err != nil {
		t.Errorf("LinkStr = %q, %v; want the unit number", s, err)
	}
	b, ok := ifp.Backend().(*recBackend)
	if !ok || b.cfg.Link != "rec:3" || b.cfg.Name != "vif3" {
		t.Fatalf("backend %#v: want rec opened with link rec:3 for vif3", ifp.Backend())
	}
	if err := ifp.Up(); err != nil {
		t.Errorf("Up in unit mode: %v", err)
	}
	wantErrno(t, "SetLinkStr in unit mode", ifp.SetLinkStr("rec:x"), unix.EBUSY)
	_ = ifp.Down()

	// A backend that cannot be created: the clone fails and the unit stays free.
	bad := newCloner(t, ClonerConfig{UnitMode: true})
	_, err = bad.Create()
	wantErrno(t, "unit mode without default scheme", err, unix.ENXIO)
	fail := newCloner(t, ClonerConfig{UnitMode: true, DefaultScheme: "nilbackend"})
	_, err = fail.Create()
	wantErrno(t, "unit mode, backend returns nil", err, unix.EINVAL)
	if n := len(bad.Interfaces()) + len(fail.Interfaces()); n != 0 {
		t.Errorf("%d interfaces kept after failed clones", n)
	}
}

// Mirrors virtif_unclone: EBUSY while up; VIFHYPER_DYING, then virtif_stop,
// then VIFHYPER_DESTROY; a dying error keeps the interface.
func TestDestroy(t *testing.T) {
	c := newCloner(t, ClonerConfig{})
	ifp, _ := c.Create()
	if err := ifp.SetLinkStr("rec:destroy"); err != nil {
		t.Fatal(err)
	}
	b := ifp.Backend().(*recBackend)
	b.ifp = ifp
	_ = ifp.Up()
	wantErrno(t, "Destroy while up", c.Destroy("vif0"), unix.EBUSY)
	_ = ifp.Down()
	// Down cleared RUNNING already; bring it to RUNNING without UP to see
	// that Destroy stops it before closing the backend.
	ifp.flags.Or(uint32(FlagRunning))
	if err := c.Destroy("vif0"); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(b.Events(), "; "), "dying; close running=false"; got != want {
		t.Errorf("backend saw %q, want %q", got, want)
	}
	wantErrno(t, "Destroy twice", c.Destroy("vif0"), unix.ENXIO)
	wantErrno(t, "Up after destroy", ifp.Up(), unix.ENXIO)
	wantErrno(t, "Output after destroy", ifp.Output([][]byte{make([]byte, 60)}), unix.ENXIO)
	if err := ifp.Close(); err != nil {
		t.Errorf("Close after destroy: %v", err)
	}

	// Without a link string there is no backend to tell.
	bare, _ := c.Create()
	if err := c.Destroy(bare.Name()); err != nil {
		t.Errorf("Destroy without backend: %v", err)
	}

	// VIFHYPER_DYING failing aborts the destroy.
	d, _ := c.Create()
	if err := d.SetLinkStr("rec:dying,dyingerr"); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "Destroy with dying error", c.Destroy(d.Name()), unix.EAGAIN)
	if _, ok := c.Interface(d.Name()); !ok {
		t.Error("interface gone after failed dying")
	}
	d.Backend().(*recBackend).dyingErr = nil
	if err := d.Close(); err != nil {
		t.Error(err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// Mirrors VIF_MODCMD MODULE_CMD_FINI, improved: EBUSY while interfaces
// remain instead of ENOTTY always.
func TestDetach(t *testing.T) {
	c, err := NewCloner(ClonerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ifp, _ := c.Create()
	wantErrno(t, "Detach with vif0", c.Detach(), unix.EBUSY)
	if err := ifp.Close(); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "Detach", c.Detach(), 0)
	wantErrno(t, "Detach twice", c.Detach(), 0)
	_, err = c.Create()
	wantErrno(t, "Create after Detach", err, unix.ENXIO)
	wantErrno(t, "Close after Detach", c.Close(), 0)
}

// The zero Interface (not from a cloner) answers ENXIO, never panics.
func TestZeroInterface(t *testing.T) {
	var i Interface
	g := []byte{1, 0, 0x5e, 0, 0, 1}
	for name, err := range map[string]error{
		"SetLinkStr":    i.SetLinkStr("rec:x"),
		"Up":            i.Up(),
		"Output":        i.Output([][]byte{make([]byte, 60)}),
		"OutputBatch":   func() error { _, err := i.OutputBatch([][][]byte{{make([]byte, 60)}}); return err }(),
		"SetMTU":        i.SetMTU(1500),
		"JoinMulticast": i.JoinMulticast(g),
		"Close":         i.Close(),
	} {
		wantErrno(t, name, err, unix.ENXIO)
	}
	_ = i.Down()
	_ = i.Stats()
	_ = i.Flags()
	if _, err := NewPcapWriter(nil, PcapOptions{}); !isErrno(err, unix.EINVAL) {
		t.Errorf("NewPcapWriter(nil): %v", err)
	}
}

// VIFHYPER_DESTROY's error reaches the caller of every way to destroy,
// with its errno, and the interface is gone all the same (if_virt.c's
// virtif_unclone frees it whatever the hypercall says).
func TestDestroyBackendCloseError(t *testing.T) {
	c, err := NewCloner(ClonerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		destroy func(*Interface) error
	}{
		{"Interface.Close", (*Interface).Close},
		{"Cloner.Destroy", func(i *Interface) error {
			_ = i.Down() // Destroy refuses an up interface
			return c.Destroy(i.Name())
		}},
		{"Cloner.Close", func(*Interface) error { return c.Close() }}, // last: it detaches
	} {
		name, destroy := tc.name, tc.destroy
		ifp, err := c.Create()
		if err != nil {
			t.Fatal(err)
		}
		if err := ifp.SetLinkStr("rec:closeerr,closeerr"); err != nil {
			t.Fatal(err)
		}
		_ = ifp.Up()
		err = destroy(ifp)
		wantErrno(t, name, err, unix.EIO)
		if err != nil && !strings.Contains(err.Error(), "backend close") {
			t.Errorf("%s: error %q does not say the backend's close failed", name, err)
		}
		if _, ok := c.Interface(ifp.Name()); ok {
			t.Errorf("%s: interface kept after its backend's close failed", name)
		}
		wantErrno(t, name+" then Close again", ifp.Close(), 0)
	}
	wantErrno(t, "Cloner.Close again", c.Close(), 0)
}

// The zero Cloner is NewCloner(ClonerConfig{}): prefix "vif", link-string
// mode, no default scheme, the default send queue.
func TestZeroCloner(t *testing.T) {
	var c Cloner
	ref := newCloner(t, ClonerConfig{})
	if c.Prefix() != ref.Prefix() {
		t.Errorf("zero Cloner prefix %q, NewCloner's %q", c.Prefix(), ref.Prefix())
	}
	ifp, err := c.Create()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ref.Create()
	if ifp.Name() != want.Name() || ifp.queueLen != want.queueLen || ifp.defaultScheme != want.defaultScheme {
		t.Errorf("zero Cloner made %s (queue %d, scheme %q), NewCloner %s (queue %d, scheme %q)",
			ifp.Name(), ifp.queueLen, ifp.defaultScheme, want.Name(), want.queueLen, want.defaultScheme)
	}
	wantErrno(t, "scheme-less link string", ifp.SetLinkStr("seg0"), unix.ENXIO)
	if err := ifp.SetLinkStr("rec:zero"); err != nil {
		t.Fatal(err)
	}
	if err := ifp.Up(); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "Output", ifp.Output([][]byte{frameTo(bcast, 60)}), 0)
	if u, err := c.CreateUnit(3); err != nil || u.Name() != "vif3" {
		t.Errorf("CreateUnit(3) = %v, %v", u, err)
	}
	if got := len(c.Interfaces()); got != 2 {
		t.Errorf("%d interfaces, want 2", got)
	}
	wantErrno(t, "Destroy", c.Destroy("vif3"), 0)
	wantErrno(t, "Close", c.Close(), 0)
	_, err = c.Create()
	wantErrno(t, "Create after Close", err, unix.ENXIO)

	var d Cloner
	wantErrno(t, "Detach of a zero Cloner", d.Detach(), 0)
	wantErrno(t, "Destroy on a zero Cloner", new(Cloner).Destroy("vif0"), unix.ENXIO)
	if _, ok := new(Cloner).Interface("vif0"); ok {
		t.Error("zero Cloner has vif0")
	}
}
