//go:build linux

package xdp

import (
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/switchd"
	"github.com/virtif-xdp/virtif-xdp/virtif"
)

// switchPort is a vif's tenant port on a `virtif-xdp switch` (link string
// key switch=PATH): the control connection, and the tenant veth end in the
// vif's namespace on which the backend's sockets are bound. The NIC's
// program is the switch's; the program on the veth end is the backend's
// own, as on any NIC. What the vif registers (MAC, groups, IPv4) goes to
// the switch too, which steers it from the NIC to the port.
//
// When the switch goes away (its connection ends), the veth end is deleted
// (the switch cannot, if it was killed): the backend's RX goroutines see
// their NIC gone and end, and Err names the switch.
type switchPort struct {
	cl      *switchd.Client
	port    switchd.Port
	nl      *netlink.Handle // in the vif's namespace, opened at join
	closing chan struct{}
	watched chan struct{}
	once    sync.Once
}

// joinSwitch asks the switch at c.Switch for a port and points c at it.
func (b *Backend) joinSwitch(c *Config) error {
	cl, err := switchd.Dial(c.Switch)
	if err != nil {
		return fmt.Errorf("xdp: %s: %w", b.name, err)
	}
	nl, err := netlink.NewHandle()
	if err != nil {
		cl.Close()
		return fmt.Errorf("xdp: %s: netlink: %w", b.name, err)
	}
	p, err := cl.AddTenant(b.name)
	if err != nil {
		nl.Close()
		cl.Close()
		return fmt.Errorf("xdp: %s: %w", b.name, err)
	}
	sp := &switchPort{cl: cl, port: p, nl: nl, closing: make(chan struct{}), watched: make(chan struct{})}
	go sp.watch()
	b.sw = sp
	c.Ifname = p.Ifname
	return nil
}

func (sp *switchPort) watch() {
	defer close(sp.watched)
	select {
	case <-sp.closing:
	case <-sp.cl.Done():
		// The switch is gone: so is the port. Take the veth end away so
		// the backend notices as for any vanished NIC.
		if l, err := sp.nl.LinkByName(sp.port.Ifname); err == nil {
			_ = sp.nl.LinkDel(l)
		}
	}
}

// register tells the switch of one of the vif's addresses; nil sp: no switch.
func (sp *switchPort) register(kind, addr string, add bool) error {
	if sp == nil {
		return nil
	}
	err := sp.cl.Register(kind, addr, add)
	if !add && (errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ENETDOWN) || errors.Is(err, unix.ECONNRESET)) {
		return nil // the switch is gone, and the registration with it
	}
	if kind == "mac" && add && errors.Is(err, unix.EEXIST) {
		err = fmt.Errorf("%w (%w)", virtif.ErrMACInUse, err)
	}
	return err
}

// gone is why the switch connection ended, nil while it is up or for no switch.
func (sp *switchPort) gone() error {
	if sp == nil {
		return nil
	}
	select {
	case <-sp.closing:
		return nil
	default:
	}
	return sp.cl.Err()
}

// close ends the connection: the switch removes the port and its veth pair.
func (sp *switchPort) close() error {
	if sp == nil {
		return nil
	}
	var err error
	sp.once.Do(func() {
		close(sp.closing)
		<-sp.watched
		err = sp.cl.Close()
		if errors.Is(err, net.ErrClosed) {
			err = nil
		}
		sp.nl.Close()
	})
	return err
}
