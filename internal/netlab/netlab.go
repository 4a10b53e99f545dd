//go:build linux

// Package netlab builds throw-away network labs for tests, benchmarks and the
// demo: two named network namespaces joined by a veth pair, addressed from the
// benchmarking range 198.18.0.0/15. Everything a lab creates lives inside its
// own namespaces, so traffic never leaves them, and Close removes it all.
//
// Side 0 ("host") is where a NIC under test lives: the XDP program and the
// AF_XDP sockets go there, and its kernel keeps the host's own address. Side 1
// ("peer") is the other end of the wire.
package netlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Options shape a lab. The zero value is a single-queue veth pair, MTU 1500.
type Options struct {
	// Name is the lab's prefix, used for namespace and link names. Empty means
	// a random "vx" + 6 hex digits; names stay within IFNAMSIZ.
	Name string
	// Queues is the number of RX and TX queues on each veth end (default 1).
	Queues int
	// MTU of both veth ends (default 1500).
	MTU int
	// NoAddr leaves both ends without an IPv4 address.
	NoAddr bool
}

// Lab is two namespaces and the veth pair between them.
type Lab struct {
	Name  string
	NS    [2]string           // named namespaces, as `ip netns` lists them
	Link  [2]string           // Link[i] lives in NS[i]
	Index [2]int              // ifindex of Link[i] inside NS[i]
	MAC   [2]net.HardwareAddr // MAC of Link[i]
	Addr  [2]netip.Prefix     // 198.18.0.1/24 on side 0, 198.18.0.2/24 on side 1
}

// Host and Peer name the two sides for Do and Run.
const (
	Host = 0
	Peer = 1
)

// New creates a lab. On error nothing is left behind. A namespace of the
// lab's name that exists already is an error wrapping os.ErrExist.
func New(opts Options) (l *Lab, err error) {
	if opts.Queues <= 0 {
		opts.Queues = 1
	}
	if opts.MTU <= 0 {
		opts.MTU = 1500
	}
	name := opts.Name
	if name == "" {
		var b [3]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		name = "vx" + hex.EncodeToString(b[:])
	}
	if err := CheckLabName(name); err != nil {
		return nil, err
	}
	l = &Lab{
		Name: name,
		NS:   [2]string{name + "-h", name + "-p"},
		Link: [2]string{name + "h", name + "p"},
	}
	nics, useNICs, err := labNICs(opts) // existing NICs instead of a veth: nics.go
	if err != nil {
		return nil, err
	}
	if useNICs {
		l.Link = nics
	}
	if !opts.NoAddr {
		l.Addr = [2]netip.Prefix{
			netip.MustParsePrefix("198.18.0.1/24"),
			netip.MustParsePrefix("198.18.0.2/24"),
		}
	}
	// What is there belongs to someone else (or to a lab half removed):
	// fail before the cleanup below could take it away.
	for _, ns := range l.NS {
		if _, err := os.Stat(filepath.Join(netnsDir, ns)); err == nil {
			return nil, fmt.Errorf("netlab: namespace %s: %w", ns, os.ErrExist)
		}
	}
	defer func() {
		if err != nil {
			l.Close()
			l = nil
		}
	}()
	var handles [2]netns.NsHandle
	for i, ns := range l.NS {
		h, err := newNamed(ns)
		if err != nil {
			return l, fmt.Errorf("netlab: create namespace %s: %w", ns, err)
		}
		handles[i] = h
	}
	defer handles[0].Close()
	defer handles[1].Close()

	nl, err := netlink.NewHandleAt(handles[0])
	if err != nil {
		return l, fmt.Errorf("netlab: netlink in %s: %w", l.NS[0], err)
	}
	defer nl.Close()
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{
			Name: l.Link[0], MTU: opts.MTU,
			NumTxQueues: opts.Queues, NumRxQueues: opts.Queues,
		},
		PeerName:        l.Link[1],
		PeerNamespace:   netlink.NsFd(int(handles[1])),
		PeerNumTxQueues: uint32(opts.Queues),
		PeerNumRxQueues: uint32(opts.Queues),
		PeerMTU:         uint32(opts.MTU),
	}
	if useNICs {
		err = l.takeNICs(opts, handles)
	} else if err = nl.LinkAdd(veth); err != nil {
		err = fmt.Errorf("netlab: add veth %s: %w", l.Link[0], err)
	}
	if err != nil {
		return l, err
	}
	for i := range 2 {
		h := nl
		if i == 1 {
			if h, err = netlink.NewHandleAt(handles[1]); err != nil {
				return l, fmt.Errorf("netlab: netlink in %s: %w", l.NS[1], err)
			}
			defer h.Close()
		}
		link, err := l.readLink(h, i)
		if err != nil {
			return l, err
		}
		if l.Addr[i].IsValid() {
			addr := &netlink.Addr{IPNet: &net.IPNet{
				IP:   l.Addr[i].Addr().AsSlice(),
				Mask: net.CIDRMask(l.Addr[i].Bits(), 32),
			}}
			if err := h.AddrAdd(link, addr); err != nil {
				return l, fmt.Errorf("netlab: address %s on %s: %w", l.Addr[i], l.Link[i], err)
			}
		}
		if err := h.LinkSetUp(link); err != nil {
			return l, fmt.Errorf("netlab: set %s up: %w", l.Link[i], err)
		}
		lo, err := h.LinkByName("lo")
		if err == nil {
			_ = h.LinkSetUp(lo)
		}
	}
	return l, nil
}

