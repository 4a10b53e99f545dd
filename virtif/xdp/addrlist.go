//go:build linux

package xdp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The NIC's address lists. XDP sees only the frames the NIC's address filter
// let through, so every MAC the program steers to a vif — its unicast MAC
// and the multicast groups it joined — is added to the NIC's unicast or
// multicast list, and removed when nothing steers it any more. From user
// space that is an NTF_SELF FDB entry (what `bridge fdb add MAC dev NIC
// self permanent` sends: RTM_NEWNEIGH, family AF_BRIDGE), which the kernel
// turns into dev_uc_add or dev_mc_add. A NIC without a unicast filter (veth,
// many virtual NICs) is put in promiscuous mode by the kernel instead; the
// program still steers only what it should.
//
// A process killed by SIGKILL cannot remove its entries, so each process
// records the entries it added in a state file,
// $VIRTIF_XDP_STATE_DIR/addrs-NETNS-IFINDEX-PID.json (default directory
// /run/virtif-xdp; a process not running as root keeps its files in
// uid-N inside it), rewritten on each change and removed at the end. An
// entry is ours if such a file of a process that is no longer running (its
// PID gone, or reused: the file keeps the process's start time) names it,
// with the same namespace inode, ifindex and NIC name. The next open of
// that NIC removes them, and so does CleanLeftovers (`virtif-xdp cleanup`).
// An address the NIC's list held before we asked (the host's own multicast
// groups, or another program's) answers EEXIST: it is used, never removed.

// stateDirEnv overrides defaultStateDir.
const (
	stateDirEnv     = "VIRTIF_XDP_STATE_DIR"
	defaultStateDir = "/run/virtif-xdp"
	stateVersion    = 1
)

func stateDir() string {
	if d := os.Getenv(stateDirEnv); d != "" {
		return d
	}
	return defaultStateDir
}

// addrState is the state file's content.
type addrState struct {
	Version int      `json:"version"`
	PID     int      `json:"pid"`
	Start   uint64   `json:"start"` // /proc/PID/stat starttime, against PID reuse
	NetNS   uint64   `json:"netns"` // inode of the NIC's network namespace
	Ifindex int      `json:"ifindex"`
	Ifname  string   `json:"ifname"`
	MACs    []string `json:"macs"`
}

// AddrFilter says how the NIC accepts the MACs steered to vifs.
type AddrFilter string

const (
	// AddrFilterUnknown: no unicast MAC was added yet.
	AddrFilterUnknown AddrFilter = "unknown"
	// AddrFilterList: the NIC filters by address and was given the vifs'.
	AddrFilterList AddrFilter = "address filter"
	// AddrFilterPromisc: the NIC has no unicast filter, so the kernel put
	// it in promiscuous mode when the first vif MAC was added.
	AddrFilterPromisc AddrFilter = "promiscuous (the NIC has no unicast filter)"
)

// addrList keeps one NIC's address lists for the vifs of this process.
type addrList struct {
	mu       sync.Mutex
	h        *netlink.Handle // opened in the NIC's namespace: works from any thread
	ifindex  int
	ifname   string
	netns    uint64
	refs     map[[6]byte]int  // vifs steering each MAC
	ours     map[[6]byte]bool // added by this process (not in the list before)
	filter   AddrFilter
	path     string // the state file; "" when it could not be written
	dirfd    int    // its directory, opened at setup (-1 without a file)
	stErr    error  // why there is no state file
	cleaned  int    // leftover entries of dead processes removed at open
	pfd      int    // AF_PACKET socket whose membership makes the NIC promiscuous
	promiscs int    // promiscuous vifs (the membership is held while > 0)
}

