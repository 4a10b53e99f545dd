//go:build linux

package xdp

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
	"github.com/virtif-xdp/virtif-xdp/internal/virtiftest"
	"github.com/virtif-xdp/virtif-xdp/virtif"
)

var (
	peerIP = netip.MustParseAddr("198.18.0.2")
	vifIP  = netip.MustParseAddr("198.18.0.3")
	vif2IP = netip.MustParseAddr("198.18.0.4")
)

// recorder is an upper layer that keeps copies of what it receives.
type recorder struct {
	mu      sync.Mutex
	frames  [][]byte
	promisc []bool
}

func (r *recorder) input(frame []byte, promisc bool) {
	r.mu.Lock()
	r.frames = append(r.frames, append([]byte(nil), frame...))
	r.promisc = append(r.promisc, promisc)
	r.mu.Unlock()
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.frames)
}

// matching returns the received frames that carry marker.
func (r *recorder) matching(marker []byte) (out [][]byte, promisc []bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, f := range r.frames {
		if bytes.Contains(f, marker) {
			out = append(out, f)
			promisc = append(promisc, r.promisc[i])
		}
	}
	return out, promisc
}

// waitFor polls until cond holds or a generous deadline passes; the deadline
// only bounds a failing test, it asserts nothing about speed.
func waitFor(cond func() bool) bool {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cond()
}

// settle waits long enough for frames in flight on a veth to land, for tests
// that check something did NOT arrive.
func settle() { time.Sleep(200 * time.Millisecond) }

type testVif struct {
	c   *virtif.Cloner
	ifc *virtif.Interface
	rec *recorder
	b   *Backend
}

// newCloner makes a cloner that the test's end closes.
var newCloner = virtiftest.NewCloner

// newVif creates a vif on the lab's host-side veth with link options opts
// ("" or ",key=value...") and brings it up.
func newVif(t testing.TB, lab *netlab.Lab, c *virtif.Cloner, opts string) *testVif {
	t.Helper()
	if c == nil {
		c = newCloner(t)
	}
	v, err := createVif(lab, c, opts, true)
	if err != nil {
		labtest.SkipWithoutZeroCopy(t, err)
		t.Fatal(err)
	}
	return v
}

// wantBind is the bind mode the tests' link strings ask for: copy on veth,
// zero-copy when the kernel lab adds mode=zerocopy.
func wantBind() string {
	if strings.Contains(netlab.TestLinkOpts(), "mode=zerocopy") {
		return "zerocopy"
	}
	return "copy"
}

// newVifNoUp creates a vif on the lab's NIC without bringing it up, from
// wherever the caller runs, an input handler included (so it reports a
// failure with t.Error).
func newVifNoUp(t testing.TB, lab *netlab.Lab, c *virtif.Cloner) *testVif {
	v, err := createVif(lab, c, "", false)
	if err != nil {
		t.Error(err)
	}
	return v
}

// createVif creates a vif on the lab's NIC, setting its link string on a
// thread in the NIC's namespace, and brings it up if asked.
func createVif(lab *netlab.Lab, c *virtif.Cloner, opts string, up bool) (*testVif, error) {
	v := &testVif{c: c, rec: &recorder{}}
	err := lab.Do(netlab.Host, func() error {
		ifc, err := c.Create()
		if err != nil {
			return err
		}
		v.ifc = ifc
		if err := ifc.SetLinkStr("xdp:" + lab.Link[netlab.Host] + opts + netlab.TestLinkOpts()); err != nil {
			return err
		}
		ifc.SetInput(v.rec.input)
		if up {
			return ifc.Up()
		}
		return nil
	})
	if err == nil {
		v.b = v.ifc.Backend().(*Backend)
	}
	return v, err
}

// rawSock is an AF_PACKET socket on one side of the lab.
type rawSock struct{ fd int }

func openRaw(t testing.TB, lab *netlab.Lab, side int) *rawSock {
	t.Helper()
	var r rawSock
	err := lab.Do(side, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		r.fd = fd
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: lab.Index[side]})
	})
	if err != nil {
		t.Fatal(err)
	}
	// Room for bursts: the test reads after sending hundreds of frames.
	if err := unix.SetsockoptInt(r.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
	if err := unix.SetsockoptTimeval(r.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(r.fd) })
	return &r
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// collect reads incoming frames (not our own outgoing ones) that carry
// marker until want of them arrived or the deadline passed.
func (r *rawSock) collect(marker []byte, want int, wait time.Duration) [][]byte {
	var out [][]byte
	buf := make([]byte, 65536)
	deadline := time.Now().Add(wait)
	for len(out) < want && time.Now().Before(deadline) {
		n, from, err := unix.Recvfrom(r.fd, buf, 0)
		if err != nil {
			continue
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if bytes.Contains(buf[:n], marker) {
			out = append(out, append([]byte(nil), buf[:n]...))
		}
	}
	return out
}

func (r *rawSock) send(t *testing.T, frames ...[]byte) {
	t.Helper()
	for _, f := range frames {
		if _, err := unix.Write(r.fd, f); err != nil {
			t.Fatal(err)
		}
	}
}

// frame builds a UDP frame from the peer to dst whose payload carries marker.
func frame(lab *netlab.Lab, dst net.HardwareAddr, marker string, size int) []byte {
	f := trafficgen.UDPFrame(dst, lab.MAC[netlab.Peer], peerIP, vifIP, 9, 9, size)
	copy(f[len(f)-len(marker):], marker)
	return f
}

// arpRequest builds a broadcast ARP request from the peer for target.
func arpRequest(lab *netlab.Lab, target netip.Addr) []byte {
	return trafficgen.ARPRequest(lab.MAC[netlab.Peer], peerIP, target)
}

// stat is the backend counter called name; a missing one reads as the
// largest value, so no check passes on it by accident.
func stat(st virtif.Stats, name string) uint64 {
	if v, ok := virtif.LookupStat(st.Backend, name); ok {
		return v
	}
	return ^uint64(0)
}