func (l *Lab) readLink(h *netlink.Handle, side int) (netlink.Link, error) {
	link, err := h.LinkByName(l.Link[side])
	if err != nil {
		return nil, fmt.Errorf("netlab: find %s in %s: %w", l.Link[side], l.NS[side], err)
	}
	l.Index[side] = link.Attrs().Index
	l.MAC[side] = link.Attrs().HardwareAddr
	return link, nil
}

// Open finds a lab that New created earlier, possibly in another process
// (the command's `lab up` and `lab down`). It fails with an error wrapping
// os.ErrNotExist when the lab's namespaces are not there.
func Open(name string) (*Lab, error) {
	if err := CheckLabLookupName(name); err != nil {
		return nil, err
	}
	l := &Lab{
		Name: name,
		NS:   [2]string{name + "-h", name + "-p"},
		Link: [2]string{name + "h", name + "p"},
	}
	for i, ns := range l.NS {
		h, err := netns.GetFromName(ns)
		if err != nil {
			return nil, fmt.Errorf("netlab: lab %q: namespace %s: %w", name, ns, os.ErrNotExist)
		}
		nl, err := netlink.NewHandleAt(h)
		h.Close()
		if err != nil {
			return nil, fmt.Errorf("netlab: netlink in %s: %w", ns, err)
		}
		link, err := l.readLink(nl, i)
		if err == nil {
			addrs, _ := nl.AddrList(link, netlink.FAMILY_V4)
			if len(addrs) > 0 {
				ones, _ := addrs[0].Mask.Size()
				a, _ := netip.AddrFromSlice(addrs[0].IP.To4())
				l.Addr[i] = netip.PrefixFrom(a, ones)
			}
		}
		nl.Close()
		if err != nil {
			return nil, err
		}
	}
	return l, nil
}

// List returns the names of the labs present on this machine (namespace
// pairs NAME-h and NAME-p).
func List() ([]string, error) {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	have := map[string]bool{}
	for _, e := range ents {
		have[e.Name()] = true
	}
	var names []string
	for _, e := range ents {
		if base, ok := strings.CutSuffix(e.Name(), "-h"); ok && have[base+"-p"] {
			names = append(names, base)
		}
	}
	return names, nil
}

// netnsDirReady makes /run/netns a shared mount point once per process
// (makeNetnsDirShared).
var netnsDirReady struct {
	once sync.Once
	err  error
}

