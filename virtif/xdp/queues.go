//go:build linux

package xdp

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/ethtool"
)

// nicQueues says which queues of a NIC can be served: a NIC allocates
// (NumRxQueues) more queues than it uses when its channels were reduced
// (`ethtool -L`) or its driver enables fewer than it allocates (a veth made
// by a plain `ip link add` on a 2-CPU machine: 2 allocated, 1 in use), and
// the kernel refuses to bind an AF_XDP socket to a queue from max(real RX,
// real TX) on (EINVAL). The channels (ETHTOOL_GCHANNELS) give the count in
// use; a driver that does not report them is taken at its allocated count.
type nicQueues struct {
	ifname    string
	allocated int
	active    int
}

// queuesOf reads ifname's queue counts in the calling thread's namespace.
func queuesOf(ifname string, allocated int) nicQueues {
	q := nicQueues{ifname: ifname, allocated: max(allocated, 1)}
	q.active = q.allocated
	if c, err := ethtool.GetChannels(ifname); err == nil && c.ActiveQueues() > 0 {
		q.active = min(c.ActiveQueues(), q.allocated)
	}
	return q
}

// resolve returns the queue IDs to serve: want as given, or every active
// queue when want is nil (queues=all). A queue that is not active is
// EINVAL, with the fix named.
func (q nicQueues) resolve(want []int) ([]int, error) {
	if want == nil {
		for i := range q.active {
			want = append(want, i)
		}
		return want, nil
	}
	for _, id := range want {
		if id < q.active {
			continue
		}
		if id < q.allocated {
			return nil, fmt.Errorf("xdp: %s uses %d of its %d queues, queue %d is not active ('ethtool -l %s' shows them; use queues=0-%d, or enable more with 'ethtool -L %s combined N' or 'rx N tx N'): %w",
				q.ifname, q.active, q.allocated, id, q.ifname, q.active-1, q.ifname, unix.EINVAL)
		}
		return nil, fmt.Errorf("xdp: %s has %d queues, queue %d does not exist (use queues=0-%d): %w",
			q.ifname, q.allocated, id, q.active-1, unix.EINVAL)
	}
	return want, nil
}
