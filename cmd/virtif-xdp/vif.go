//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/virtif"
	"github.com/virtif-xdp/virtif-xdp/virtif/xdp"
)

// vifFlags are the flags of the subcommands that run one vif on a NIC.
type vifFlags struct {
	link     string
	mac      string
	promisc  bool
	netns    string
	duration time.Duration
	metrics  string

	hw net.HardwareAddr // parsed mac
}

func (f *vifFlags) register(fs *pflag.FlagSet, duration time.Duration, durationHelp string) {
	fs.StringVar(&f.link, "link", "", "the NIC as a link string: xdp:IFNAME[,queues=..,mode=..,attach=..,ring=..,busypoll=..]")
	fs.StringVar(&f.mac, "mac", "", "the vif's MAC (default b2:0a:RR:0b:0e:00, RR random)")
	fs.BoolVar(&f.promisc, "promisc", false, "promiscuous: the vif gets every frame no other vif claims, the host's own traffic too")
	fs.StringVar(&f.netns, "netns", "", "create the vif inside this named network namespace (as `ip netns` lists it: no '/', not . or .., at most 255 bytes); default: the process's own")
	fs.DurationVar(&f.duration, "duration", duration, durationHelp)
	fs.StringVar(&f.metrics, "metrics", "", "serve Prometheus metrics on this address (e.g. 127.0.0.1:9100), in the process's own namespace")
}

// check validates the flags; its errors are usage errors.
func (f *vifFlags) check(needLink bool) error {
	if f.link == "" {
		if needLink {
			return usagef("--link is required, e.g. --link xdp:eth0 ('virtif-xdp lab up' makes a NIC to try)")
		}
	} else {
		if !strings.Contains(f.link, ":") {
			f.link = xdp.Scheme + ":" + f.link
		}
		if !strings.HasPrefix(f.link, xdp.Scheme+":") {
			return usagef("--link %q: only the %q scheme is served, e.g. --link xdp:eth0", f.link, xdp.Scheme)
		}
		if _, err := xdp.ParseLinkStr(f.link); err != nil {
			return usageError{fmt.Errorf("--link: %w", err)}
		}
	}
	if f.mac != "" {
		hw, err := net.ParseMAC(f.mac)
		if err != nil || len(hw) != 6 {
			return usagef("--mac %q: not a 6-byte MAC such as 02:00:00:00:00:01", f.mac)
		}
		if hw[0]&1 != 0 {
			return usagef("--mac %s: a multicast address cannot be an interface's MAC", f.mac)
		}
		f.hw = hw
	}
	if f.netns != "" {
		if err := netlab.CheckNamespaceName(f.netns); err != nil {
			return usageError{fmt.Errorf("--netns: %w", err)}
		}
	}
	if f.duration < 0 {
		return usagef("--duration %s: must not be negative", f.duration)
	}
	return nil
}

// vif is one running virtual interface with its own cloner.
type vif struct {
	cloner *virtif.Cloner
	ifc    *virtif.Interface
	be     *xdp.Backend
}

// vifSetup is what openVif does to an interface between its link string and Up.
type vifSetup struct {
	link    string
	netns   string // "" for the process's own namespace
	mac     net.HardwareAddr
	promisc bool
	addrs   []netip.Addr
	input   virtif.Input
	taps    []virtif.Tap
}

// openVif creates vif0 on the NIC and brings it up. The NIC is resolved,
// the program attached and the sockets bound in setup.netns, or in the
// process's own namespace.
func openVif(setup vifSetup) (*vif, error) {
	c, err := virtif.NewCloner(virtif.ClonerConfig{})
	if err != nil {
		return nil, err
	}
	v := &vif{cloner: c}
	create := func() error {
		ifc, err := c.CreateUnit(0)
		if err != nil {
			return err
		}
		v.ifc = ifc
		if err := ifc.SetLinkStr(setup.link); err != nil {
			return err
		}
		v.be = ifc.Backend().(*xdp.Backend)
		if setup.mac != nil {
			if err := ifc.SetHardwareAddr(setup.mac); err != nil {
				return err
			}
		}
		for _, a := range setup.addrs {
			if err := ifc.AddIPv4(a); err != nil {
				return err
			}
		}
		for _, t := range setup.taps {
			if err := ifc.AddTap(t); err != nil {
				return err
			}
		}
		ifc.SetInput(setup.input)
		if setup.promisc {
			if err := ifc.SetPromisc(true); err != nil {
				return err
			}
		}
		return ifc.Up()
	}
	if setup.netns != "" {
		err = netlab.DoIn(setup.netns, create)
		if errors.Is(err, os.ErrNotExist) && v.ifc == nil {
			err = fmt.Errorf("%w ('ip netns list' shows the namespaces; 'virtif-xdp lab up' makes vxlab-h)", err)
		}
	} else {
		err = create()
	}
	if err != nil {
		c.Close()
		return nil, withRootHint(err)
	}
	info := v.be.Info()
	slog.Debug("vif up", "vif", v.ifc.Name(), "link", setup.link, "mac", v.ifc.HardwareAddr().String(),
		"attach", info.Attach, "bind", info.Mode, "queues", info.Queues)
	return v, nil
}

