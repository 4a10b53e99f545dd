package virtif

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// MaxSegments is how many segments one frame may have when it reaches
// Backend.Send: if_virt.c's LB_SH, the size of virtif_start's iovec array.
const MaxSegments = 32

// Backend is the hypercall side of an interface (VIFHYPER_*).
type Backend interface {
	// Send transmits one frame given as 1..MaxSegments non-empty segments
	// (VIFHYPER_SEND). Segments are valid only for the call. Called with the
	// interface's send lock held (never concurrently for one backend).
	//
	// nil means the backend has committed the frame (copied it and taken
	// what it needs to send it, e.g. a TX ring slot): it must not drop it
	// later, and the interface counts it in OPackets. An error means the
	// frame was not taken; the interface counts it in OErrors and returns
	// the error to the caller of Output.
	Send(segs [][]byte) error
	// Dying: the interface is going away (VIFHYPER_DYING). Non-blocking;
	// after it the backend should stop delivering.
	Dying() error
	// Close destroys the backend and waits for its goroutines
	// (VIFHYPER_DESTROY); once it returns, Deliver is not called again.
	// Called from inside one of the backend's own Deliver upcalls (an
	// input handler closing its interface), it must not wait for the
	// calling goroutine: either it completes, and that goroutine ends when
	// the upcall returns, or it fails at once with a documented errno.
	Close() error
}

// BackendConfig is what a backend is created from (VIFHYPER_CREATE's
// arguments).
type BackendConfig struct {
	Name string // interface name, e.g. "vif0"
	// Link is the whole link string with its scheme, e.g. "mem:seg0" or
	// "xdp:eth0,queues=0-3". A scheme-less link string (unit-number mode,
	// "0") arrives with the cloner's default scheme prepended ("mem:0").
	Link string
	// MAC is the proposed MAC, b2:0a:RR:0b:0e:NN (RR random, NN the unit);
	// a backend may replace it (HardwareAddrer), or refuse it with an error
	// wrapping ErrMACInUse when it is in use on its link: then the next
	// proposal has another RR, each of the 256 tried once at most.
	MAC net.HardwareAddr
	// Deliver is VIF_DELIVERPKT: the receive upcall for one frame. frame is
	// valid only during the call. Safe for concurrent calls (a backend may
	// run one RX goroutine per NIC queue). Allocates nothing.
	Deliver func(frame []byte)
	// NewDeliver returns another deliver function, bound to counters of its
	// own: for a receiving goroutine that lives long (one per NIC queue),
	// call it once when the goroutine starts. Each function it returns must
	// not be called concurrently with itself; in exchange it skips the
	// per-P counter lookup Deliver does (BenchmarkDeliver shows the
	// difference).
	// Optional to use: Deliver always works.
	NewDeliver func() func(frame []byte)
	// EndBatch says that the calling goroutine has delivered (Deliver or
	// a NewDeliver function) the last frame of a batch, so that an upper
	// layer holding frames back to coalesce them (GRO) hands them up now.
	// A backend that implements BatchEnder calls it after every batch it
	// delivers, before the goroutine that delivered it waits for more
	// frames; one that does not may ignore it. Safe for concurrent calls;
	// allocates nothing; must not be called from inside Send.
	EndBatch func()
}

// ErrMACInUse is what a backend's OpenFunc wraps to refuse a proposed MAC
// that is in use on its link; the interface proposes another.
var ErrMACInUse = errors.New("MAC in use on the link")

// OpenFunc creates a backend from its configuration (VIFHYPER_CREATE).
type OpenFunc func(cfg BackendConfig) (Backend, error)

// Optional interfaces a backend may implement; the interface type-asserts
// for them once, when the backend is created.
type (
	// HardwareAddrer gives the backend's MAC, which replaces the proposal
	// (nil keeps the proposal).
	HardwareAddrer interface{ HardwareAddr() net.HardwareAddr }
	// HardwareAddrSetter is told of a MAC change (only while down).
	HardwareAddrSetter interface {
		SetHardwareAddr(net.HardwareAddr) error
	}
	// Flusher is called once after a batch of Sends (the end of
	// virtif_start), so a backend can kick the kernel once per batch.
	// Flush only pushes frames Send already committed to the device: its
	// error changes no frame's fate (they stay in OPackets), so the
	// interface neither returns nor counts it; a backend whose Flush can
	// fail counts that itself (StatsReporter).
	Flusher interface{ Flush() error }
	// MulticastFilter is told of the first join and the last leave of a
	// group.
	MulticastFilter interface {
		SetMulticast(group net.HardwareAddr, join bool) error
	}
	// Promiscuous is told when the interface enters or leaves promiscuous
	// mode.
	Promiscuous interface{ SetPromisc(on bool) error }
	// AddrRegistrar is told of the interface's IPv4 addresses (e.g. to steer
	// ARP requests for them).
	AddrRegistrar interface {
		SetIPv4(addr netip.Addr, add bool) error
	}
	// MTULimiter says how large an MTU the backend carries (the frame
	// less Ethernet and VLAN headers): SetMTU allows MinMTU..MaxMTU() in
	// place of if_virt.c's MinMTU..MaxMTU (ETHERMTU), the way a NetBSD
	// driver's ETHERCAP_JUMBO_MTU lifts ether_ioctl's ceiling.
	MTULimiter interface{ MaxMTU() int }
	// StatsReporter appends backend counters to the interface statistics.
	StatsReporter interface{ AppendStats(dst []Stat) []Stat }
	// BatchEnder says whether the backend calls BackendConfig.EndBatch
	// after every batch it delivers (true): only then may an upper layer
	// hold frames back until the end of a batch (Interface.EndsBatches).
	BatchEnder interface{ EndsBatches() bool }
)

// EtherVLANHeaderLen is the Ethernet header with one 802.1Q tag (14 + 4
// bytes): what a frame carries beyond its MTU, so a backend's MaxMTU is its
// largest frame less this.
const EtherVLANHeaderLen = 18

// Stat is one named backend counter.
type Stat struct {
	Name  string
	Value uint64
}

// LookupStat returns the value of the counter called name in stats, and
// whether there is one.
func LookupStat(stats []Stat, name string) (uint64, bool) {
	for _, s := range stats {
		if s.Name == name {
			return s.Value, true
		}
	}
	return 0, false
}

var registry struct {
	sync.RWMutex
	m map[string]OpenFunc
}

// RegisterBackend makes link strings "scheme:..." open with fn. An empty
// scheme, a scheme containing ':' or ',' or a nil fn is EINVAL; a scheme
// registered twice is EEXIST. It never panics.
func RegisterBackend(scheme string, fn OpenFunc) error {
	if scheme == "" || strings.ContainsAny(scheme, ":,") || fn == nil {
		return fmt.Errorf("virtif: register backend %q: %w", scheme, unix.EINVAL)
	}
	registry.Lock()
	defer registry.Unlock()
	if _, ok := registry.m[scheme]; ok {
		return fmt.Errorf("virtif: register backend %q: %w", scheme, unix.EEXIST)
	}
	if registry.m == nil {
		registry.m = make(map[string]OpenFunc)
	}
	registry.m[scheme] = fn
	return nil
}

// Backends lists the registered schemes, sorted.
func Backends() []string {
	registry.RLock()
	defer registry.RUnlock()
	s := make([]string, 0, len(registry.m))
	for k := range registry.m {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

func lookupBackend(scheme string) OpenFunc {
	registry.RLock()
	defer registry.RUnlock()
	return registry.m[scheme]
}