// makeNetnsDirShared makes dir a shared mount point of its own, as `ip
// netns add` does before its first namespace: iproute2 binds /run/netns
// onto itself when it is not a mount point yet, and a namespace bound onto
// the plain directory before that (vishvananda/netns' NewNamed does not do
// this) is hidden under the new mount for good: it can be neither entered
// by name nor removed (unlink answers EBUSY). On a fresh machine the first
// `ip netns add` of a test running beside a lab did exactly that. The
// check and the bind are made under an flock of the directory, so that two
// processes starting at once do not both bind it.
func makeNetnsDirShared(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("netlab: %w", err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("netlab: %w", os.NewSyscallError("open "+dir, err))
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		return fmt.Errorf("netlab: %w", os.NewSyscallError("flock "+dir, err))
	}
	err = unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if err == unix.EINVAL { // not a mount point yet
		if err = unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err == nil {
			err = unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
		}
	}
	if err != nil {
		return fmt.Errorf("netlab: make %s a shared mount point: %w", dir, os.NewSyscallError("mount", err))
	}
	return nil
}

// newNamed creates a named namespace without moving the calling thread: it
// works on a locked thread that is thrown away afterwards.
func newNamed(name string) (netns.NsHandle, error) {
	netnsDirReady.once.Do(func() { netnsDirReady.err = makeNetnsDirShared(netnsDir) })
	if netnsDirReady.err != nil {
		return netns.None(), netnsDirReady.err
	}
	type result struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread has changed namespace and must die
		// with this goroutine rather than serve anyone else.
		h, err := netns.NewNamed(name)
		ch <- result{h, err}
	}()
	r := <-ch
	return r.h, r.err
}

// Do runs fn on a locked OS thread inside the namespace of side (Host or
// Peer). Sockets, XDP links and netlink handles created by fn keep working
// from any goroutine afterwards; goroutines started by fn do not inherit the
// namespace. The thread is discarded when fn returns.
func (l *Lab) Do(side int, fn func() error) error {
	return DoIn(l.NS[side], fn)
}

