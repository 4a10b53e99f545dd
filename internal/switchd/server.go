//go:build linux

package switchd

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/bpf"
	"github.com/virtif-xdp/virtif-xdp/internal/ethtool"
)

// Config configures a Server.
type Config struct {
	NIC     string // the NIC's name, in the calling thread's namespace
	Control string // the control socket's path
	// Group, when >= 0, owns the socket and may use it (mode 0660);
	// otherwise only the owner may (0600).
	Group  int
	Attach bpf.AttachMode
	// MaxPorts bounds the tenants (MaxPorts-1), default 1024.
	MaxPorts int
}

// MaxAddrs bounds what one tenant registers: MaxAddrs MACs and groups
// together, and MaxAddrs IPv4 addresses (ENOSPC beyond), so that one tenant
// cannot fill the maps every tenant shares.
const MaxAddrs = 64

// Server is a running switch.
type Server struct {
	cfg     Config
	nic     netlink.Link
	attach  bpf.AttachMode
	sw      *bpf.Switch
	ln      *net.UnixListener
	nsSelf  netns.NsHandle
	prefix  string // of the veth names: "vs" + the NIC's ifindex + "p"
	stopped chan struct{}

	mu      sync.Mutex
	tenants map[int]*tenant // by port
	conns   map[*net.UnixConn]bool
	closed  bool
	wg      sync.WaitGroup
}

type tenant struct {
	port     int
	name     string
	pid      int
	switchIf string
	ifname   string
	macs     map[string]bool
	groups   map[string]bool
	ipv4s    map[netip.Addr]bool
}

// New attaches the switch to the NIC and listens on the control socket. It
// must run on a thread in the NIC's namespace (the veths are made there).
// Veths an earlier switch on this NIC left (it was killed) are removed once
// the NIC's program is attached (a switch still running on the NIC keeps its
// own: the attach fails with EBUSY first).
func New(cfg Config) (*Server, error) {
	nic, err := netlink.LinkByName(cfg.NIC)
	if err != nil {
		return nil, fmt.Errorf("switch: NIC %s: %w", cfg.NIC, err)
	}
	self, err := netns.Get()
	if err != nil {
		return nil, fmt.Errorf("switch: own namespace: %w", err)
	}
	s := &Server{cfg: cfg, nic: nic, nsSelf: self, prefix: "vs" + strconv.Itoa(nic.Attrs().Index) + "p",
		stopped: make(chan struct{}), tenants: map[int]*tenant{}, conns: map[*net.UnixConn]bool{}}
	sw, err := bpf.LoadSwitch(&bpf.SwitchOptions{MaxPorts: cfg.MaxPorts})
	if err != nil {
		self.Close()
		return nil, fmt.Errorf("switch: %w", err)
	}
	s.sw = sw
	if s.attach, err = sw.AttachNIC(nic.Attrs().Index, cfg.Attach); err != nil {
		s.closeAll()
		return nil, fmt.Errorf("switch: %s: %w", cfg.NIC, err)
	}
	// Only now that the NIC is ours (another switch on it would have made
	// the attach fail with EBUSY) are veths of its prefix surely stale.
	s.removeStale()
	if err := s.listen(); err != nil {
		s.closeAll()
		return nil, err
	}
	return s, nil
}

// removeStale deletes the veths of a switch on this NIC that was killed.
func (s *Server) removeStale() {
	links, err := netlink.LinkList()
	if err != nil {
		return
	}
	for _, l := range links {
		if _, ok := l.(*netlink.Veth); ok && strings.HasPrefix(l.Attrs().Name, s.prefix) {
			_ = netlink.LinkDel(l)
		}
	}
}

func (s *Server) listen() error {
	path := s.cfg.Control
	// A socket file of a dead switch is in the way; anything else is not ours.
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("switch: control %s exists and is not a socket: %w", path, os.ErrExist)
		}
		if c, err := net.Dial("unixpacket", path); err == nil {
			c.Close()
			return fmt.Errorf("switch: control %s: another switch listens there: %w", path, unix.EADDRINUSE)
		}
		_ = os.Remove(path)
	}
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	unix.Umask(old)
	if err != nil {
		return fmt.Errorf("switch: control %s: %w", path, err)
	}
	if s.cfg.Group >= 0 {
		if err := os.Chown(path, -1, s.cfg.Group); err == nil {
			err = os.Chmod(path, 0o660)
		}
		if err != nil {
			ln.Close()
			return fmt.Errorf("switch: control %s: group %d: %w", path, s.cfg.Group, err)
		}
	}
	s.ln = ln
	return nil
}

