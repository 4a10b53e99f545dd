package netlab

import (
	"errors"
	"os"
	"testing"
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
// what opts asks for (see NICsEnv).
func NewT(tb testing.TB, opts Options) *Lab {
	tb.Helper()
	RequireRoot(tb)
	l, err := New(opts)
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
