//go:build linux

package bpf

import (
	"bytes"
	"encoding/binary"
	"net"
	"os"
	"testing"
	"time"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
	"golang.org/x/sys/unix"
)

// etherTest is IEEE 802's local experimental ethertype: the host kernel
// ignores it, AF_PACKET still sees it.
const etherTest = 0x88b5

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// packetSocket opens an AF_PACKET socket bound to ifindex, in the calling
// thread's namespace.
func packetSocket(ifindex int) (int, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return -1, os.NewSyscallError("socket", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("bind", err)
	}
	// A safety net so a lost frame fails the test instead of hanging it.
	tv := unix.NsecToTimeval(int64(10 * time.Second))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return -1, os.NewSyscallError("setsockopt", err)
	}
	return fd, nil
}

func marked(dst net.HardwareAddr, mark byte) []byte {
	return ether(dst, etherTest, []byte("virtif-xdp steer test "+string(mark)))
}

// Real frames through an attached program: those for a vif's MAC are taken
// from the host (here the vif's socket is unbound, so the redirect drops
// them), those for any other MAC reach the host kernel.
func TestIntegrationLiveSteering(t *testing.T) {
	for _, mode := range []AttachMode{AttachNative, AttachGeneric} {
		t.Run(mode.String(), func(t *testing.T) {
			lab := labtest.NewT(t, netlab.Options{})
			if lab.OnNICs() {
				// The test is about the program: an existing NIC that
				// filters by address (virtio-net) would drop the frames
				// for MACs on no list of its before the program runs.
				if out, err := lab.Run(netlab.Host, "ip", "link", "set", lab.Link[netlab.Host], "promisc", "on"); err != nil {
					t.Fatalf("promiscuous %s: %v: %s", lab.Link[netlab.Host], err, out)
				}
				t.Cleanup(func() { _, _ = lab.Run(netlab.Host, "ip", "link", "set", lab.Link[netlab.Host], "promisc", "off") })
			}
			s := loadT(t, nil)
			var rx int
			err := lab.Do(netlab.Host, func() (err error) {
				if _, err = s.Attach(lab.Index[netlab.Host], mode); err != nil {
					return err
				}
				rx, err = packetSocket(lab.Index[netlab.Host])
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(rx)
			if err := s.AddMAC(mac0, 0); err != nil {
				t.Fatal(err)
			}
			if err := s.SetSocket(0, 0, xskFD(t)); err != nil {
				t.Fatal(err)
			}

			frames := [][]byte{marked(macOther, 'A'), marked(mac0, 'B'), marked(macOther, 'C')}
			err = lab.Do(netlab.Peer, func() error {
				tx, err := packetSocket(lab.Index[netlab.Peer])
				if err != nil {
					return err
				}
				defer unix.Close(tx)
				for _, f := range frames {
					if _, err := unix.Write(tx, f); err != nil {
						return os.NewSyscallError("write", err)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}

			seen := map[string]bool{}
			buf := make([]byte, 2048)
			for !seen["C"] {
				n, _, err := trafficgen.Recvfrom(rx, buf)
				if err != nil {
					t.Fatalf("host AF_PACKET read (saw %v): %v", seen, err)
				}
				f := buf[:n]
				if n >= 60 && binary.BigEndian.Uint16(f[12:]) == etherTest {
					for _, want := range frames {
						if bytes.Equal(f, want) {
							seen[string(want[len("virtif-xdp steer test ")+14])] = true
						}
					}
				}
			}
			if !seen["A"] || seen["B"] {
				t.Errorf("host saw %v; want A and C (other MAC), not B (the vif's)", seen)
			}
			c, err := s.Counters(0)
			if err != nil {
				t.Fatal(err)
			}
			if c.Unicast != 1 {
				t.Errorf("vif 0 counters %+v, want Unicast 1", c)
			}
			h, err := s.HostCounters()
			if err != nil {
				t.Fatal(err)
			}
			if h.Pass < 2 {
				t.Errorf("host counters %+v, want Pass >= 2", h)
			}
		})
	}
}
