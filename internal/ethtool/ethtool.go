//go:build linux

// Package ethtool runs the few SIOCETHTOOL commands virtif-xdp needs (the
// ones `ethtool -k/-K` and `ethtool -l/-L` use), in the calling thread's
// network namespace. Errors keep the ioctl's errno: EOPNOTSUPP where the
// driver lacks the command, ENODEV for a name not in the namespace.
package ethtool

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// do runs the ethtool command that cmd points at (a struct starting with
// its u32 command number) on ifname.
func do(ifname string, cmd unsafe.Pointer) error {
	if len(ifname) >= unix.IFNAMSIZ || ifname == "" {
		return fmt.Errorf("ethtool: interface name %q: %w", ifname, unix.EINVAL)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	// struct ifreq: the name, then ifr_data pointing at the command.
	var ifr struct {
		name [unix.IFNAMSIZ]byte
		data uintptr
		_    [16]byte
	}
	copy(ifr.name[:], ifname)
	ifr.data = uintptr(cmd)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(cmd)
	if errno != 0 {
		return os.NewSyscallError("ioctl SIOCETHTOOL", errno)
	}
	return nil
}

// Value runs a command that takes or returns one value (struct
// ethtool_value), e.g. ETHTOOL_GTXCSUM, and returns the value the kernel
// left.
func Value(ifname string, cmd, data uint32) (uint32, error) {
	v := struct{ cmd, data uint32 }{cmd, data}
	err := do(ifname, unsafe.Pointer(&v))
	return v.data, err
}

// Channels is struct ethtool_channels: the queues a NIC has (Max*) and
// uses (the others), as `ethtool -l` shows them.
type Channels struct {
	cmd                                 uint32
	MaxRX, MaxTX, MaxOther, MaxCombined uint32
	RX, TX, Other, Combined             uint32
}

// GetChannels reads ifname's channels (ETHTOOL_GCHANNELS). EOPNOTSUPP
// from a driver that does not report them.
func GetChannels(ifname string) (Channels, error) {
	c := Channels{cmd: unix.ETHTOOL_GCHANNELS}
	err := do(ifname, unsafe.Pointer(&c))
	return c, err
}

// SetChannels sets the RX, TX, other and combined counts of c on ifname
// (ETHTOOL_SCHANNELS, what `ethtool -L` does). EINVAL for counts the
// driver does not allow.
func SetChannels(ifname string, c Channels) error {
	c.cmd = unix.ETHTOOL_SCHANNELS
	return do(ifname, unsafe.Pointer(&c))
}

// ActiveQueues is how many queues an AF_XDP socket may bind to: the kernel
// refuses queue IDs from max(real RX queues, real TX queues) on, and a
// combined channel is one of each.
func (c Channels) ActiveQueues() int {
	return int(max(c.RX, c.TX) + c.Combined)
}
