package virtif

import (
	"fmt"
	"sort"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// ClonerConfig shapes a Cloner. The zero value is link-string mode with the
// prefix "vif".
type ClonerConfig struct {
	// Prefix names the interfaces: Prefix + unit number (default "vif").
	Prefix string
	// UnitMode is if_virt.c built without RUMP_VIF_LINKSTR: the link string is
	// the unit number in decimal and the backend is created at clone time,
	// so Create fails if the backend cannot be opened. Without it (link-string
	// mode, the default) the backend is created by SetLinkStr.
	UnitMode bool
	// DefaultScheme is the backend of scheme-less link strings, such as the
	// unit numbers of UnitMode ("0" opens DefaultScheme with link "mem:0"
	// when DefaultScheme is "mem"). Empty: scheme-less link strings fail with
	// ENXIO.
	DefaultScheme string
	// SendQueueLen bounds how many frames may wait for an interface's send
	// lock at once (IFQ_MAXLEN); beyond it Output fails with ENOBUFS
	// (default 256).
	SendQueueLen int
}

// maxNameLen is IFNAMSIZ minus the NUL.
const maxNameLen = 15

// defaults fills in what a zero field means.
func (cfg ClonerConfig) defaults() ClonerConfig {
	if cfg.Prefix == "" {
		cfg.Prefix = "vif"
	}
	if cfg.SendQueueLen <= 0 {
		cfg.SendQueueLen = 256
	}
	return cfg
}

// Cloner creates and destroys interfaces (struct if_clone with
// virtif_clone / virtif_unclone). It is safe for concurrent use. The zero
// value is ready to use and the same as NewCloner(ClonerConfig{}).
type Cloner struct {
	cfg      ClonerConfig
	mu       sync.Mutex
	ifs      map[int]*Interface
	detached bool
}

// NewCloner attaches a cloner (VIF_MODCMD's MODULE_CMD_INIT). A prefix that
// is not 1..12 letters is EINVAL.
func NewCloner(cfg ClonerConfig) (*Cloner, error) {
	cfg = cfg.defaults()
	if len(cfg.Prefix) > maxNameLen-3 {
		return nil, opErr(cfg.Prefix, "new cloner: prefix too long", unix.EINVAL)
	}
	for _, r := range cfg.Prefix {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return nil, opErr(cfg.Prefix, "new cloner: prefix must be letters", unix.EINVAL)
		}
	}
	return &Cloner{cfg: cfg}, nil
}

// Prefix is the interface name prefix.
func (c *Cloner) Prefix() string { return c.cfg.defaults().Prefix }

// Create clones an interface with the lowest free unit number.
func (c *Cloner) Create() (*Interface, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	unit := 0
	for c.ifs[unit] != nil {
		unit++
	}
	return c.createLocked(unit)
}

// CreateUnit clones the interface with the given unit number: EEXIST if it
// exists, EINVAL if the unit is negative or its name longer than IFNAMSIZ.
func (c *Cloner) CreateUnit(unit int) (*Interface, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.createLocked(unit)
}

