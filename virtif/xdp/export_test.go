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