// Attach says how the NIC's program runs.
func (s *Server) Attach() bpf.AttachMode { return s.attach }

// Switch is the switch's programs, for counters.
func (s *Server) Switch() *bpf.Switch { return s.sw }

// Serve accepts tenants until Close.
func (s *Server) Serve() error {
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			return fmt.Errorf("switch: accept: %w", err)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.conns[c] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// Close stops the switch: every tenant is removed, the program leaves the
// NIC, the socket file goes.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	if s.ln != nil {
		s.ln.Close() // removes the socket file
	}
	s.wg.Wait()
	return s.closeAll()
}

func (s *Server) closeAll() error {
	var err error
	if s.sw != nil {
		err = s.sw.Close()
	}
	s.nsSelf.Close()
	return err
}

func (s *Server) serveConn(c *net.UnixConn) {
	defer s.wg.Done()
	// Veths, ethtool, XDP attach and DEVMAP entries resolve names and
	// ifindexes in the calling thread's namespace: this goroutine's thread
	// is put into the switch's and never unlocked (it ends with it).
	runtime.LockOSThread()
	if err := netns.Set(s.nsSelf); err != nil {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		return
	}
	var t *tenant
	defer func() {
		if t != nil {
			_ = s.removeTenant(t)
		}
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	pid := 0
	if raw, err := c.SyscallConn(); err == nil {
		_ = raw.Control(func(fd uintptr) {
			if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
				pid = int(cred.Pid)
			}
		})
	}
	buf := make([]byte, maxMessage)
	oob := make([]byte, unix.CmsgSpace(4*4))
	hello := false
	for {
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 {
			return // closed: the tenant goes
		}
		fds := receivedFDs(oob[:oobn])
		var req Request
		var rep Reply
		if err := json.Unmarshal(buf[:n], &req); err != nil {
			rep = errReply(fmt.Errorf("bad request: %v: %w", err, unix.EINVAL))
		} else if !hello && req.Op != "hello" {
			rep = errReply(fmt.Errorf("first request must be hello with version %d: %w", Version, unix.EPROTO))
		} else {
			rep = s.handle(&req, &t, fds, pid)
			if req.Op == "hello" && rep.OK {
				hello = true
			}
		}
		for _, fd := range fds {
			unix.Close(fd)
		}
		b, err := encode(rep)
		if err != nil {
			return
		}
		if _, err := c.Write(b); err != nil {
			return
		}
		if req.Op == "hello" && !rep.OK {
			return
		}
	}
}

func receivedFDs(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if f, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, f...)
		}
	}
	return fds
}

func (s *Server) handle(req *Request, tp **tenant, fds []int, pid int) Reply {
	t := *tp
	needTenant := func() error {
		if t == nil {
			return fmt.Errorf("%s: no tenant on this connection (add first): %w", req.Op, unix.ENOENT)
		}
		return nil
	}
	var err error
	switch req.Op {
	case "hello":
		if req.Version != Version {
			return errReply(fmt.Errorf("protocol version %d, this switch speaks %d: %w", req.Version, Version, unix.EPROTONOSUPPORT))
		}
		return Reply{OK: true, Version: Version}
	case "add":
		if t != nil {
			return errReply(fmt.Errorf("add: this connection has tenant port %d already: %w", t.port, unix.EEXIST))
		}
		nsfd := -1
		if len(fds) == 1 {
			nsfd = fds[0]
		} else if len(fds) > 1 {
			return errReply(fmt.Errorf("add: %d descriptors, want at most one network namespace: %w", len(fds), unix.EINVAL))
		}
		t, rep, err := s.addTenant(req.Name, pid, nsfd)
		if err != nil {
			return errReply(err)
		}
		*tp = t
		return rep
	case "remove":
		if err = needTenant(); err == nil {
			err = s.removeTenant(t)
			*tp = nil
		}
	case "mac", "group", "ipv4":
		if err = needTenant(); err == nil {
			err = s.register(t, req.Op, req.Addr, req.Add)
		}
	case "list":
		return Reply{OK: true, Tenants: s.List()}
	case "stats":
		n := s.NICInfo()
		return Reply{OK: true, NIC: &n}
	default:
		err = fmt.Errorf("unknown op %q: %w", req.Op, unix.EINVAL)
	}
	if err != nil {
		return errReply(err)
	}
	return Reply{OK: true}
}

