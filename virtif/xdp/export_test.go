//go:build linux

package xdp

import "testing"

// setFault makes the step of NIC setup (or of Open, or of an RX goroutine's
// health check) for which f returns an error fail with it, until the test
// ends.
func setFault(t testing.TB, f func(step string, queue int) error) {
	t.Helper()
	fault.Store(&f)
	t.Cleanup(func() { fault.Store(nil) })
}

// nicsOpen is the number of NICs this process serves (entries in nics).
func nicsOpen() int {
	nics.Lock()
	defer nics.Unlock()
	return len(nics.m)
}

// setNoMeta makes the NICs set up until the test ends behave as on a driver
// without XDP metadata (bpf.Options.NoMeta).
func setNoMeta(t testing.TB) {
	t.Helper()
	simulateNoMeta.Store(true)
	t.Cleanup(func() { simulateNoMeta.Store(false) })
}
