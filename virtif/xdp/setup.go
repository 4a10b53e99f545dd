//go:build linux

package xdp

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/bpf"
	"github.com/virtif-xdp/virtif-xdp/xsk"
)

// newNIC sets the NIC up: program attached, a socket bound per queue, RX
// goroutines started. On error it undoes what it did and returns nil.
func newNIC(key nicKey, c *Config) (*nic, error) {
	n := &nic{key: key, ifindex: key.ifindex, cfg: c, probe: -1, done: make(chan struct{}), gone: make(chan struct{})}
	if err := n.setup(c); err != nil {
		if cerr := n.closeResources(); cerr != nil {
			err = fmt.Errorf("%w; undoing it: %w", err, cerr)
		}
		return nil, err
	}
	for _, q := range n.queues {
		n.wg.Add(1)
		go n.rxLoop(q)
	}
	go func() { n.wg.Wait(); close(n.done) }()
	return n, nil
}

// setup does newNIC's work; what it made is in n, for closeResources.
func (n *nic) setup(c *Config) error {
	link, err := netlink.LinkByIndex(n.ifindex)
	if err == nil {
		err = faultAt("link", -1)
	}
	if err != nil {
		return fmt.Errorf("xdp: %s: %w", c.Ifname, err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("xdp: %s is down: %w ('ip link set %s up' first)", c.Ifname, unix.ENETDOWN, c.Ifname)
	}
	if n.probe, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
		n.probe = -1
		return fmt.Errorf("xdp: %s: %w", c.Ifname, os.NewSyscallError("socket", err))
	}
	nq := queuesOf(c.Ifname, max(link.Attrs().NumRxQueues, link.Attrs().NumTxQueues))
	qids, err := nq.resolve(c.Queues)
	if err != nil {
		return err
	}
	if err := checkUMEM(c, len(qids)); err != nil {
		return err
	}
	maxQ := 0
	for _, q := range qids {
		maxQ = max(maxQ, q+1)
	}
	if c.Queues == nil {
		// queues=all may grow once the program is on (see below): room
		// for every queue the NIC has.
		maxQ = nq.allocated
	}
	steer, err := bpf.Load(&bpf.Options{MaxQueues: max(maxQ, 1), NoMeta: simulateNoMeta.Load(), NoFrags: c.SG == xsk.SGOff})
	if err == nil {
		if err = faultAt("load", -1); err != nil {
			_ = steer.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("xdp: %s: load the steering program: %w", c.Ifname, err)
	}
	n.steer = steer
	if !steer.MetaHelper() || simulateNoMetaHelper.Load() {
		// The kernel refused the tag's helper: demultiplex by MAC from
		// the first era of several vifs, not after frames passed as
		// NoMeta (nothing shares the nic yet: no lock needed).
		n.macMode = true
		n.demuxMAC.Store(true)
	}
	n.vifs = make([]atomic.Pointer[Backend], steer.Options().MaxVifs)
	n.taken = make([]bool, len(n.vifs))
	if n.attach, err = steer.Attach(n.ifindex, c.Attach); err == nil {
		err = faultAt("attach", -1)
	}
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("xdp: attach to %s: %w (another XDP program is on it, maybe another virtif-xdp process; 'ip link show %s' shows it)", c.Ifname, err, c.Ifname)
		}
		return fmt.Errorf("xdp: attach to %s: %w", c.Ifname, err)
	}
	if c.Queues == nil {
		// A driver may enable more queues for XDP: virtio-net adds a
		// queue pair per CPU for XDP_TX, and the device then receives on
		// them all. queues=all serves what is active now.
		if after := queuesOf(c.Ifname, nq.allocated); after.active > len(qids) {
			if qids, err = after.resolve(nil); err != nil {
				return err
			}
			if err := checkUMEM(c, len(qids)); err != nil {
				return err
			}
		}
	}
	if n.addrs, err = newAddrList(c.Ifname, n.ifindex, n.key.netns); err != nil {
		return err
	}
	sg := c.SG
	switch {
	case c.SG == xsk.SGOff:
		n.sgWhy = "sg=off"
	case !steer.Frags() && sg == xsk.SGOn:
		return fmt.Errorf("xdp: %s: sg=on: the kernel would not load the program for multi-buffer frames (BPF_F_XDP_HAS_FRAGS, Linux 5.18+): %w", c.Ifname, unix.EOPNOTSUPP)
	case !steer.Frags():
		sg = xsk.SGOff
		n.sgWhy = "the kernel would not load the program for multi-buffer frames (BPF_F_XDP_HAS_FRAGS, Linux 5.18+)"
	}
	n.linkMTU.Store(int32(link.Attrs().MTU))
	for _, q := range qids {
		xc := &xsk.Config{
			UMEM:              xsk.UMEMConfig{FrameSize: c.FrameSize, NumFrames: c.Frames, FillSize: c.Ring, CompletionSize: c.Ring},
			RXSize:            c.Ring,
			TXSize:            c.Ring,
			Mode:              c.Mode,
			DisableNeedWakeup: !c.Wakeup,
			SG:                sg,
		}
		if c.BusyPoll > 0 {
			xc.BusyPoll, xc.BusyPollBudget = busyPollTime, c.BusyPoll
		}
		sock, err := xsk.Open(n.ifindex, q, xc)
		if err == nil {
			n.queues = append(n.queues, &queue{id: q, idx: len(n.queues), sock: sock})
			n.mode = sock.Mode()
			err = faultAt("socket", q)
		}
		if err != nil {
			switch {
			case errors.Is(err, unix.EOPNOTSUPP) && c.Mode == xsk.ModeZeroCopy:
				return fmt.Errorf("xdp: %s queue %d: %w (the driver cannot bind zero-copy: use mode=auto or mode=copy)", c.Ifname, q, err)
			case c.SG == xsk.SGOn && isBindErr(err):
				return fmt.Errorf("xdp: %s queue %d: %w (sg=on needs multi-buffer; sg=auto takes jumbo frames where the kernel and the driver allow them)", c.Ifname, q, err)
			case errors.Is(err, unix.EINVAL) && isBindErr(err):
				return fmt.Errorf("xdp: %s queue %d: %w (the NIC does not use that queue: 'ethtool -l %s' shows its channels; use queues=all)", c.Ifname, q, err, c.Ifname)
			}
			return fmt.Errorf("xdp: %s queue %d: %w", c.Ifname, q, err)
		}
	}
	n.sg = sg != xsk.SGOff
	for _, q := range n.queues {
		if !q.sock.SG() {
			n.sg = false
			if err := q.sock.SGError(); err != nil && n.sgWhy == "" {
				n.sgWhy = sgRefused(q.sock.Mode(), err)
			}
		}
	}
	if n.sg {
		for _, q := range n.queues {
			q.gather = make([]byte, 0, maxChain*c.FrameSize)
		}
	}
	if c.NAPI {
		if n.napi, err = applyNAPI(c.Ifname, n.ifindex); err != nil {
			return err
		}
	}
	return nil
}