// addTenant makes a port: a veth pair, the switch end up with switch_tenant
// on it, the tenant end moved into nsfd's namespace (-1: stays here) and up.
func (s *Server) addTenant(name string, pid, nsfd int) (*tenant, Reply, error) {
	s.mu.Lock()
	port := 0
	for p := 1; p < s.sw.Options().MaxPorts; p++ {
		if s.tenants[p] == nil {
			port = p
			break
		}
	}
	if port == 0 || s.closed {
		s.mu.Unlock()
		return nil, Reply{}, fmt.Errorf("add: no free port (%d tenants): %w", len(s.tenants), unix.ENOSPC)
	}
	t := &tenant{port: port, name: name, pid: pid, switchIf: s.prefix + strconv.Itoa(port) + "s",
		ifname: s.prefix + strconv.Itoa(port) + "t", macs: map[string]bool{}, groups: map[string]bool{}, ipv4s: map[netip.Addr]bool{}}
	s.tenants[port] = t // reserved
	s.mu.Unlock()
	rep, err := s.makePort(t, nsfd)
	if err != nil {
		_ = netlink.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: t.switchIf}})
		_ = s.sw.DelPort(port)
		s.mu.Lock()
		delete(s.tenants, port)
		s.mu.Unlock()
		return nil, Reply{}, fmt.Errorf("add: port %d: %w", port, err)
	}
	return t, rep, nil
}

func (s *Server) makePort(t *tenant, nsfd int) (Reply, error) {
	mtu := s.nic.Attrs().MTU
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: t.switchIf, MTU: mtu}, PeerName: t.ifname, PeerMTU: uint32(mtu)}
	if err := netlink.LinkAdd(v); err != nil {
		return Reply{}, fmt.Errorf("veth %s: %w", t.switchIf, err)
	}
	sl, err := netlink.LinkByName(t.switchIf)
	if err != nil {
		return Reply{}, err
	}
	// Frames redirected into a veth are received by its peer only when the
	// peer has NAPI: an XDP program, or GRO on (Linux 5.13+). The tenant's
	// AF_XDP backend attaches a program on its end; GRO covers a tenant
	// that uses the kernel's stack, and the switch end's own XDP program
	// covers what the tenant sends.
	for _, n := range []string{t.switchIf, t.ifname} {
		if _, err := ethtool.Value(n, unix.ETHTOOL_SGRO, 1); err != nil {
			return Reply{}, fmt.Errorf("GRO on %s: %w", n, err)
		}
	}
	if err := s.sw.AddPort(t.port, sl.Attrs().Index); err != nil {
		return Reply{}, err
	}
	if err := netlink.LinkSetUp(sl); err != nil {
		return Reply{}, fmt.Errorf("set %s up: %w", t.switchIf, err)
	}
	tl, err := netlink.LinkByName(t.ifname)
	if err != nil {
		return Reply{}, err
	}
	h := &netlink.Handle{}
	if nsfd >= 0 {
		if err := netlink.LinkSetNsFd(tl, nsfd); err != nil {
			return Reply{}, fmt.Errorf("move %s into the tenant's namespace: %w", t.ifname, err)
		}
		if h, err = netlink.NewHandleAt(netns.NsHandle(nsfd)); err != nil {
			return Reply{}, fmt.Errorf("netlink in the tenant's namespace: %w", err)
		}
		defer h.Close()
		if tl, err = h.LinkByName(t.ifname); err != nil {
			return Reply{}, fmt.Errorf("%s in the tenant's namespace: %w", t.ifname, err)
		}
	}
	if err := h.LinkSetUp(tl); err != nil {
		return Reply{}, fmt.Errorf("set %s up: %w", t.ifname, err)
	}
	return Reply{OK: true, Port: t.port, Ifname: t.ifname, Ifindex: tl.Attrs().Index, MTU: mtu}, nil
}

// removeTenant takes the tenant's entries out of the maps and deletes its
// veth pair (both ends, wherever the tenant end is).
func (s *Server) removeTenant(t *tenant) error {
	s.mu.Lock()
	if s.tenants[t.port] != t {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	err := s.sw.DelPort(t.port)
	if lerr := netlink.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: t.switchIf}}); lerr != nil && !errors.Is(lerr, unix.ENODEV) {
		err = errors.Join(err, fmt.Errorf("delete %s: %w", t.switchIf, lerr))
	}
	s.mu.Lock()
	delete(s.tenants, t.port)
	s.mu.Unlock()
	return err
}