// newAddrList opens the lists of the NIC ifindex in the calling thread's
// namespace and removes the leftovers of dead processes on it.
func newAddrList(ifname string, ifindex int, netns uint64) (*addrList, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("xdp: %s: netlink: %w", ifname, err)
	}
	// Protocol 0: the socket receives nothing; it only holds a membership.
	pfd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("xdp: %s: AF_PACKET socket for promiscuous mode: %w", ifname, os.NewSyscallError("socket", err))
	}
	a := &addrList{h: h, ifindex: ifindex, ifname: ifname, netns: netns, pfd: pfd,
		refs: map[[6]byte]int{}, ours: map[[6]byte]bool{}, filter: AddrFilterUnknown}
	a.cleaned = cleanNIC(h, netns, ifindex, ifname)
	if err := faultAt("addrlist", -1); err != nil {
		h.Close()
		unix.Close(pfd)
		return nil, fmt.Errorf("xdp: %s: address list: %w", ifname, err)
	}
	a.dirfd = -1
	dir := ownStateDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		a.stErr = err
	} else if fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
		a.stErr = os.NewSyscallError("open "+dir, err)
	} else {
		a.dirfd = fd
		a.path = filepath.Join(dir, fmt.Sprintf("addrs-%d-%d-%d.json", netns, ifindex, os.Getpid()))
	}
	return a, nil
}

// ownStateDir is where this process keeps its state files: the state
// directory for root, and a directory of its own inside it (uid-N, made by
// and so owned by the process's user) for another user. A process that
// runs with capabilities instead of root may drop CAP_DAC_OVERRIDE after
// setup (virtif-xdp does); it then can still write, rename and remove its
// files, through the directory opened at setup (the *at system calls do
// not walk a state directory it may no longer search).
func ownStateDir() string {
	if euid := os.Geteuid(); euid != 0 {
		return filepath.Join(stateDir(), fmt.Sprintf("uid-%d", euid))
	}
	return stateDir()
}

// removeState removes the state file (a.mu held).
func (a *addrList) removeState() error {
	if err := unix.Unlinkat(a.dirfd, filepath.Base(a.path), 0); err != nil && err != unix.ENOENT {
		return fmt.Errorf("xdp: %s: remove state file %s: %w", a.ifname, a.path, os.NewSyscallError("unlinkat", err))
	}
	return nil
}

func (a *addrList) neigh(mac [6]byte) *netlink.Neigh { return selfEntry(a.ifindex, mac[:]) }

// selfEntry is the NTF_SELF FDB entry that puts mac on the NIC's address
// list (`bridge fdb add MAC dev NIC self permanent`).
func selfEntry(ifindex int, mac net.HardwareAddr) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: ifindex, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
		State: netlink.NUD_PERMANENT, HardwareAddr: mac}
}

// entryGone: an entry, or its NIC, is no longer there to remove.
func entryGone(err error) bool { return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) }

// add makes the NIC accept mac for one more vif.
func (a *addrList) add(mac net.HardwareAddr) error {
	if len(mac) != 6 {
		return fmt.Errorf("xdp: %s: address list: MAC %v: %w", a.ifname, mac, unix.EINVAL)
	}
	k := [6]byte(mac)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.refs[k] > 0 {
		a.refs[k]++
		return nil
	}
	unicast := k[0]&1 == 0
	var before int
	if unicast && a.filter == AddrFilterUnknown {
		before = a.promiscuity()
	}
	err := a.h.NeighAdd(a.neigh(k))
	switch {
	case err == nil:
		a.ours[k] = true
		if werr := a.save(); werr != nil {
			_ = a.h.NeighDel(a.neigh(k))
			delete(a.ours, k)
			return werr
		}
	case errors.Is(err, unix.EEXIST):
		// The list held it already: use it, never remove it.
	default:
		return fmt.Errorf("xdp: %s: add %v to the NIC's address list: %w", a.ifname, mac, err)
	}
	if unicast && a.filter == AddrFilterUnknown {
		a.filter = AddrFilterList
		if a.promiscuity() > before {
			a.filter = AddrFilterPromisc
		}
	}
	a.refs[k] = 1
	return nil
}