// sgRefused says why a socket was bound without XDP_USE_SG.
func sgRefused(m xsk.Mode, err error) string {
	if m == xsk.ModeZeroCopy {
		return fmt.Sprintf("the driver's zero-copy has no multi-buffer (%v), and zero-copy was kept; mode=copy takes jumbo frames", err)
	}
	return fmt.Sprintf("the kernel refused multi-buffer (%v; XDP_USE_SG needs Linux 6.6)", err)
}

func isBindErr(err error) bool {
	var se *os.SyscallError
	return errors.As(err, &se) && se.Syscall == "bind"
}

// closeResources closes what setup made: the sockets (each under its TX
// lock, so no vif's Send is halfway through it), the program (which takes it
// off the NIC) and the probe. The RX goroutines must have ended.
func (n *nic) closeResources() error {
	var errs []error
	for _, q := range n.queues {
		q.txMu.Lock()
		errs = append(errs, q.sock.Close())
		q.txMu.Unlock()
	}
	if n.steer != nil {
		errs = append(errs, n.steer.Close())
	}
	if n.addrs != nil {
		errs = append(errs, n.addrs.close())
	}
	if n.napi != nil {
		errs = append(errs, n.napi.restore())
		n.napi = nil
	}
	if n.probe >= 0 {
		errs = append(errs, os.NewSyscallError("close", unix.Close(n.probe)))
		n.probe = -1
	}
	return errors.Join(errs...)
}