func (s *Server) register(t *tenant, kind, addr string, add bool) error {
	what := kind + " " + addr
	switch kind {
	case "mac", "group":
		mac, err := net.ParseMAC(addr)
		if err != nil || len(mac) != 6 {
			return fmt.Errorf("%s: not a 6-byte MAC: %w", what, unix.EINVAL)
		}
		if (mac[0]&1 != 0) != (kind == "group") {
			return fmt.Errorf("%s: a %s must be %s: %w", what, kind, map[bool]string{true: "multicast", false: "unicast"}[kind == "group"], unix.EINVAL)
		}
		if kind == "mac" && slices.Equal(mac, s.nic.Attrs().HardwareAddr) {
			return fmt.Errorf("%s: the NIC's own MAC: %w", what, unix.EADDRINUSE)
		}
		set := t.macs
		if kind == "group" {
			set = t.groups
		}
		s.mu.Lock()
		full := add && !set[mac.String()] && len(t.macs)+len(t.groups) >= MaxAddrs
		s.mu.Unlock()
		if full {
			return fmt.Errorf("%s: the tenant has %d MACs and groups, the most it may: %w", what, MaxAddrs, unix.ENOSPC)
		}
		if add {
			err = s.sw.AddMAC(mac, t.port)
		} else {
			err = s.sw.DelMAC(mac, t.port)
		}
		if err != nil {
			return err
		}
		s.mu.Lock()
		if add {
			set[mac.String()] = true
		} else {
			delete(set, mac.String())
		}
		s.mu.Unlock()
		return nil
	case "ipv4":
		ip, err := netip.ParseAddr(addr)
		if err != nil || !ip.Is4() {
			return fmt.Errorf("%s: not an IPv4 address: %w", what, unix.EINVAL)
		}
		s.mu.Lock()
		full := add && !t.ipv4s[ip] && len(t.ipv4s) >= MaxAddrs
		s.mu.Unlock()
		if full {
			return fmt.Errorf("%s: the tenant has %d IPv4 addresses, the most it may: %w", what, MaxAddrs, unix.ENOSPC)
		}
		if add && s.hostHolds(ip) {
			return fmt.Errorf("%s: the host holds it in the switch's namespace: %w", what, unix.EADDRINUSE)
		}
		if add {
			err = s.sw.AddIPv4(ip, t.port)
		} else {
			err = s.sw.DelIPv4(ip, t.port)
		}
		if err != nil {
			return err
		}
		s.mu.Lock()
		if add {
			t.ipv4s[ip] = true
		} else {
			delete(t.ipv4s, ip)
		}
		s.mu.Unlock()
		return nil
	}
	return fmt.Errorf("%s: %w", what, unix.EINVAL)
}

// List describes every tenant, by port.
func (s *Server) List() []TenantInfo {
	s.mu.Lock()
	var out []TenantInfo
	for _, t := range s.tenants {
		ti := TenantInfo{Port: t.port, Name: t.name, PID: t.pid, Ifname: t.ifname, SwitchIf: t.switchIf,
			MACs: sortedKeys(t.macs), Groups: sortedKeys(t.groups), IPv4s: []string{}}
		for a := range t.ipv4s {
			ti.IPv4s = append(ti.IPv4s, a.String())
		}
		slices.Sort(ti.IPv4s)
		out = append(out, ti)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b TenantInfo) int { return a.Port - b.Port })
	for i := range out {
		out[i].Counters, _ = s.sw.Counters(out[i].Port)
	}
	return out
}

func sortedKeys(m map[string]bool) []string {
	k := make([]string, 0, len(m))
	for a := range m {
		k = append(k, a)
	}
	slices.Sort(k)
	return k
}

// NICInfo describes the NIC and its counters.
func (s *Server) NICInfo() NICInfo {
	c, _ := s.sw.Counters(0)
	s.mu.Lock()
	n := len(s.tenants)
	s.mu.Unlock()
	return NICInfo{Name: s.cfg.NIC, Ifindex: s.nic.Attrs().Index, Attach: s.attach.String(), Tenants: n, Counters: c}
}

// hostHolds reports whether ip is an address of the switch's namespace
// (the host's, on the NIC or elsewhere): a tenant must not take it.
func (s *Server) hostHolds(ip netip.Addr) bool {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			return true
		}
	}
	return false
}
