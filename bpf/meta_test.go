//go:build linux

package bpf

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// requireMetaHelper skips a test of the tag itself on a kernel whose
// verifier refuses bpf_xdp_adjust_meta: there Load loaded the program that
// never tags (TestIntegrationLoadWithoutMetaHelper covers that).
func requireMetaHelper(tb testing.TB, s *Steering) {
	tb.Helper()
	if !s.MetaHelper() {
		tb.Skip("this kernel's verifier refuses bpf_xdp_adjust_meta to XDP programs: the program was loaded without tags")
	}
}

// A kernel whose verifier does not offer bpf_xdp_adjust_meta to XDP
// programs (a 6.18.44 build did this) refuses the whole program; Load then
// loads it with no_meta set, says so (MetaHelper false), and the program
// behaves as on a driver without metadata: with tagging on, a frame for a
// vif passes to the host counted NoMeta, which is what makes the receiver
// demultiplex by MAC. The refusal is played here, so that the test runs on
// every kernel.
func TestIntegrationLoadWithoutMetaHelper(t *testing.T) {
	old := loadSpec
	t.Cleanup(func() { loadSpec = old })
	tries := 0
	loadSpec = func(spec *ebpf.CollectionSpec, objs *steerObjects) error {
		tries++
		var noMeta uint32
		if err := spec.Variables[steerVarNoMeta].Get(&noMeta); err != nil {
			return err
		}
		if noMeta == 0 {
			return &ebpf.VerifierError{Cause: unix.EINVAL, Log: []string{
				"0: R1=ctx() R10=fp0", "program of this type cannot use helper bpf_xdp_adjust_meta#54"}}
		}
		return old(spec, objs)
	}
	s := loadT(t, nil)
	if s.MetaHelper() || tries < 2 {
		t.Fatalf("MetaHelper %v after %d loads; want false after a second load", s.MetaHelper(), tries)
	}
	if !s.Frags() {
		t.Fatal("the refused helper also dropped BPF_F_XDP_HAS_FRAGS")
	}
	setup(t, s)
	if err := s.SetTagging(true); err != nil {
		t.Fatal(err)
	}
	f0 := ether(mac0, 0x0800, nil)
	before := snap(t, s, 0)
	if got := run(t, s, f0); got != xdpPass {
		t.Fatalf("tagging on without the helper: action %d, want XDP_PASS", got)
	}
	if d := sub(snap(t, s, 0)[0], before[0]); d != (RuleCounters{NoMeta: 1}) {
		t.Fatalf("vif 0 counters moved by %+v, want NoMeta 1", d)
	}
	// Another verifier error is not taken for this one.
	loadSpec = func(*ebpf.CollectionSpec, *steerObjects) error {
		return &ebpf.VerifierError{Cause: unix.EACCES, Log: []string{"R1 invalid mem access"}}
	}
	if _, err := Load(nil); !errors.Is(err, unix.EACCES) {
		t.Fatalf("another verifier error: %v, want EACCES", err)
	}
}

// With tagging on, redirected frames carry the vif in XDP metadata, so that
// a socket shared by several vifs can tell whose frame it got; passed frames
// carry nothing, and with tagging off redirected frames carry nothing either.
// BPF_PROG_TEST_RUN returns the metadata in front of the frame.
func TestIntegrationMetaTag(t *testing.T) {
	s := loadT(t, nil)
	requireMetaHelper(t, s)
	setup(t, s)
	if err := s.SetSocket(1, 0, xskFD(t)); err != nil {
		t.Fatal(err)
	}
	// Off after Load: redirected frames carry nothing.
	untagged := ether(mac0, 0x0800, nil)
	out := make([]byte, len(untagged)+64)
	opts := &ebpf.RunOptions{Data: untagged, DataOut: out}
	if ret, err := s.Program().Run(opts); err != nil || ret != xdpRedirect || !bytes.Equal(opts.DataOut, untagged) {
		t.Fatalf("tagging off: action %d, %v, out % x", ret, err, opts.DataOut)
	}
	if err := s.SetTagging(true); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		frame []byte
		vif   int // -1: passed, no tag
	}{
		{"unicast vif 0", ether(mac0, 0x0800, nil), 0},
		{"unicast vif 1", ether(mac1, 0x0800, nil), 1},
		{"ARP for vif 1", ether(bcast, 0x0806, arp(1, ip1)), 1},
		{"other MAC", ether(macOther, 0x0800, nil), -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := make([]byte, len(tc.frame)+64)
			opts := &ebpf.RunOptions{Data: tc.frame, DataOut: out}
			if _, err := s.Program().Run(opts); err != nil {
				t.Fatal(err)
			}
			out = opts.DataOut
			if tc.vif < 0 {
				if !bytes.Equal(out, tc.frame) {
					t.Fatalf("passed frame changed: % x", out)
				}
				return
			}
			if len(out) != len(tc.frame)+MetaLen || !bytes.Equal(out[MetaLen:], tc.frame) {
				t.Fatalf("out %d bytes, want the frame behind %d bytes of metadata", len(out), MetaLen)
			}
			vif, ok := VifFromMeta(out[:MetaLen])
			if !ok || vif != tc.vif {
				t.Fatalf("metadata % x: vif %d ok %v, want vif %d", out[:MetaLen], vif, ok, tc.vif)
			}
		})
	}
	if _, ok := VifFromMeta([]byte{1, 2, 3, 4}); ok {
		t.Fatal("VifFromMeta accepted untagged bytes")
	}
	if _, ok := VifFromMeta(nil); ok {
		t.Fatal("VifFromMeta accepted no bytes")
	}
}

