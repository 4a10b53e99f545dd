//go:build linux

package xdp

import (
	"testing"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
)

// liveOnNICs says why the live-frame generator is not used from the peer
// of a lab made of existing NICs (virtio-net in internal/vmlab): the
// generator's XDP_TX goes out through the driver's ndo_xdp_xmit, which
// virtio-net refuses while the device has no XDP program of its own
// (nothing is sent), and which on Debian's 6.1 kernel (6.1.0-50) hands
// QEMU, after the first 64 frames, a descriptor with no bytes after the
// virtio-net header: QEMU reports "virtio-net nothing to send" and marks
// the device broken, after which every control command (an address list or
// promiscuous change) spins in virtnet_send_command for good (a soft
// lockup).
const liveOnNICs = "the live-frame generator (BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES) cannot send from an existing NIC's peer: virtio-net transmits live frames only while the device has an XDP program, and on 6.1 they break QEMU's device (zero-length frames)"

// sourceIn opens a frame source on lab's peer side: AF_PACKET on existing
// NICs (liveOnNICs says why), else trafficgen.SourceIn's choice (the
// live-frame generator, unless the kernel refuses live frames).
func sourceIn(t *testing.T, lab *netlab.Lab) trafficgen.Source {
	t.Helper()
	var s trafficgen.Source
	var err error
	if lab.OnNICs() {
		s, err = trafficgen.PacketIn(lab, netlab.Peer)
	} else {
		s, _, err = trafficgen.SourceIn(lab, netlab.Peer) // Live, unless the kernel refuses it
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}
