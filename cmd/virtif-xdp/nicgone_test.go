//go:build linux

package main

import (
	"strings"
	"testing"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// The NIC deleted or set down under a running rxdrop, txonly, l2fwd or run,
// in every RX wait mode (poll, spin, busy polling): the command ends with
// exit 1 and an error that names the NIC and says what happened, instead of
// running on deaf (and, spinning, burning a CPU) until --duration.
func TestIntegrationNICGoneEveryMode(t *testing.T) {
	labtest.RequireRoot(t)
	cmds := [][]string{
		{"rxdrop", "--json"},
		{"txonly", "--json"},
		{"l2fwd", "--json"},
		{"run", "--addr", "198.18.0.3/24"},
	}
	for _, mode := range []string{"", ",rxwait=spin", ",busypoll=64"} {
		for _, how := range []string{"del", "down"} {
			if mode == "" && how == "del" {
				continue // TestIntegrationNICDeleted
			}
			for _, args := range cmds {
				name := args[0] + "/" + strings.TrimPrefix(mode, ",") + "/" + how
				t.Run(name, func(t *testing.T) { testNICGone(t, args, mode, how) })
			}
		}
	}
}

func testNICGone(t *testing.T, args []string, mode, how string) {
	lab := labtest.NewT(t, netlab.Options{})
	host := lab.Link[netlab.Host]
	r := startCmd(t, append(args, "--netns", lab.NS[netlab.Host], "--link", "xdp:"+host+mode, "--duration", "0")...)
	r.waitRunning(t)
	ip := []string{"link", "del", host}
	want := "removed"
	if how == "down" {
		ip, want = []string{"link", "set", host, "down"}, "set down"
	}
	if out, err := lab.Run(netlab.Host, "ip", ip...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	res := r.wait(t)
	says := strings.Contains(res.stderr, host) && strings.Contains(res.stderr, want)
	if args[0] == "txonly" {
		// Its sender usually meets the kernel's answer before an RX
		// goroutine's check does: the send error names the vif and the
		// errno, which says the device went.
		says = says || strings.Contains(res.stderr, "transmit: sendto: network is down") ||
			strings.Contains(res.stderr, "transmit: sendto: no such device")
	}
	if res.code != exitFailure || !says {
		t.Fatalf("%s after ip %s: exit %d, want %d with an error naming %s and saying %q:\n%s",
			args[0], strings.Join(ip, " "), res.code, exitFailure, host, want, res.stderr)
	}
	t.Logf("stderr: %s", res.stderr[strings.LastIndex(res.stderr, "virtif-xdp: "):])
}
