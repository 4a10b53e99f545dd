//go:build linux

package bpf

import (
	"bytes"
	"errors"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// The program is loaded for multi-buffer frames ("xdp.frags"): veth lets it
// on natively at an MTU of 9000, which it refuses to a single-buffer
// program (Options.NoFrags), "Peer MTU is too large to set XDP".
func TestIntegrationFragsJumboMTU(t *testing.T) {
	labtest.RequireKernel(t, 5, 18, "XDP programs for multi-buffer frames, BPF_F_XDP_HAS_FRAGS")
	labtest.RequireVethLab(t, "a veth pair of MTU 9000")
	lab := labtest.NewT(t, netlab.Options{MTU: 9000})
	s := loadT(t, nil)
	if !s.Frags() {
		t.Fatal("loaded without BPF_F_XDP_HAS_FRAGS")
	}
	err := lab.Do(netlab.Host, func() error {
		_, err := s.Attach(lab.Index[netlab.Host], AttachNative)
		return err
	})
	if err != nil {
		t.Fatalf("native attach at MTU 9000: %v", err)
	}
	single := loadT(t, &Options{NoFrags: true})
	if single.Frags() {
		t.Fatal("NoFrags: Frags() true")
	}
	if err := s.Detach(); err != nil {
		t.Fatal(err)
	}
	err = lab.Do(netlab.Host, func() error {
		_, err := single.Attach(lab.Index[netlab.Host], AttachNative)
		return err
	})
	if err == nil {
		t.Fatal("veth took a single-buffer program natively at MTU 9000")
	}
}

// Multi-buffer frames (test runs of a frame larger than a page come in
// fragments) are steered by the same rules, the Ethernet and ARP headers
// being in the first buffer, and tagged: bpf_xdp_adjust_meta works on a
// frame with fragments.
func TestIntegrationFragsSteerJumbo(t *testing.T) {
	labtest.RequireKernel(t, 5, 18, "XDP programs for multi-buffer frames, BPF_F_XDP_HAS_FRAGS")
	s := loadT(t, nil)
	setup(t, s)
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"unicast vif 0", ether(mac0, 0x0800, make([]byte, 9000))},
		{"other MAC", ether(macOther, 0x0800, make([]byte, 9000))},
		{"ARP for vif 1", ether(bcast, 0x0806, append(arp(1, ip1), make([]byte, 8000)...))},
		{"multicast vif 1", ether(mcast1, 0x86dd, make([]byte, 5000))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for p := range uint8(3) {
				checkSteerFrame(t, s, tc.frame, p)
			}
		})
	}
	requireMetaHelper(t, s)
	if err := s.SetTagging(true); err != nil {
		t.Fatal(err)
	}
	frame := ether(mac0, 0x0800, make([]byte, 9000))
	for i := range frame[14:] {
		frame[14+i] = byte(i)
	}
	before := snap(t, s, 0)
	out := make([]byte, len(frame)+64)
	opts := &ebpf.RunOptions{Data: frame, DataOut: out}
	if ret, err := s.Program().Run(opts); err != nil || ret != xdpRedirect {
		t.Fatalf("tagged jumbo frame: action %d, %v", ret, err)
	}
	if d := sub(snap(t, s, 0)[0], before[0]); d != (RuleCounters{Unicast: 1}) {
		t.Fatalf("vif 0 counters moved by %+v, want Unicast 1 (not NoMeta)", d)
	}
	out = opts.DataOut
	if vif, ok := VifFromMeta(out[:MetaLen]); !ok || vif != 0 || !bytes.Equal(out[MetaLen:], frame) {
		t.Fatalf("tagged jumbo frame: %d bytes out, tag vif %d %v", len(out), vif, ok)
	}
}

// A kernel before 5.18 refuses BPF_F_XDP_HAS_FRAGS (EINVAL): Load loads
// the program without it and says so.
func TestIntegrationFragsRefused(t *testing.T) {
	labtest.RequireRoot(t)
	old := loadSpec
	t.Cleanup(func() { loadSpec = old })
	tries := 0
	loadSpec = func(spec *ebpf.CollectionSpec, objs *steerObjects) error {
		tries++
		if spec.Programs[steerProgSteer].Flags&unix.BPF_F_XDP_HAS_FRAGS != 0 {
			return unix.EINVAL
		}
		return old(spec, objs)
	}
	s := loadT(t, nil)
	want := 2
	if !s.MetaHelper() {
		want = 3 // and once more without bpf_xdp_adjust_meta
	}
	if s.Frags() || tries != want {
		t.Fatalf("Frags %v after %d loads, want a second load without the flag", s.Frags(), tries)
	}
	loadSpec = func(*ebpf.CollectionSpec, *steerObjects) error { return unix.EPERM }
	if _, err := Load(nil); !errors.Is(err, unix.EPERM) {
		t.Fatalf("another error is not retried: %v", err)
	}
}
