//go:build linux

package xdp

import (
	"testing"

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
// without XDP metadata (bpf.Options.NoMeta).
func setNoMeta(t testing.TB) {
	t.Helper()
	simulateNoMeta.Store(true)
	t.Cleanup(func() { simulateNoMeta.Store(false) })
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
