//go:build linux

// Package labtest holds the test side of netlab: labs that a test owns and
// the root check. It imports testing, so it is kept apart from netlab, which
// the command links.
package labtest

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
)

// RequireRoot skips t unless the process runs as root. Under CI (CI=true) a
// missing privilege is a failure, not a skip, so CI cannot pass by skipping.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		tb.Fatal("this test needs root (CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW) and CI=true forbids skipping")
	}
	tb.Skip("needs root (CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW); run as root or set CI=true to make this a failure")
}

// NewT creates a lab for a test and removes it when the test ends, whether
// it passed or not. It skips the test when the NICs of VIRTIF_LAB_NICS lack
// what opts asks for (see netlab.NICsEnv).
func NewT(tb testing.TB, opts netlab.Options) *netlab.Lab {
	tb.Helper()
	RequireRoot(tb)
	l, err := netlab.New(opts)
	if errors.Is(err, errors.ErrUnsupported) {
		tb.Skip(err) // the NICs of VIRTIF_LAB_NICS lack what the lab asks for
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := l.Close(); err != nil {
			tb.Error(err)
		}
	})
	return l
}

// RequireVeth skips tb when l is made of existing NICs (VIRTIF_LAB_NICS)
// instead of a veth pair; needs says what of veth the test relies on.
func RequireVeth(tb testing.TB, l *netlab.Lab, needs string) {
	tb.Helper()
	if l.OnNICs() {
		tb.Skipf("netlab: %s is an existing NIC, not a veth: the test needs %s", l.Link[netlab.Host], needs)
	}
}

// DropCaps clears the calling thread's effective capabilities, so what it
// does next is refused as an unprivileged process's would be. Capabilities
// are per thread: call it on a locked thread that is thrown away afterwards
// (netlab's Lab.Do, or a goroutine that never unlocks).
func DropCaps() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return os.NewSyscallError("capget", err)
	}
	for i := range data {
		data[i].Effective = 0
	}
	return os.NewSyscallError("capset", unix.Capset(&hdr, &data[0]))
}

// RequireKernel skips tb on a kernel older than major.minor; needs says
// what of the newer kernel the test relies on.
func RequireKernel(tb testing.TB, major, minor int, needs string) {
	tb.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		tb.Fatal(err)
	}
	rel := unix.ByteSliceToString(u.Release[:])
	var ma, mi int
	if _, err := fmt.Sscanf(rel, "%d.%d", &ma, &mi); err != nil {
		tb.Fatalf("kernel release %q: %v", rel, err)
	}
	if ma < major || ma == major && mi < minor {
		tb.Skipf("kernel %s: the test needs %d.%d+ (%s)", rel, major, minor, needs)
	}
}

// RequireVethLab skips tb when labs are made of existing NICs
// (VIRTIF_LAB_NICS), before one is made: for tests whose lab itself (an MTU
// a NIC may not take, say) relies on veth.
func RequireVethLab(tb testing.TB, needs string) {
	tb.Helper()
	if os.Getenv(netlab.NICsEnv) != "" {
		tb.Skipf("netlab: labs are made of existing NICs (%s), not veth pairs: the test needs %s", netlab.NICsEnv, needs)
	}
}

// SkipWithoutZeroCopy skips tb when err (opening a vif) is EOPNOTSUPP while
// VIRTIF_TEST_LINKOPTS asks for mode=zerocopy: the kernel's driver has no
// AF_XDP zero-copy for the NIC, which is the kernel's lack, not a failure.
// The reason names the kernel release.
func SkipWithoutZeroCopy(tb testing.TB, err error) {
	tb.Helper()
	if !errors.Is(err, unix.EOPNOTSUPP) || !strings.Contains(netlab.TestLinkOpts(), "mode=zerocopy") {
		return
	}
	var u unix.Utsname
	_ = unix.Uname(&u)
	tb.Skipf("kernel %s: the NIC's driver does not offer AF_XDP zero-copy (it does not advertise NETDEV_XDP_ACT_XSK_ZEROCOPY): %v",
		unix.ByteSliceToString(u.Release[:]), err)
}
