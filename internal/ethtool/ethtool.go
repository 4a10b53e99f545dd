// Package ethtool runs the few SIOCETHTOOL commands the project needs, in the
// network namespace of the calling thread.
package ethtool

import (
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Do runs the ethtool command whose struct (starting with its uint32 command
// number) data points at, on ifname. Errors keep the ioctl's errno
// (EOPNOTSUPP where the driver lacks the command, ENODEV for no such
// interface).
func Do(ifname string, data unsafe.Pointer) error {
	if len(ifname) >= unix.IFNAMSIZ {
		return fmt.Errorf("interface name %q: %w", ifname, unix.EINVAL)
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
	ifr.data = uintptr(data)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(data)
	if errno != 0 {
		return os.NewSyscallError("ioctl SIOCETHTOOL", errno)
	}
	return nil
}

// Channels is struct ethtool_channels: the queue counts a NIC allows (Max*)
// and uses.
type Channels struct {
	Cmd                                    uint32
	MaxRX, MaxTX, MaxOther, MaxCombined    uint32
	RXCount, TXCount, OtherCount, Combined uint32
}

// GetChannels reads ifname's channels (`ethtool -l`, ETHTOOL_GCHANNELS).
func GetChannels(ifname string) (Channels, error) {
	ch := Channels{Cmd: unix.ETHTOOL_GCHANNELS}
	err := Do(ifname, unsafe.Pointer(&ch))
	return ch, err
}