// Close destroys the vif: its frames go back to the host kernel and the
// last vif on the NIC takes the XDP program off it.
func (v *vif) Close() error {
	if v == nil {
		return nil
	}
	return v.cloner.Close()
}

// stopReason says why a run ended.
type stopReason string

const (
	stopDuration stopReason = "duration" // --duration reached
	stopCount    stopReason = "count"    // --count reached
	stopSignal   stopReason = "signal"   // Ctrl-C or SIGTERM
	stopNIC      stopReason = "nic"      // the NIC failed: deleted, or its RX goroutines ended
	stopError    stopReason = "error"    // the mode's own work failed (txonly's send)
)

// String is the reason as the text summaries give it.
func (r stopReason) String() string {
	switch r {
	case stopDuration:
		return "--duration reached"
	case stopCount:
		return "--count reached"
	case stopSignal:
		return "signal"
	case stopNIC:
		return "NIC failure"
	case stopError:
		return "error"
	}
	return string(r)
}

// stopper lets the work of a run end it early, once, with a reason.
type stopper struct {
	once   sync.Once
	ch     chan struct{}
	reason stopReason
	err    error
}

func newStopper() *stopper { return &stopper{ch: make(chan struct{})} }

// stop ends the run with reason and err (nil for a normal end); later calls
// do nothing.
func (s *stopper) stop(reason stopReason, err error) {
	s.once.Do(func() {
		s.reason, s.err = reason, err
		close(s.ch)
	})
}

// nicNoticeTime bounds how long the RX goroutines take to notice a NIC
// that went away (they look every 100 ms), with room for a busy machine.
const nicNoticeTime = 1500 * time.Millisecond

// runFor waits for d (0: until ctx ends or stop is called), calling tick
// once a second with the time since start. It says why it returned; the
// error is set when that is a failure: the NIC failed (its reason) or the
// work stopped with an error. A signal (ctx done) is a normal end. stop
// may be nil.
func runFor(ctx context.Context, d time.Duration, v *vif, stop *stopper, tick func(elapsed time.Duration)) (stopReason, error) {
	start := time.Now()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var deadline <-chan time.Time
	if d > 0 {
		tm := time.NewTimer(d)
		defer tm.Stop()
		deadline = tm.C
	}
	var stopped <-chan struct{}
	if stop != nil {
		stopped = stop.ch
	}
	for {
		select {
		case <-ctx.Done():
			slog.Debug("stopping", "reason", context.Cause(ctx))
			return stopSignal, nil
		case <-deadline:
			return stopDuration, nil
		case <-stopped:
			if stop.reason == stopError {
				// A send that failed because the NIC went away usually
				// beats the receive side's notice by a moment: name the
				// NIC's failure when it comes.
				select {
				case <-v.be.Done():
					if err := v.be.Err(); err != nil {
						return stopNIC, fmt.Errorf("%s stopped receiving: %w; sending had failed: %w", v.ifc.Name(), err, stop.err)
					}
				case <-time.After(nicNoticeTime):
				}
			}
			return stop.reason, stop.err
		case <-v.be.Done():
			if err := v.be.Err(); err != nil {
				return stopNIC, fmt.Errorf("%s stopped receiving: %w", v.ifc.Name(), err)
			}
			return stopNIC, errors.New(v.ifc.Name() + ": the NIC's receive goroutines ended")
		case now := <-t.C:
			if tick != nil {
				tick(now.Sub(start))
			}
		}
	}
}

// startMetrics serves the vif's counters, and those of the extra
// collectors, when addr is set; the returned stop shuts the server down.
func startMetrics(addr, mode string, v *vif, extra ...prometheus.Collector) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	srv, ln, err := serveMetrics(addr, mode, v, extra...)
	if err != nil {
		return nil, err
	}
	slog.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return func() { srv.Close() }, nil
}

// isGone reports errors that mean the vif is going away under a sender, the
// normal end of a send loop at shutdown.
func isGone(err error) bool {
	return errors.Is(err, unix.ENETDOWN) || errors.Is(err, net.ErrClosed) || errors.Is(err, unix.ENXIO)
}
