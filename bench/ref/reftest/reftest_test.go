//go:build linux

package reftest

import (
	"errors"
	"strconv"
	"testing"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

const smokeSeconds = 2

func buildC(tb testing.TB, name, binary string) string {
	tb.Helper()
	bin, err := BuildC(name, binary)
	if errors.Is(err, ErrCToolchain) {
		tb.Fatalf("%v\n(bench/deps.sh installs: gcc make pkg-config libc6-dev libxdp-dev libbpf-dev)", err)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return bin
}

// smoke runs one reference for two seconds and checks that it counted
// frames and printed its JSON line; a TX mode must also have reached the
// peer.
func smoke(t *testing.T, r Run) {
	t.Helper()
	r.Seconds = smokeSeconds
	res, err := Measure(r)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s %s: %d packets, %.0f pps, generator %d, veth dropped %d, arrived at peer %d, unaccounted %d, %v",
		res.System, res.Mode, res.Packets, res.PPS, res.Generated, res.VethDropped, res.Arrived, res.Unaccounted(), res.Extra)
	if res.Mode != r.Mode {
		t.Errorf("mode %q, want %q", res.Mode, r.Mode)
	}
	if res.Packets == 0 || res.Bytes == 0 {
		t.Errorf("packets %d, bytes %d: want both > 0", res.Packets, res.Bytes)
	}
	if r.Mode != "rxdrop" && (res.Arrived == 0 || res.Arrived > res.Packets) {
		t.Errorf("%s: %d frames arrived at the peer for %d sent", r.Mode, res.Arrived, res.Packets)
	}
	if r.Mode != "txonly" {
		if u := res.Unaccounted(); u != 0 {
			t.Errorf("%d of %d generated frames unaccounted for (negative: counted more than sent)", u, res.Generated)
		}
	}
}

func TestIntegrationXskC(t *testing.T) {
	labtest.RequireRoot(t)
	bin := buildC(t, "xsk-c", "xsk_ref")
	for _, mode := range []string{"rxdrop", "txonly", "l2fwd"} {
		t.Run(mode, func(t *testing.T) { smoke(t, Run{Binary: bin, Mode: mode}) })
	}
	// The way another program (virtif-xdp) is measured: its own command
	// line, started on XDP attach rather than a ready line.
	t.Run("argv", func(t *testing.T) {
		smoke(t, Run{Binary: bin, Mode: "rxdrop", WaitXDP: true, Argv: func(a Args) []string {
			return []string{"--interface", a.Ifname, "--mode", a.Mode, "--duration", strconv.FormatFloat(a.Seconds, 'f', 1, 64)}
		}})
	})
}

func TestIntegrationGvisor(t *testing.T) {
	labtest.RequireRoot(t)
	bin, err := BuildGvisor(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"rxdrop", "txonly"} {
		t.Run(mode, func(t *testing.T) { smoke(t, Run{Binary: bin, Mode: mode}) })
	}
}

func TestIntegrationAFPacket(t *testing.T) {
	labtest.RequireRoot(t)
	bin := buildC(t, "afpacket", "afpacket_ref")
	// Live frames need XDP on the host end; skb-borne ones do not.
	t.Run("live", func(t *testing.T) { smoke(t, Run{Binary: bin, Mode: "rxdrop", HostPass: true}) })
	t.Run("packet", func(t *testing.T) { smoke(t, Run{Binary: bin, Mode: "rxdrop", Generator: "packet"}) })
}

// The kernel's XDP_DROP on the host end: every frame sent is counted by
// the sink or dropped by veth.
func TestIntegrationXDPDrop(t *testing.T) {
	labtest.RequireRoot(t)
	res, err := Measure(Run{Mode: "rxdrop", Seconds: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("xdp-drop: %d packets, %.0f pps, generator %d, veth dropped %d", res.Packets, res.PPS, res.Generated, res.VethDropped)
	if res.Packets == 0 || res.Unaccounted() != 0 {
		t.Errorf("sink counted %d, generator sent %d, veth dropped %d", res.Packets, res.Generated, res.VethDropped)
	}
}

func TestParseResult(t *testing.T) {
	r, err := ParseResult([]byte("noise\n{\"system\":\"x\",\"mode\":\"rxdrop\",\"packets\":3,\"bytes\":192,\"seconds\":1.5,\"pps\":2,\"drops\":7}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Packets != 3 || r.Bytes != 192 || r.Extra["drops"] != float64(7) {
		t.Errorf("parsed %+v", r)
	}
	for _, bad := range []string{"", "{}", "{\"system\":\"x\"", "{\"system\":\"x\",\"mode\":\"rxdrop\",\"seconds\":0}"} {
		if _, err := ParseResult([]byte(bad)); err == nil {
			t.Errorf("ParseResult(%q) accepted", bad)
		}
	}
}
