package netlab

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SetTxChecksum turns transmit checksum offload of the veth end of side on or
// off, as `ethtool -K IFNAME tx off` does. A kernel sending through a veth
// with it on leaves TCP and UDP checksums unfinished (CHECKSUM_PARTIAL), and
// XDP on the other end sees them that way: a userspace stack behind AF_XDP
// drops such segments unless it trusts received checksums. A NIC that cannot
// change it but already is as asked (no offload at all) is no error. Errors
// keep the errno of SIOCETHTOOL (EOPNOTSUPP where the driver cannot change it).
func (l *Lab) SetTxChecksum(side int, on bool) error {
	err := l.Do(side, func() error {
		err := SetTxChecksum(l.Link[side], on)
		if errors.Is(err, unix.EOPNOTSUPP) {
			// A NIC without the offload (virtio-net without
			// VIRTIO_NET_F_CSUM) cannot change it, but is already off.
			if cur, gerr := TxChecksum(l.Link[side]); gerr == nil && cur == on {
				return nil
			}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("netlab: tx checksum offload of %s: %w", l.Link[side], err)
	}
	return nil
}

// SetTxChecksum turns transmit checksum offload of ifname on or off
// (SIOCETHTOOL, ETHTOOL_STXCSUM) in the calling thread's network namespace;
// call it inside Do or DoIn.
func SetTxChecksum(ifname string, on bool) error {
	var data uint32
	if on {
		data = 1
	}
	_, err := ethtoolValue(ifname, unix.ETHTOOL_STXCSUM, data)
	return err
}

// TxChecksum reports whether transmit checksum offload of ifname is on
// (ETHTOOL_GTXCSUM), in the calling thread's network namespace.
func TxChecksum(ifname string) (bool, error) {
	v, err := ethtoolValue(ifname, unix.ETHTOOL_GTXCSUM, 0)
	return v != 0, err
}

// ethtoolValue runs an ethtool command that takes or returns one value
// (struct ethtool_value) on ifname and returns the value the kernel left.
func ethtoolValue(ifname string, cmd, data uint32) (uint32, error) {
	if len(ifname) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("interface name %q: %w", ifname, unix.EINVAL)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	value := struct{ cmd, data uint32 }{cmd, data}
	// struct ifreq: the name, then ifr_data pointing at the command.
	var ifr struct {
		name [unix.IFNAMSIZ]byte
		data uintptr
		_    [16]byte
	}
	copy(ifr.name[:], ifname)
	ifr.data = uintptr(unsafe.Pointer(&value))
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(&value)
	if errno != 0 {
		return 0, os.NewSyscallError("ioctl SIOCETHTOOL", errno)
	}
	return value.data, nil
}