// DoIn runs fn on a locked OS thread inside the named namespace ns.
func DoIn(ns string, fn func() error) error {
	errc := make(chan error, 1)
	if err := CheckNamespaceName(ns); err != nil {
		return err
	}
	go func() {
		runtime.LockOSThread()
		h, err := netns.GetFromName(ns)
		if err != nil {
			errc <- fmt.Errorf("netlab: open namespace %s: %w", ns, err)
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			errc <- fmt.Errorf("netlab: enter namespace %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Command returns a command that runs inside the namespace of side.
func (l *Lab) Command(side int, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", l.NS[side], name}, args...)...)
}

// Run runs a command inside the namespace of side and returns its combined
// output; a failure's error includes that output.
func (l *Lab) Run(side int, name string, args ...string) ([]byte, error) {
	out, err := l.Command(side, name, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("netlab: %s %s in %s: %w: %s", name, strings.Join(args, " "), l.NS[side], err, out)
	}
	return out, nil
}

// PlainVeth adds in the namespace of side a veth pair a–b made the way a
// user makes one, `ip link add A type veth peer name B` (the kernel's
// default: a queue per CPU allocated, one in use; not the lab's own
// one-queue pair), both ends up. Removing the lab's namespaces removes it.
func (l *Lab) PlainVeth(side int, a, b string) error {
	for _, args := range [][]string{
		{"link", "add", a, "type", "veth", "peer", "name", b},
		{"link", "set", a, "up"},
		{"link", "set", b, "up"},
	} {
		if _, err := l.Run(side, "ip", args...); err != nil {
			return err
		}
	}
	return nil
}

// Close removes the lab as Remove does (a lab made of existing NICs gives
// them back first, see NICsEnv). It is safe to call more than once.
func (l *Lab) Close() error {
	err := l.returnNICs()
	_, rerr := remove(l)
	return errors.Join(err, rerr)
}

// Removal is what Remove found of a lab: the parts it took away and those
// already gone, each named ("namespace vxlab-h", "link vxlabh in vxlab-h",
// "XDP program 42 on vxlabh").
type Removal struct {
	Removed, Missing []string
}

// Nothing says no part of the lab was there.
func (r Removal) Nothing() bool { return len(r.Removed) == 0 }

// Remove takes away whatever is left of the lab name, in whatever state it
// is: the veth pair (and with it any XDP program on it; deleting the link
// explicitly also covers a namespace that a process keeps alive), then both
// namespaces. A part already gone is reported in Missing, not an error, so
// Remove can be repeated, and removing a lab of which nothing is left
// succeeds with Nothing() true. Errors are real failures (EPERM, say), with
// everything else still attempted.
func Remove(name string) (Removal, error) {
	if err := CheckLabLookupName(name); err != nil {
		return Removal{}, err
	}
	return remove(&Lab{
		Name: name,
		NS:   [2]string{name + "-h", name + "-p"},
		Link: [2]string{name + "h", name + "p"},
	})
}

func remove(l *Lab) (Removal, error) {
	var r Removal
	var errs []error
	note := func(there bool, what string) {
		if there {
			r.Removed = append(r.Removed, what)
		} else {
			r.Missing = append(r.Missing, what)
		}
	}
	var linkGone bool // the pair is gone: deleting one end deletes the other
	for side, ns := range l.NS {
		if ns == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(netnsDir, ns)); err != nil {
			note(false, "namespace "+ns)
			note(false, fmt.Sprintf("link %s in %s", l.Link[side], ns))
			continue
		}
		err := DoIn(ns, func() error {
			link, err := netlink.LinkByName(l.Link[side])
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				note(linkGone, fmt.Sprintf("link %s in %s", l.Link[side], ns))
				return nil
			} else if err != nil {
				return fmt.Errorf("netlab: find %s in %s: %w", l.Link[side], ns, err)
			}
			if x := link.Attrs().Xdp; x != nil && x.Attached {
				note(true, fmt.Sprintf("XDP program %d on %s", x.ProgId, l.Link[side]))
			}
			if err := netlink.LinkDel(link); err != nil {
				return fmt.Errorf("netlab: delete %s in %s: %w", l.Link[side], ns, err)
			}
			note(true, fmt.Sprintf("link %s in %s", l.Link[side], ns))
			linkGone = true
			return nil
		})
		if err != nil {
			errs = append(errs, err)
		}
		if err := deleteNamed(ns); err != nil {
			errs = append(errs, err)
		} else {
			note(true, "namespace "+ns)
		}
	}
	return r, errors.Join(errs...)
}

// netnsDir is where `ip netns` keeps named namespaces (bind mounts).
const netnsDir = "/run/netns"

// deleteNamed removes a named namespace: its bind mount, then the file (a
// stale file that is no mount any more is removed too).
func deleteNamed(ns string) error {
	p := filepath.Join(netnsDir, ns)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("netlab: delete namespace %s: %w", ns, os.NewSyscallError("umount", err))
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("netlab: delete namespace %s: %w", ns, err)
	}
	return nil
}

// DialContext returns a dial function (the shape of net.Dialer.DialContext
// and http.Transport.DialContext) whose connections are made with the kernel
// of the namespace of side: the socket is created on a thread there and
// works from any goroutine afterwards.
func (l *Lab) DialContext(side int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = l.Do(side, func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// LinkAttrs reads the attributes of Link[side] — its statistics, its XDP
// program — from inside its namespace.
func (l *Lab) LinkAttrs(side int) (*netlink.LinkAttrs, error) {
	var a *netlink.LinkAttrs
	err := l.Do(side, func() error {
		link, err := netlink.LinkByIndex(l.Index[side])
		if err != nil {
			return fmt.Errorf("netlab: read %s: %w", l.Link[side], err)
		}
		a = link.Attrs()
		return nil
	})
	return a, err
}