// del drops one vif's hold on mac; the last one removes our entry.
func (a *addrList) del(mac net.HardwareAddr) error {
	if len(mac) != 6 {
		return nil
	}
	k := [6]byte(mac)
	a.mu.Lock()
	defer a.mu.Unlock()
	switch a.refs[k] {
	case 0:
		return nil
	case 1:
		delete(a.refs, k)
	default:
		a.refs[k]--
		return nil
	}
	if !a.ours[k] {
		return nil
	}
	delete(a.ours, k)
	err := a.h.NeighDel(a.neigh(k))
	if err != nil && !entryGone(err) {
		a.ours[k] = true // still there: close tries again, the state file keeps it
		return fmt.Errorf("xdp: %s: remove %v from the NIC's address list: %w", a.ifname, mac, err)
	}
	return a.save()
}

// close removes every entry this process added and its state file. A NIC
// that is gone took its lists with it.
func (a *addrList) close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	for k := range a.ours {
		if err := a.h.NeighDel(a.neigh(k)); err != nil && !entryGone(err) {
			errs = append(errs, fmt.Errorf("xdp: %s: remove %v from the NIC's address list: %w", a.ifname, net.HardwareAddr(k[:]), err))
			continue
		}
		delete(a.ours, k)
	}
	clear(a.refs)
	if len(errs) == 0 && a.path != "" {
		if err := a.removeState(); err != nil {
			errs = append(errs, err)
		}
	} else if err := a.save(); err != nil {
		errs = append(errs, err)
	}
	if a.dirfd >= 0 {
		unix.Close(a.dirfd)
		a.dirfd = -1
		a.path = ""
	}
	a.h.Close()
	if a.pfd >= 0 {
		errs = append(errs, os.NewSyscallError("close", unix.Close(a.pfd))) // drops the membership
		a.pfd, a.promiscs = -1, 0
	}
	return errors.Join(errs...)
}

// promisc counts one more (on) or one fewer promiscuous vif. The first
// makes the NIC promiscuous, so that a NIC that filters by address hands
// the program the frames for other MACs too; the last undoes it. It is a
// PACKET_MR_PROMISC membership of our AF_PACKET socket: the kernel counts
// it in the NIC's promiscuity beside anyone else's and drops it when the
// socket closes, so a killed process leaves nothing behind.
func (a *addrList) promisc(on bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	opt, next := unix.PACKET_ADD_MEMBERSHIP, a.promiscs+1
	if !on {
		opt, next = unix.PACKET_DROP_MEMBERSHIP, a.promiscs-1
	}
	if next < 0 {
		return nil
	}
	if (on && next == 1) || (!on && next == 0) {
		mr := unix.PacketMreq{Ifindex: int32(a.ifindex), Type: unix.PACKET_MR_PROMISC}
		if err := unix.SetsockoptPacketMreq(a.pfd, unix.SOL_PACKET, opt, &mr); err != nil && (on || !errors.Is(err, unix.ENODEV)) {
			return fmt.Errorf("xdp: %s: promiscuous mode of the NIC: %w", a.ifname, os.NewSyscallError("setsockopt", err))
		}
	}
	a.promiscs = next
	return nil
}

// promiscuity is the NIC's promiscuity count (IFLA_PROMISCUITY), -1 unknown.
func (a *addrList) promiscuity() int {
	l, err := a.h.LinkByIndex(a.ifindex)
	if err != nil {
		return -1
	}
	return l.Attrs().Promisc
}

// save records our entries in the state file (a.mu held); with none, the
// file goes.
func (a *addrList) save() error {
	if a.path == "" {
		return nil
	}
	if len(a.ours) == 0 {
		return a.removeState()
	}
	st := addrState{Version: stateVersion, PID: os.Getpid(), Start: procStart(os.Getpid()),
		NetNS: a.netns, Ifindex: a.ifindex, Ifname: a.ifname}
	for k := range a.ours {
		st.MACs = append(st.MACs, net.HardwareAddr(k[:]).String())
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	name := filepath.Base(a.path)
	tmp := name + ".tmp"
	fd, err := unix.Openat(a.dirfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("xdp: %s: state file %s: %w", a.ifname, a.path, os.NewSyscallError("openat", err))
	}
	f := os.NewFile(uintptr(fd), a.path+".tmp")
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.NewSyscallError("renameat", unix.Renameat(a.dirfd, tmp, a.dirfd, name))
	}
	if err != nil {
		return fmt.Errorf("xdp: %s: state file %s: %w", a.ifname, a.path, err)
	}
	return nil
}

