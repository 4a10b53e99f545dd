//go:build linux

package netstack

import (
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/virtif"
)

// sizeTap records the longest frame seen each way.
type sizeTap struct{ in, out atomic.Int64 }

func (s *sizeTap) Tap(f []byte, dir virtif.Direction) {
	m := &s.in
	if dir == virtif.Out {
		m = &s.out
	}
	if n := int64(len(f)); n > m.Load() {
		m.Store(n)
	}
}

func backendStat(ifc *virtif.Interface, name string) uint64 {
	for _, s := range ifc.Stats().Backend {
		if s.Name == name {
			return s.Value
		}
	}
	return 0
}

// Jumbo frames to the userspace stack on a veth of MTU 9000: the vif's MTU
// goes to 9000 (multi-buffer), the stack follows it, `ping -s 8000 -M do`
// (no fragmentation) from the peer's kernel is answered, and TCP from the
// peer's kernel carries 9000-byte segments both ways, byte for byte.
func TestIntegrationXDPJumbo(t *testing.T) {
	labtest.RequireKernel(t, 6, 6, "multi-buffer AF_XDP, XDP_USE_SG")
	labtest.RequireVethLab(t, "a veth pair of MTU 9000")
	lab := labtest.NewT(t, netlab.Options{MTU: 9000})
	peerTxChecksumOff(t, lab)
	ifc := xdpIfc(t, lab, "")
	if err := ifc.SetMTU(9000); err != nil {
		t.Fatal(err)
	}
	var sizes sizeTap
	if err := ifc.AddTap(&sizes); err != nil {
		t.Fatal(err)
	}
	h, err := NewHost(ifc, HostConfig{Addrs: []netip.Prefix{srv4}, EchoPort: 7, Probe: ProbeConfig{Off: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if got := h.Stack().Endpoint().MTU(); got != 9000 {
		t.Fatalf("the stack's link MTU is %d, want the vif's 9000", got)
	}
	out, err := lab.Run(netlab.Peer, "ping", "-n", "-c", "3", "-i", "0.2", "-W", "5", "-s", "8000", "-M", "do", srv4.Addr().String())
	if err != nil {
		t.Fatalf("ping -s 8000 -M do: %v\n%s", err, out)
	}
	// ping succeeds with one reply; a loaded machine may lose a request on
	// the veth, so what must hold is that the stack answered each request
	// the peer saw answered, and that at least one was.
	var sent, received int
	if i := strings.Index(string(out), " packets transmitted, "); i < 0 {
		t.Fatalf("ping's summary is missing:\n%s", out)
	} else if _, err := fmt.Sscanf(string(out[strings.LastIndex(string(out[:i]), "\n")+1:]), "%d packets transmitted, %d received", &sent, &received); err != nil {
		t.Fatalf("ping's summary: %v\n%s", err, out)
	}
	if n := h.Stack().Netstack().Stats().ICMP.V4.PacketsSent.EchoReply.Value(); n != uint64(received) || received == 0 {
		t.Errorf("the stack sent %d echo replies, ping received %d of %d\n%s\ncounters %+v", n, received, sent, out, ifc.Stats().Backend)
	} else if received < sent {
		t.Logf("ping received %d of %d (a request lost on the way in)\ncounters %+v", received, sent, ifc.Stats().Backend)
	}
	if in, out := sizes.in.Load(), sizes.out.Load(); in != 8042 || out != 8042 {
		t.Errorf("longest frames: in %d, out %d, want 8042 (8000 + ICMP, IPv4 and Ethernet headers) each way", in, out)
	}

	c, err := lab.DialContext(netlab.Peer)(testCtx(t), "tcp", netip.AddrPortFrom(srv4.Addr(), 7).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoCheck(t, c, 4<<20)
	// The peer's kernel fills its 8960-byte MSS (less options); gVisor's
	// segments are as long as the echo's writes make them.
	if in, out := sizes.in.Load(), sizes.out.Load(); in != 9014 || out <= 8042 {
		t.Errorf("longest frames after TCP: in %d, out %d, want 9014 in and jumbo frames out", in, out)
	}
	if n := backendStat(ifc, "rx_chains"); n < 100 {
		t.Errorf("rx_chains %d: the transfer did not come in jumbo frames", n)
	}
	for _, name := range []string{"rx_chain_too_long", "rx_chain_truncated", "xsk_rx_dropped", "tx_too_big"} {
		if n := backendStat(ifc, name); n != 0 {
			t.Errorf("%s %d", name, n)
		}
	}
}
