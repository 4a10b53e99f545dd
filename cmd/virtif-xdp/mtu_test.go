//go:build linux

package main

import (
	"strings"
	"testing"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// run --mtu 9000 on a veth of MTU 9000: the banner gives the MTU and its
// ceiling (the NIC's, with multi-buffer), and the peer's kernel pings the
// userspace stack with 8000-byte payloads that may not be fragmented. With
// sg=off the ceiling is one UMEM frame's and run exits 1 saying so.
func TestIntegrationRunJumbo(t *testing.T) {
	labtest.RequireKernel(t, 6, 6, "multi-buffer AF_XDP, XDP_USE_SG")
	labtest.RequireVethLab(t, "a veth pair of MTU 9000")
	labtest.RequireRoot(t)
	lab := labtest.NewT(t, netlab.Options{MTU: 9000})
	args := []string{"run", "--netns", lab.NS[netlab.Host], "--addr", "198.18.0.3/24", "--probe", "0", "--http", "off", "--mtu", "9000"}
	r := startCmd(t, append(args, "--link", "xdp:"+lab.Link[netlab.Host])...)
	r.waitRunning(t)
	if want := "mtu 9000 (at most 9000: the NIC's MTU"; !strings.Contains(r.out.String(), want) {
		t.Errorf("banner lacks %q:\n%s", want, r.out.String())
	}
	if out, err := lab.Run(netlab.Peer, "ping", "-n", "-c", "2", "-i", "0.2", "-W", "5", "-s", "8000", "-M", "do", "198.18.0.3"); err != nil {
		t.Errorf("ping -s 8000 -M do: %v\n%s", err, out)
	}
	r.cancel()
	if res := r.wait(t); res.code != exitOK {
		t.Fatalf("exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	res := runCmd(t, append(args, "--link", "xdp:"+lab.Link[netlab.Host]+",sg=off")...)
	if res.code != exitFailure || !strings.Contains(res.stderr, "outside 46..1774") || !strings.Contains(res.stderr, "multi-buffer is off: sg=off") {
		t.Fatalf("--mtu 9000 with sg=off: exit %d\n%s", res.code, res.stderr)
	}
}