// procStart is field 22 of /proc/PID/stat (start time in clock ticks since
// boot); 0 when the process does not exist.
func procStart(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces and parentheses: the fields
	// after it start behind the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}

// alive: the process that wrote st still runs.
func (st *addrState) alive() bool {
	return st.PID > 0 && procStart(st.PID) == st.Start && st.Start != 0
}

// Leftover is a state file of a process that is gone, and what cleaning it
// did.
type Leftover struct {
	File    string
	PID     int
	Ifname  string
	MACs    []string // the entries it named
	Removed int      // of them, removed now (the rest were gone already)
	// Gone: the NIC (or its namespace) no longer exists, and its lists
	// went with it; only the file was removed.
	Gone bool
	Err  error // why it could not be cleaned (the file is kept)
}

// readStates lists the state files, those of one NIC when netns is not 0.
func readStates(netns uint64, ifindex int) (map[string]addrState, error) {
	pat := "addrs-*.json"
	if netns != 0 {
		pat = fmt.Sprintf("addrs-%d-%d-*.json", netns, ifindex)
	}
	// Root's files, and those of other users in their own directories.
	files, err := filepath.Glob(filepath.Join(stateDir(), pat))
	if err != nil {
		return nil, err
	}
	theirs, err := filepath.Glob(filepath.Join(stateDir(), "uid-*", pat))
	if err != nil {
		return nil, err
	}
	files = append(files, theirs...)
	m := map[string]addrState{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var st addrState
		if json.Unmarshal(b, &st) != nil || st.Version != stateVersion {
			continue
		}
		m[f] = st
	}
	return m, nil
}

// cleanNIC removes the entries that dead processes left on one NIC, through
// h (a handle in the NIC's namespace), and returns how many it removed.
func cleanNIC(h *netlink.Handle, netns uint64, ifindex int, ifname string) int {
	states, err := readStates(netns, ifindex)
	if err != nil {
		return 0
	}
	total := 0
	for f, st := range states {
		if st.alive() || st.NetNS != netns || st.Ifindex != ifindex {
			continue
		}
		total += cleanState(h, f, st, ifname).Removed
	}
	return total
}

// cleanState removes one dead process's entries: only when the NIC under
// that ifindex still has the name it recorded (otherwise the NIC it meant
// is gone, and its lists with it).
func cleanState(h *netlink.Handle, file string, st addrState, ifname string) Leftover {
	lo := Leftover{File: file, PID: st.PID, Ifname: st.Ifname, MACs: st.MACs, Gone: ifname != st.Ifname}
	if !lo.Gone {
		for _, s := range st.MACs {
			mac, err := net.ParseMAC(s)
			if err != nil || len(mac) != 6 {
				continue
			}
			switch err := h.NeighDel(selfEntry(st.Ifindex, mac)); {
			case err == nil:
				lo.Removed++
			case entryGone(err):
			default:
				lo.Err = fmt.Errorf("xdp: %s: remove leftover %v of pid %d: %w", st.Ifname, mac, st.PID, err)
			}
		}
	}
	if lo.Err == nil {
		if err := os.Remove(file); err != nil && !errors.Is(err, os.ErrNotExist) {
			lo.Err = err
		}
	}
	return lo
}

// CleanLeftovers removes the NIC address-list entries that virtif-xdp
// processes no longer running left behind (see the state files above), on
// NICs of the calling thread's network namespace and of the named ones
// (`ip netns`, /run/netns). State files of namespaces it cannot reach are
// kept and reported with an error. Needs CAP_NET_ADMIN.
func CleanLeftovers() ([]Leftover, error) {
	states, err := readStates(0, 0)
	if err != nil {
		return nil, err
	}
	here, err := netnsInode()
	if err != nil {
		return nil, err
	}
	var out []Leftover
	for f, st := range states {
		if st.alive() {
			continue
		}
		var lo Leftover
		err := inNetNS(st.NetNS, here, func() error {
			h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
			if err != nil {
				return err
			}
			defer h.Close()
			name := ""
			if l, err := h.LinkByIndex(st.Ifindex); err == nil {
				name = l.Attrs().Name
			}
			lo = cleanState(h, f, st, name)
			return nil
		})
		switch {
		case errors.Is(err, errNetNSGone):
			// Its NICs, and their lists, went with it.
			lo = Leftover{File: f, PID: st.PID, Ifname: st.Ifname, MACs: st.MACs, Gone: true}
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				lo.Err = err
			}
		case err != nil:
			lo = Leftover{File: f, PID: st.PID, Ifname: st.Ifname, MACs: st.MACs, Err: err}
		}
		out = append(out, lo)
	}
	return out, nil
}