// createLocked mirrors virtif_clone.
func (c *Cloner) createLocked(unit int) (*Interface, error) {
	cfg := c.cfg.defaults() // the zero Cloner's too
	name := cfg.Prefix + strconv.Itoa(unit)
	switch {
	case c.detached:
		return nil, opErr(name, "create", unix.ENXIO)
	case unit < 0 || len(name) > maxNameLen:
		return nil, opErr(name, "create: bad unit number", unix.EINVAL)
	case c.ifs[unit] != nil:
		return nil, opErr(name, "create", unix.EEXIST)
	}
	ifp := newInterface(c, cfg, name, unit)
	if cfg.UnitMode {
		// Without RUMP_VIF_LINKSTR the unit number is the link string and
		// everything is created now; on failure nothing is kept.
		ifp.mu.Lock()
		err := ifp.createLocked(strconv.Itoa(unit))
		ifp.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	if c.ifs == nil {
		c.ifs = make(map[int]*Interface)
	}
	c.ifs[unit] = ifp
	return ifp, nil
}

// Destroy destroys the named interface, mirroring virtif_unclone: EBUSY if
// it is up; otherwise the backend is told it is dying (an error there keeps
// the interface), the interface is stopped and the backend closed. ENXIO if
// there is no such interface. An error from the backend's Close is
// returned (errors.Is sees its cause), though the interface is gone.
func (c *Cloner) Destroy(name string) error {
	c.mu.Lock()
	var ifp *Interface
	for _, i := range c.ifs {
		if i.name == name {
			ifp = i
		}
	}
	c.mu.Unlock()
	if ifp == nil {
		return opErr(name, "destroy", unix.ENXIO)
	}
	_, err := c.destroy(ifp)
	return err
}

// destroy is virtif_unclone. gone reports that ifp was no longer the
// cloner's (destroyed meanwhile), which Destroy answers with ENXIO and
// Interface.Close with nil.
func (c *Cloner) destroy(ifp *Interface) (gone bool, err error) {
	c.mu.Lock()
	if c.ifs[ifp.unit] != ifp {
		c.mu.Unlock()
		return true, opErr(ifp.name, "destroy", unix.ENXIO)
	}
	ifp.mu.Lock()
	if ifp.flags.Load()&uint32(FlagUp) != 0 {
		ifp.mu.Unlock()
		c.mu.Unlock()
		return false, opErr(ifp.name, "destroy", unix.EBUSY)
	}
	b := ifp.backend()
	if b != nil {
		if err := b.Dying(); err != nil {
			ifp.mu.Unlock()
			c.mu.Unlock()
			return false, opErr(ifp.name, "destroy: backend dying", err)
		}
	}
	ifp.stopLocked()
	ifp.destroyed = true
	if l := ifp.link.Load(); l != nil {
		ifp.link.Store(&linkState{str: l.str}) // no backend: Up and the ioctls are ENXIO
	}
	delete(c.ifs, ifp.unit)
	ifp.mu.Unlock()
	c.mu.Unlock()
	// Outside the locks, whose holders would wait for a tap that runs
	// under the send lock and calls back: wait for a virtif_start in
	// progress (later ones see !RUNNING), then detach the send path.
	ifp.waitSend(func() { ifp.tx, ifp.flusher = nil, nil })
	// Close outside the locks too: it waits for RX goroutines whose upcalls may
	// call back into the interface or the cloner. Its error is returned,
	// but the interface is gone whatever it says, as in virtif_unclone,
	// which frees it whatever VIFHYPER_DESTROY does.
	if b != nil {
		if err := b.Close(); err != nil {
			return false, opErr(ifp.name, "destroy: backend close", err)
		}
	}
	return false, nil
}

// Interface returns the named interface (if_unit lookup).
func (c *Cloner) Interface(name string) (*Interface, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, i := range c.ifs {
		if i.name == name {
			return i, true
		}
	}
	return nil, false
}

// Interfaces lists the interfaces by unit number.
func (c *Cloner) Interfaces() []*Interface {
	c.mu.Lock()
	l := make([]*Interface, 0, len(c.ifs))
	for _, i := range c.ifs {
		l = append(l, i)
	}
	c.mu.Unlock()
	sort.Slice(l, func(a, b int) bool { return l[a].unit < l[b].unit })
	return l
}

// Detach detaches the cloner (VIF_MODCMD's MODULE_CMD_FINI): EBUSY while
// interfaces remain, where if_virt.c always said ENOTTY. After it Create
// fails with ENXIO. Detaching twice is fine.
func (c *Cloner) Detach() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.ifs); n > 0 {
		return opErr(c.Prefix(), fmt.Sprintf("detach cloner: %d interfaces left", n), unix.EBUSY)
	}
	c.detached = true
	return nil
}

// Close brings every interface down, destroys it and detaches the cloner.
// It returns the first error, a backend's Close error included; calling it
// twice is fine.
func (c *Cloner) Close() error {
	var first error
	for _, i := range c.Interfaces() {
		if err := i.Close(); err != nil && first == nil {
			first = err
		}
	}
	if err := c.Detach(); err != nil && first == nil {
		first = err
	}
	return first
}