// Options.NoMeta makes the program behave as on a driver without XDP
// metadata: while tagging is on, a frame it would redirect passes to the
// host untagged and is counted as NoMeta in the vif's row and the host's
// (NoMeta reads the latter), not as NoSocket; with tagging off it is
// redirected as usual, and a frame without a socket is still NoSocket.
func TestIntegrationNoMeta(t *testing.T) {
	s := loadT(t, &Options{NoMeta: true})
	setup(t, s)
	if !s.Options().NoMeta {
		t.Fatal("Options().NoMeta is false")
	}
	f0, f1 := ether(mac0, 0x0800, nil), ether(mac1, 0x0800, nil)
	if got := run(t, s, f0); got != xdpRedirect {
		t.Fatalf("tagging off: action %d, want XDP_REDIRECT", got)
	}
	if err := s.SetTagging(true); err != nil {
		t.Fatal(err)
	}
	before := snap(t, s, 0, 1)
	out := make([]byte, len(f0)+64)
	opts := &ebpf.RunOptions{Data: f0, DataOut: out}
	if ret, err := s.Program().Run(opts); err != nil || ret != xdpPass || !bytes.Equal(opts.DataOut, f0) {
		t.Fatalf("tagging on: action %d, %v, out % x; want XDP_PASS of the frame as it came", ret, err, opts.DataOut)
	}
	if got := run(t, s, f1); got != xdpPass { // vif 1 has no socket
		t.Fatalf("no socket: action %d, want XDP_PASS", got)
	}
	after := snap(t, s, 0, 1)
	if d := sub(after[0], before[0]); d != (RuleCounters{NoMeta: 1}) {
		t.Fatalf("vif 0 counters moved by %+v, want NoMeta 1", d)
	}
	if d := sub(after[1], before[1]); d != (RuleCounters{NoSocket: 1}) {
		t.Fatalf("vif 1 counters moved by %+v, want NoSocket 1", d)
	}
	if d := sub(after[-1], before[-1]); d != (RuleCounters{NoSocket: 1, NoMeta: 1}) || d.Passed() != 2 {
		t.Fatalf("host counters moved by %+v, want NoSocket 1, NoMeta 1", d)
	}
	if n, err := s.NoMeta(); err != nil || n != after[-1].NoMeta {
		t.Fatalf("NoMeta() = %d, %v; host row says %d", n, err, after[-1].NoMeta)
	}
	// Without the option the same frame is tagged and redirected.
	plain := loadT(t, nil)
	requireMetaHelper(t, plain)
	setup(t, plain)
	if err := plain.SetTagging(true); err != nil {
		t.Fatal(err)
	}
	if got := run(t, plain, f0); got != xdpRedirect {
		t.Fatalf("without NoMeta: action %d, want XDP_REDIRECT", got)
	}
	if n, err := plain.NoMeta(); err != nil || n != 0 {
		t.Fatalf("without NoMeta: NoMeta() = %d, %v", n, err)
	}
}

// MetaHelperAvailable answers what a program loaded with the defaults says.
func TestIntegrationMetaHelperAvailable(t *testing.T) {
	s := loadT(t, nil)
	ok, err := MetaHelperAvailable()
	if err != nil || ok != s.MetaHelper() {
		t.Fatalf("MetaHelperAvailable = %v, %v; a loaded program says %v", ok, err, s.MetaHelper())
	}
}
