//go:build linux

package netlab

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/ethtool"
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
	_, err := ethtool.Value(ifname, unix.ETHTOOL_STXCSUM, data)
	return err
}

// TxChecksum reports whether transmit checksum offload of ifname is on
// (ETHTOOL_GTXCSUM), in the calling thread's network namespace.
func TxChecksum(ifname string) (bool, error) {
	v, err := ethtool.Value(ifname, unix.ETHTOOL_GTXCSUM, 0)
	return v != 0, err
}
