//go:build linux

package xsk

import (
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// kickTXSyscall is kickTX through Syscall6, kept for the benchmarks that
// justify the choice.
func kickTXSyscall(fd int) unix.Errno {
	_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	return e
}

// useKick makes every socket kick through k until tb ends.
func useKick(tb testing.TB, k func(int) unix.Errno) {
	old := txKick
	txKick = k
	tb.Cleanup(func() { txKick = old })
}

// countBindRetries counts the EBUSY answers bind is retried on until tb
// ends.
func countBindRetries(tb testing.TB) *atomic.Int64 {
	var n atomic.Int64
	old := onBindBusy
	onBindBusy = func() { n.Add(1) }
	tb.Cleanup(func() { onBindBusy = old })
	return &n
}