// inNetNS runs fn on a thread in the network namespace whose inode is ino:
// the calling thread's, one named in /run/netns, or one a process is in.
// A namespace none of these holds is gone, and so is every NIC in it:
// errNetNSGone.
func inNetNS(ino, here uint64, fn func() error) error {
	if ino == here {
		return fn()
	}
	var paths []string
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			paths = append(paths, filepath.Join("/run/netns", e.Name()))
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/ns/net")
	paths = append(paths, procs...)
	for _, p := range paths {
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil || st.Ino != ino {
			continue
		}
		target, err := netns.GetFromPath(p)
		if err != nil {
			continue
		}
		defer target.Close()
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			return err
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			return fmt.Errorf("xdp: enter network namespace %d: %w", ino, err)
		}
		ferr := fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		} // else the thread stays locked and dies with the goroutine
		return ferr
	}
	return errNetNSGone
}

var errNetNSGone = errors.New("network namespace gone")

func (a *addrList) info() (AddrFilter, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.filter, a.cleaned
}

// RecordedMACs lists the MACs that virtif-xdp processes recorded on their
// state files for the NIC ifindex of the calling thread's namespace, each
// with whether the process that added it still runs: an entry of a dead
// process on the NIC's address list is a leftover the next open removes,
// not a MAC anyone uses.
func RecordedMACs(ifindex int) (map[string]bool, error) {
	ns, err := netnsInode()
	if err != nil {
		return nil, err
	}
	states, err := readStates(ns, ifindex)
	if err != nil {
		return nil, err
	}
	m := map[string]bool{}
	for _, st := range states {
		if st.NetNS != ns || st.Ifindex != ifindex {
			continue
		}
		alive := st.alive()
		for _, s := range st.MACs {
			if hw, err := net.ParseMAC(s); err == nil {
				m[hw.String()] = m[hw.String()] || alive
			}
		}
	}
	return m, nil
}

// macSeenOn says where mac is seen on the NIC ifindex of the calling
// thread's namespace, "" when nowhere: the NIC's own MAC, a neighbour the
// host's table holds with that MAC (a host on the segment uses it), or a
// unicast entry of the NIC's address list (a macvlan's, another program's).
func macSeenOn(ifindex int, mac net.HardwareAddr) (string, error) {
	link, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return "", err
	}
	if bytes.Equal(link.Attrs().HardwareAddr, mac) {
		return "the NIC's own MAC", nil
	}
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		ns, err := netlink.NeighList(ifindex, fam)
		if err != nil {
			return "", err
		}
		for _, n := range ns {
			if bytes.Equal(n.HardwareAddr, mac) {
				return "the neighbour table has " + n.IP.String() + " at it", nil
			}
		}
	}
	fdb, err := netlink.NeighList(ifindex, unix.AF_BRIDGE)
	if err != nil {
		return "", err
	}
	for _, n := range fdb {
		if n.Flags&netlink.NTF_SELF != 0 && bytes.Equal(n.HardwareAddr, mac) {
			return "it is on the NIC's address list", nil
		}
	}
	return "", nil
}
