//go:build linux

package xsk

// Every use of package unsafe in xsk is in this file: turning mmapped ring
// memory into typed pointers and slices, getsockopt/setsockopt on structs
// that x/sys has types but no helpers for, and the kick system calls.

import (
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

const xdpRingNeedWakeup = unix.XDP_RING_NEED_WAKEUP

// The layouts the kernel expects (include/uapi/linux/if_xdp.h).
var (
	_ [16]byte  = [unsafe.Sizeof(Desc{})]byte{}
	_ [32]byte  = [unsafe.Sizeof(unix.XDPUmemReg{})]byte{} // incl. tx_metadata_len (6.8)
	_ [48]byte  = [unsafe.Sizeof(unix.XDPStatistics{})]byte{}
	_ [128]byte = [unsafe.Sizeof(unix.XDPMmapOffsets{})]byte{}
)

// ringOn attaches r to a ring laid out in mem as the kernel describes it in
// off, with n slots. mem may be a kernel mapping or any memory of ours (the
// unit tests use a Go slice).
func ringOn[T any](r *ring[T], mem []byte, off unix.XDPRingOffset, n uint32, isProducer bool) error {
	var zero T
	slot := uint64(unsafe.Sizeof(zero))
	if n == 0 || n&(n-1) != 0 {
		return fmt.Errorf("xsk: ring size %d is not a power of two: %w", n, unix.EINVAL)
	}
	end := off.Desc + uint64(n)*slot
	if off.Producer+4 > uint64(len(mem)) || off.Consumer+4 > uint64(len(mem)) ||
		off.Flags+4 > uint64(len(mem)) || end > uint64(len(mem)) ||
		off.Producer%4 != 0 || off.Consumer%4 != 0 || off.Flags%4 != 0 || off.Desc%8 != 0 {
		return fmt.Errorf("xsk: ring offsets %+v do not fit %d bytes: %w", off, len(mem), unix.EINVAL)
	}
	base := unsafe.Pointer(unsafe.SliceData(mem))
	if uintptr(base)%8 != 0 {
		return fmt.Errorf("xsk: ring memory not 8-byte aligned: %w", unix.EINVAL)
	}
	r.init(
		(*atomic.Uint32)(unsafe.Add(base, off.Producer)),
		(*atomic.Uint32)(unsafe.Add(base, off.Consumer)),
		(*atomic.Uint32)(unsafe.Add(base, off.Flags)),
		unsafe.Slice((*T)(unsafe.Add(base, off.Desc)), n),
		isProducer,
	)
	return nil
}

// ringBytes is the length of the mapping of a ring with n slots of T.
func ringBytes[T any](off unix.XDPRingOffset, n uint32) int {
	var zero T
	return int(off.Desc + uint64(n)*uint64(unsafe.Sizeof(zero)))
}

func getsockopt(fd, level, name int, p unsafe.Pointer, size uintptr) (uintptr, error) {
	l := uint32(size)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(name),
		uintptr(p), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return 0, e
	}
	return uintptr(l), nil
}

func setsockopt(fd, level, name int, p unsafe.Pointer, size uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(name),
		uintptr(p), size, 0)
	if e != 0 {
		return e
	}
	return nil
}

// mmapOffsets asks the kernel where producer, consumer, flags and slots sit
// in each ring's mapping (XDP_MMAP_OFFSETS; the flags word needs 5.4).
func mmapOffsets(fd int) (unix.XDPMmapOffsets, error) {
	var off unix.XDPMmapOffsets
	n, err := getsockopt(fd, unix.SOL_XDP, unix.XDP_MMAP_OFFSETS, unsafe.Pointer(&off), unsafe.Sizeof(off))
	if err != nil {
		return off, os.NewSyscallError("getsockopt XDP_MMAP_OFFSETS", err)
	}
	if n != unsafe.Sizeof(off) {
		// A pre-5.4 kernel answers without the flags words: no need_wakeup.
		return off, fmt.Errorf("xsk: XDP_MMAP_OFFSETS returned %d bytes, want %d (kernel older than 5.4): %w",
			n, unsafe.Sizeof(off), unix.EOPNOTSUPP)
	}
	return off, nil
}

// registerUMEM passes the whole, otherwise zeroed, 32-byte xdp_umem_reg:
// kernels from 6.8 read tx_metadata_len and reject garbage in it.
func registerUMEM(fd int, reg *unix.XDPUmemReg) error {
	err := setsockopt(fd, unix.SOL_XDP, unix.XDP_UMEM_REG, unsafe.Pointer(reg), unsafe.Sizeof(*reg))
	if err != nil {
		return os.NewSyscallError("setsockopt XDP_UMEM_REG", err)
	}
	return nil
}

func statistics(fd int) (unix.XDPStatistics, error) {
	var st unix.XDPStatistics
	n, err := getsockopt(fd, unix.SOL_XDP, unix.XDP_STATISTICS, unsafe.Pointer(&st), unsafe.Sizeof(st))
	if err != nil {
		return st, os.NewSyscallError("getsockopt XDP_STATISTICS", err)
	}
	_ = n // a pre-5.9 kernel fills only the first three counters, the rest stay 0
	return st, nil
}

// kickTX asks the kernel to process the TX ring: sendto(fd, NULL, 0,
// MSG_DONTWAIT, NULL, 0). MSG_DONTWAIT means it never sleeps, so it may go
// through RawSyscall6, which skips the scheduler's entersyscall/exitsyscall
// and so makes the kick itself cheaper (BenchmarkKick compares the two;
// bench/results/notes.md has the figures). The cost: in copy mode the
// kernel builds and sends up to a budget of frames (32) inside the call,
// during which this P runs no other goroutine.
func kickTX(fd int) unix.Errno {
	_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	return e
}

// txKick is the TX kick Socket uses: kickTX; a test hook (the benchmarks
// swap in kickTXSyscall to compare).
var txKick = kickTX

// kickRX asks the kernel to refill from the fill ring when it set
// need_wakeup there: recvfrom(fd, NULL, 0, MSG_DONTWAIT, NULL, NULL).
func kickRX(fd int) unix.Errno {
	_, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
	return e
}

// uintptrOf is the address of b's first byte, for XDP_UMEM_REG. b is an mmap
// region, which the garbage collector never moves.
func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
