//go:build linux

package xdp

import (
	"testing"

	"github.com/virtif-xdp/virtif-xdp/bpf"
	"github.com/virtif-xdp/virtif-xdp/xsk"
)

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
// without XDP metadata (bpf.Options.NoMeta). A kernel that refuses the
// tag's helper puts every NIC in MAC mode from the start, so the switch
// these tests watch cannot happen there: they skip.
func setNoMeta(t testing.TB) {
	t.Helper()
	requireMetaHelper(t)
	simulateNoMeta.Store(true)
	t.Cleanup(func() { simulateNoMeta.Store(false) })
}

// metaHelper reports whether this kernel lets the steering program use
// bpf_xdp_adjust_meta (bpf.MetaHelperAvailable).
func metaHelper(t testing.TB) bool {
	t.Helper()
	ok, err := bpf.MetaHelperAvailable()
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// requireMetaHelper skips a test of tagging on a kernel that refuses the
// tag's helper (TestIntegrationNoMetaHelperMACFromStart covers that kernel).
func requireMetaHelper(t testing.TB) {
	t.Helper()
	if !metaHelper(t) {
		t.Skip("this kernel's verifier refuses bpf_xdp_adjust_meta: NICs demultiplex by MAC from the start, no frame is tagged")
	}
}

// setNoMetaHelper makes the NICs set up until the test ends behave as on a
// kernel whose verifier refuses bpf_xdp_adjust_meta.
func setNoMetaHelper(t testing.TB) {
	t.Helper()
	simulateNoMetaHelper.Store(true)
	t.Cleanup(func() { simulateNoMetaHelper.Store(false) })
}

// benchQueue is a queue of its own on sock, for BenchmarkDemux.
func benchQueue(sock *xsk.Socket) *queue {
	return &queue{sock: sock, gather: make([]byte, 0, maxChain*sock.FrameSize())}
}

// setDrainOnce makes Flush give up after its first kick, until the test
// ends.
func setDrainOnce(t testing.TB) {
	drainOnce.Store(true)
	t.Cleanup(func() { drainOnce.Store(false) })
}

// txPending is the number of descriptors on b's TX ring the kernel has not
// taken.
func txPending(b *Backend) int {
	q := b.txq
	q.txMu.Lock()
	defer q.txMu.Unlock()
	return q.sock.TXPending()
}

// setSendLocking makes Send call f just before it takes the TX lock, until
// the test ends.
func setSendLocking(t testing.TB, f func(b *Backend)) {
	t.Helper()
	sendLocking.Store(&f)
	t.Cleanup(func() { sendLocking.Store(nil) })
}
