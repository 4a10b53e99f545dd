//go:build linux

package xdp

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"kernel.org/pub/linux/libs/security/libcap/cap"
)

// checkUMEM runs before the NIC's first UMEM is registered: the UMEM the
// link string asks for, on all nq queues, must fit under the ceiling
// (umemmax, DefaultUMEMMax), and, for a process without CAP_IPC_LOCK
// (whose registered UMEM the kernel charges against RLIMIT_MEMLOCK), under
// that limit, which it raises (setrlimit, up to the hard limit) when it
// can. Errors wrap ENOMEM and say the arithmetic and the fix.
func checkUMEM(c *Config, nq int) error {
	per := int64(c.Frames) * int64(c.FrameSize)
	total := per * int64(nq)
	if max := c.umemMax(); total > max {
		return fmt.Errorf("xdp: %s: UMEM of %d queues × %d frames × %d bytes = %s, beyond the ceiling of %s "+
			"(fewer frames=, fewer queues=, or raise umemmax=): %w",
			c.Ifname, nq, c.Frames, c.FrameSize, bytesString(total), bytesString(max), unix.ENOMEM)
	}
	if ok, err := cap.GetProc().GetFlag(cap.Effective, cap.IPC_LOCK); err == nil && ok {
		return nil // the kernel does not charge the UMEM to RLIMIT_MEMLOCK
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil {
		return fmt.Errorf("xdp: %s: %w", c.Ifname, os.NewSyscallError("getrlimit", err))
	}
	// The kernel adds the UMEM to what the process's user has locked
	// already; this process's share is all that can be seen from here.
	need := uint64(total) + lockedBytes()
	if lim.Cur == unix.RLIM_INFINITY || lim.Cur >= need {
		return nil
	}
	if lim.Max == unix.RLIM_INFINITY || lim.Max >= need {
		raised := unix.Rlimit{Cur: need, Max: lim.Max}
		if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &raised); err == nil {
			return nil
		}
	}
	return fmt.Errorf("xdp: %s: the UMEM (%d queues × %d frames × %d bytes = %s, %d bytes with what is locked already) "+
		"is charged to RLIMIT_MEMLOCK, whose limit is %s (hard %s), and the process has no CAP_IPC_LOCK: "+
		"raise the limit ('ulimit -l unlimited', prlimit --memlock, LimitMEMLOCK=infinity in a systemd unit), "+
		"give the process CAP_IPC_LOCK, or ask for less (frames=, queues=): %w",
		c.Ifname, nq, c.Frames, c.FrameSize, bytesString(total), need, limitString(lim.Cur), limitString(lim.Max), unix.ENOMEM)
}

// lockedBytes is the memory this process has locked now (VmLck).
func lockedBytes() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmLck:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// bytesString says n bytes in the largest binary unit that divides it, or
// in bytes.
func bytesString(n int64) string {
	for _, u := range []struct {
		shift uint
		name  string
	}{{40, "TiB"}, {30, "GiB"}, {20, "MiB"}, {10, "KiB"}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d %s", n>>u.shift, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

func limitString(v uint64) string {
	if v == unix.RLIM_INFINITY {
		return "unlimited"
	}
	return bytesString(int64(v))
}
