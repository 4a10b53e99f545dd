//go:build linux

package netstack

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// The UDP echo service answers the peer's kernel datagram by datagram,
// byte for byte, counts what it sent back, and cuts a datagram longer than
// its buffer to udpEchoMax bytes.
func TestIntegrationXDPUDPEcho(t *testing.T) {
	labtest.RequireRoot(t)
	lab := labtest.NewT(t, netlab.Options{})
	peerTxChecksumOff(t, lab)
	ifc := xdpIfc(t, lab, "")
	h, err := NewHost(ifc, HostConfig{Addrs: []netip.Prefix{srv4}, UDPEchoPort: 7})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c, err := lab.DialContext(netlab.Peer)(testCtx(t), "udp", netip.AddrPortFrom(srv4.Addr(), 7).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 4096)
	const n = 20
	for i := range n {
		msg := []byte(fmt.Sprintf("datagram %d", i))
		if i == n-1 {
			msg = bytes.Repeat([]byte{'x'}, 3000)
		}
		var got []byte
		// The first datagram may go while the peer still resolves the
		// address: send again until an answer comes (a bound, not a
		// speed check).
		for try := 0; try < 50 && got == nil; try++ {
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if k, err := c.Read(buf); err == nil {
				got = buf[:k]
			}
		}
		want := msg[:min(len(msg), udpEchoMax)]
		if !bytes.Equal(got, want) {
			t.Fatalf("datagram %d: got %d bytes %q..., want %d", i, len(got), got[:min(len(got), 16)], len(want))
		}
	}
	// The counter moves once WriteTo returned, which may be after the
	// answer arrived.
	if !waitCond(10*time.Second, func() bool { return h.Counters().UDPEchoes >= n }) {
		t.Errorf("UDPEchoes = %d, want at least %d", h.Counters().UDPEchoes, n)
	}
}
