// Package virtiftest holds helpers for the tests of virtif's users (the
// backends, netstack). It imports testing: tests only.
package virtiftest

import (
	"testing"

	"github.com/virtif-xdp/virtif-xdp/virtif"
)

// NewCloner makes a cloner with the default configuration that the test's
// end closes.
func NewCloner(tb testing.TB) *virtif.Cloner {
	tb.Helper()
	c, err := virtif.NewCloner(virtif.ClonerConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}
