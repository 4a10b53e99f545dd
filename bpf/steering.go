//go:build linux

// Package bpf holds virtif-xdp's MAC-steering XDP program (steer.c, built
// with bpf2go into the committed steer_bpfel.o) and the Go API that loads it,
// attaches it to a NIC through a bpf_link and maintains its maps.
//
// The program decides, for each frame on a NIC queue, which virtual interface
// (vif, numbered 0..MaxVifs-1) owns it, and redirects it into that vif's
// AF_XDP socket for the same queue; everything else passes to the host
// kernel. In order:
//
//  1. the destination MAC is a unicast MAC registered with AddMAC;
//  2. an ARP request (IPv4 over Ethernet) asks for an address registered
//     with AddIPv4;
//  3. the destination MAC is a multicast MAC registered with AddMAC;
//  4. a vif is promiscuous (SetPromisc): it takes every other frame;
//  5. otherwise XDP_PASS.
//
// A frame whose vif has no socket on the frame's queue (SetSocket) passes to
// the host and is counted as NoSocket: frames are never black-holed. Frames
// too short for their headers pass and are counted as Runt.
//
// Sockets shared by several vifs need to know whose each frame is: with
// tagging on (SetTagging) the program writes the vif into MetaLen bytes of
// XDP metadata (VifFromMeta reads it). A driver without XDP metadata
// support cannot carry the tag: such a frame passes to the host and is
// counted as NoMeta (NoMeta reads the count; Options.NoMeta simulates such a
// driver for tests). A receiver that sees it turns tagging off and finds
// each frame's vif itself with Rules, the same rules in Go.
//
// One Steering serves one NIC. Nothing is pinned: the program and its maps
// live as long as the Steering's descriptors, so a process that dies (even by
// SIGKILL) leaves no program on the NIC.
//
// The program is loaded for multi-buffer frames (BPF_F_XDP_HAS_FRAGS, its
// ELF section "xdp.frags": jumbo frames larger than a page), on kernels
// before 5.18 without (Frags says which).
//
// Needs Linux 5.9+ (bpf_link for XDP; 5.11+ or a raised RLIMIT_MEMLOCK for map
// memory) and CAP_BPF + CAP_NET_ADMIN, or root.
package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Defaults of Options.
const (
	DefaultMaxVifs   = 64
	DefaultMaxQueues = 64
	DefaultMaxMACs   = 1024
	DefaultMaxIPv4s  = 1024

	// maxSlots bounds MaxVifs*MaxQueues, the size of the socket map.
	maxSlots = 1 << 20
)

// Options size the program's maps. A nil *Options or a zero field means the
// default.
type Options struct {
	// MaxVifs is the number of vifs (0..MaxVifs-1), default 64.
	MaxVifs int
	// MaxQueues is the number of NIC queues served per vif, default 64.
	// Frames on higher queues pass to the host as NoSocket.
	MaxQueues int
	// MaxMACs bounds unicast plus multicast MACs over all vifs, default 1024.
	MaxMACs int
	// MaxIPv4s bounds the IPv4 addresses registered for ARP, default 1024.
	MaxIPv4s int
	// NoFrags loads the program without BPF_F_XDP_HAS_FRAGS: drivers then
	// hand it single-buffer frames only (at most about a page; veth refuses
	// it on a NIC whose peer's MTU is larger), as on a kernel before 5.18,
	// where Load falls back to it by itself (Frags reports which).
	NoFrags bool
	// NoMeta simulates a driver without XDP metadata support, for tests:
	// every frame the program would tag while tagging is on passes to the
	// host instead, counted as NoMeta, as on such a driver.
	NoMeta bool
}

func (o *Options) withDefaults() (Options, error) {
	var r Options
	if o != nil {
		r = *o
	}
	def := func(v *int, d int, name string) error {
		if *v == 0 {
			*v = d
		}
		if *v < 0 || *v > maxSlots {
			return fmt.Errorf("bpf: %s %d out of range 1..%d: %w", name, *v, maxSlots, unix.EINVAL)
		}
		return nil
	}
	if err := errors.Join(
		def(&r.MaxVifs, DefaultMaxVifs, "MaxVifs"),
		def(&r.MaxQueues, DefaultMaxQueues, "MaxQueues"),
		def(&r.MaxMACs, DefaultMaxMACs, "MaxMACs"),
		def(&r.MaxIPv4s, DefaultMaxIPv4s, "MaxIPv4s"),
	); err != nil {
		return r, err
	}
	if r.MaxVifs*r.MaxQueues > maxSlots {
		return r, fmt.Errorf("bpf: MaxVifs*MaxQueues %d exceeds %d: %w", r.MaxVifs*r.MaxQueues, maxSlots, unix.EINVAL)
	}
	return r, nil
}

// Steering is the loaded steering program and its maps, attached to at most
// one NIC. Its methods are safe for concurrent use.
type Steering struct {
	opts         Options
	frags        bool // loaded with BPF_F_XDP_HAS_FRAGS
	noMetaHelper bool // the verifier refused bpf_xdp_adjust_meta: loaded with no_meta

	mu      sync.Mutex
	objs    *steerObjects // nil once closed
	link    link.Link
	ifindex int
	mode    AttachMode
	promisc map[int]bool          // vifs in promiscuous mode
	sockets map[uint32]bool       // socket map slots in use (XSKMAP cannot be read from user space)
	fast    steerFastMacs         // what the program's fast map holds
	extra   int                   // unicast MACs in macs but not in fast
	rules   atomic.Pointer[Rules] // what macs, ipv4s and promisc hold, as Go (set under mu)
}

// Load loads the steering program and creates its maps; nothing is attached
// until Attach. Errors: os.ErrPermission without CAP_BPF+CAP_NET_ADMIN (or
// root; before Linux 5.11 also without a raised RLIMIT_MEMLOCK, see cilium's
// rlimit.RemoveMemlock): the caller says what to do about it, ebpf.ErrNotSupported for a kernel without BPF or
// XDP, unix.EINVAL for bad Options.
func Load(opts *Options) (*Steering, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	spec, err := loadSteer()
	if err != nil {
		return nil, fmt.Errorf("bpf: parse embedded steering object: %w", err)
	}
	spec.Maps[steerMapXsks].MaxEntries = uint32(o.MaxVifs * o.MaxQueues)
	spec.Maps[steerMapMacs].MaxEntries = uint32(o.MaxMACs)
	spec.Maps[steerMapIpv4s].MaxEntries = uint32(o.MaxIPv4s)
	spec.Maps[steerMapStats].MaxEntries = uint32((o.MaxVifs + 1) * int(numRules))
	if err := spec.Variables[steerVarMaxVifs].Set(uint32(o.MaxVifs)); err != nil {
		return nil, fmt.Errorf("bpf: set max_vifs: %w", err)
	}
	if err := spec.Variables[steerVarQueueStride].Set(uint32(o.MaxQueues)); err != nil {
		return nil, fmt.Errorf("bpf: set queue_stride: %w", err)
	}
	if o.NoMeta {
		if err := spec.Variables[steerVarNoMeta].Set(uint32(1)); err != nil {
			return nil, fmt.Errorf("bpf: set no_meta: %w", err)
		}
	}
	prog := spec.Programs[steerProgSteer]
	if o.NoFrags {
		prog.Flags &^= unix.BPF_F_XDP_HAS_FRAGS
	}
	objs := new(steerObjects)
	metaHelper := true
	for {
		err = loadSpec(spec, objs)
		refused := err != nil && refusesMetaHelper(err)
		if refused && metaHelper {
			// A kernel whose verifier does not offer XDP programs
			// bpf_xdp_adjust_meta (seen: a 6.18.44 build): load the
			// program that never tags, as on a driver without XDP
			// metadata. It counts NoMeta for frames it would have
			// tagged; MetaHelper tells the loader's caller at once.
			metaHelper = false
			if err := spec.Variables[steerVarNoMeta].Set(uint32(1)); err != nil {
				return nil, fmt.Errorf("bpf: set no_meta: %w", err)
			}
			continue
		}
		if err != nil && !refused && errors.Is(err, unix.EINVAL) && prog.Flags&unix.BPF_F_XDP_HAS_FRAGS != 0 {
			// A kernel before 5.18 does not know the flag: single-buffer frames.
			prog.Flags &^= unix.BPF_F_XDP_HAS_FRAGS
			continue
		}
		break
	}
	if err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			return nil, fmt.Errorf("bpf: load steering program (kernel lacks BPF or XDP support): %w", err)
		}
		return nil, fmt.Errorf("bpf: load steering program: %w", err)
	}
	s := &Steering{opts: o, objs: objs, frags: prog.Flags&unix.BPF_F_XDP_HAS_FRAGS != 0, noMetaHelper: !metaHelper,
		promisc: make(map[int]bool), sockets: make(map[uint32]bool)}
	s.rules.Store(NewRules(nil, nil, -1))
	return s, nil
}

// loadSpec loads the program and its maps; tests replace it to play an
// older kernel.
var loadSpec = func(spec *ebpf.CollectionSpec, objs *steerObjects) error {
	return spec.LoadAndAssign(objs, nil)
}

// Frags reports whether the program was loaded for multi-buffer frames
// (BPF_F_XDP_HAS_FRAGS, ELF section "xdp.frags"): not with Options.NoFrags,
// nor on a kernel before 5.18, which refuses the flag.
func (s *Steering) Frags() bool { return s.frags }

// MetaHelper reports whether the kernel let the program use
// bpf_xdp_adjust_meta. When it did not, Load loaded the program that never
// tags (as Options.NoMeta does): with tagging on, every frame for a vif
// passes to the host, counted NoMeta, so a caller with several vifs on a
// socket demultiplexes by MAC from the start.
func (s *Steering) MetaHelper() bool { return !s.noMetaHelper }

var metaProbe struct {
	once sync.Once
	ok   bool
	err  error
}

// MetaHelperAvailable reports whether this kernel lets the steering program
// use bpf_xdp_adjust_meta (Steering.MetaHelper of a program loaded once per
// process for the question, with the smallest maps).
func MetaHelperAvailable() (bool, error) {
	metaProbe.once.Do(func() {
		s, err := Load(&Options{MaxVifs: 1, MaxQueues: 1, MaxMACs: 1, MaxIPv4s: 1})
		if err != nil {
			metaProbe.err = err
			return
		}
		metaProbe.ok = s.MetaHelper()
		metaProbe.err = s.Close()
	})
	return metaProbe.ok, metaProbe.err
}

// refusesMetaHelper reports whether a load failed because the verifier
// does not offer bpf_xdp_adjust_meta to the program ("program of this type
// cannot use helper bpf_xdp_adjust_meta#54").
func refusesMetaHelper(err error) bool {
	var ve *ebpf.VerifierError
	if !errors.As(err, &ve) {
		return false
	}
	for _, l := range ve.Log {
		if strings.Contains(l, "cannot use helper bpf_xdp_adjust_meta") {
			return true
		}
	}
	return false
}

// Options returns the sizes the program was loaded with.
func (s *Steering) Options() Options { return s.opts }

// Program returns the loaded XDP program, for inspection and test runs
// (BPF_PROG_TEST_RUN). It stays owned by s; do not close it.
func (s *Steering) Program() *ebpf.Program {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.objs == nil {
		return nil
	}
	return s.objs.Steer
}

// Close detaches the program (closing its link) and releases the program and
// its maps. It is safe to call more than once.
func (s *Steering) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.objs == nil {
		return nil
	}
	var errs []error
	if s.link != nil {
		if err := s.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("bpf: detach from ifindex %d: %w", s.ifindex, err))
		}
		s.link = nil
	}
	if err := s.objs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("bpf: close steering objects: %w", err))
	}
	s.objs = nil
	return errors.Join(errs...)
}

// loaded returns the loaded objects or net.ErrClosed; s.mu must be held.
func (s *Steering) loaded() (*steerObjects, error) {
	if s.objs == nil {
		return nil, net.ErrClosed
	}
	return s.objs, nil
}

// forVif returns the loaded objects after checking vif; s.mu must be held.
func (s *Steering) forVif(vif int) (*steerObjects, error) {
	objs, err := s.loaded()
	if err != nil {
		return nil, err
	}
	return objs, s.checkVif(vif)
}

func (s *Steering) checkVif(vif int) error {
	if vif < 0 || vif >= s.opts.MaxVifs {
		return fmt.Errorf("bpf: vif %d out of range 0..%d: %w", vif, s.opts.MaxVifs-1, unix.EINVAL)
	}
	return nil
}

// slot returns the socket map and the index of vif's socket on queue; s.mu
// must be held.
func (s *Steering) slot(vif, queue int) (*ebpf.Map, uint32, error) {
	objs, err := s.forVif(vif)
	if err != nil {
		return nil, 0, err
	}
	if queue < 0 || queue >= s.opts.MaxQueues {
		return nil, 0, fmt.Errorf("bpf: queue %d out of range 0..%d: %w", queue, s.opts.MaxQueues-1, unix.EINVAL)
	}
	return objs.Xsks, uint32(vif*s.opts.MaxQueues + queue), nil
}

// SetSocket makes fd, an AF_XDP socket bound to this NIC's queue, the
// destination of vif's frames arriving on that queue, replacing any socket
// set before. Closing the socket takes it out of the map (the kernel does so
// when the socket is released), after which its frames pass as NoSocket and
// ClearSocket still succeeds.
// Errors: unix.EINVAL for a vif or queue out of range, unix.EBADF for a
// negative fd, unix.ENOTSOCK when fd is no socket, unix.EOPNOTSUPP when it
// is not an AF_XDP socket.
func (s *Steering) SetSocket(vif, queue, fd int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	xsks, k, err := s.slot(vif, queue)
	if err != nil {
		return err
	}
	if fd < 0 {
		return fmt.Errorf("bpf: vif %d queue %d: bad socket descriptor %d: %w", vif, queue, fd, unix.EBADF)
	}
	if err := xsks.Update(k, uint32(fd), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("bpf: vif %d queue %d: set socket: %w", vif, queue, err)
	}
	s.sockets[k] = true
	return nil
}

// ClearSocket removes vif's socket on queue; its frames on that queue pass
// to the host (counted as NoSocket) from then on. Errors: unix.EINVAL for a
// vif or queue out of range, unix.ENOENT when no socket was set.
func (s *Steering) ClearSocket(vif, queue int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	xsks, k, err := s.slot(vif, queue)
	if err != nil {
		return err
	}
	// Deleting an empty XSKMAP slot succeeds, so the Go side keeps track.
	if !s.sockets[k] {
		return fmt.Errorf("bpf: vif %d queue %d: clear socket: none set: %w", vif, queue, unix.ENOENT)
	}
	if err := xsks.Delete(k); err != nil {
		return fmt.Errorf("bpf: vif %d queue %d: clear socket: %w", vif, queue, err)
	}
	delete(s.sockets, k)
	return nil
}

// entry is a key of one of the vif-owned maps (macs, ipv4s), or the reason
// it is not one.
type entry struct {
	what    string // for errors: "MAC 01:00:5e:00:00:01"
	key     any
	err     error
	m       func(*steerObjects) *ebpf.Map
	unicast bool // a unicast MAC: also kept in the fast map
}

func macEntry(mac net.HardwareAddr) entry {
	e := entry{what: "MAC " + mac.String(), m: func(o *steerObjects) *ebpf.Map { return o.Macs }}
	if len(mac) != 6 {
		e.err = fmt.Errorf("bpf: MAC %q is not 6 bytes: %w", mac, unix.EINVAL)
		return e
	}
	var k steerMacKey
	copy(k.Addr[:], mac)
	e.key = k
	e.unicast = mac[0]&1 == 0
	return e
}

func ipv4Entry(ip netip.Addr) entry {
	ip = ip.Unmap()
	e := entry{what: "IPv4 " + ip.String(), m: func(o *steerObjects) *ebpf.Map { return o.Ipv4s }}
	if !ip.Is4() {
		e.err = fmt.Errorf("bpf: %v is not an IPv4 address: %w", ip, unix.EINVAL)
		return e
	}
	e.key = ip.As4() // network byte order, as the program reads it
	return e
}

// AddMAC steers frames whose destination is mac to vif: a unicast MAC by
// rule 1, a multicast MAC (group bit set, broadcast included) by rule 3.
// Adding a MAC the vif already has is a no-op. A MAC can belong to one vif
// only, because XDP cannot copy a frame into several sockets: adding a MAC
// another vif holds fails with unix.EEXIST (for a shared multicast group the
// first vif to join gets the frames). Other errors: unix.EINVAL for a bad vif
// or a MAC that is not 6 bytes, unix.E2BIG when MaxMACs are in use.
func (s *Steering) AddMAC(mac net.HardwareAddr, vif int) error {
	return s.update(macEntry(mac), vif, true)
}

// DelMAC stops steering mac to vif. Errors: unix.ENOENT when vif does not
// hold mac (nobody does, or another vif does: that vif keeps it).
func (s *Steering) DelMAC(mac net.HardwareAddr, vif int) error {
	return s.update(macEntry(mac), vif, false)
}

// AddIPv4 steers ARP requests for ip to vif (rule 2). Adding an address the
// vif already has is a no-op; an address held by another vif gives
// unix.EEXIST. Other errors: unix.EINVAL for a bad vif or a non-IPv4
// address, unix.E2BIG when MaxIPv4s are in use.
func (s *Steering) AddIPv4(ip netip.Addr, vif int) error {
	return s.update(ipv4Entry(ip), vif, true)
}

// DelIPv4 stops steering ARP requests for ip to vif. Errors: unix.ENOENT
// when vif does not hold ip.
func (s *Steering) DelIPv4(ip netip.Addr, vif int) error {
	return s.update(ipv4Entry(ip), vif, false)
}

// update adds e for vif, or deletes it, keeping one owner per key.
func (s *Steering) update(e entry, vif int, add bool) error {
	if e.err != nil {
		return e.err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	objs, err := s.forVif(vif)
	if err != nil {
		return err
	}
	op := "delete"
	if add {
		op = "add"
	}
	m := e.m(objs)
	var owner uint32
	changed := false // only a change of macs is mirrored in fast: a repeated add must not take a second slot
	err = m.Lookup(e.key, &owner)
	switch {
	case add && errors.Is(err, ebpf.ErrKeyNotExist):
		err = m.Update(e.key, uint32(vif), ebpf.UpdateNoExist)
		changed = true
	case err != nil:
	case int(owner) != vif && add:
		err = fmt.Errorf("held by vif %d: %w", owner, unix.EEXIST)
	case int(owner) != vif:
		err = fmt.Errorf("held by vif %d: %w", owner, unix.ENOENT)
	case !add:
		err = m.Delete(e.key)
		changed = true
	}
	if err == nil && changed {
		s.rules.Store(s.rules.Load().with(e.key, vif, add))
		if e.unicast {
			err = s.syncFast(objs, e.key.(steerMacKey).Addr, vif, add)
		}
	}
	if err != nil {
		return fmt.Errorf("bpf: vif %d: %s %s: %w", vif, op, e.what, err)
	}
	return nil
}

// syncFast keeps the fast map (the first unicast MACs, checked before the
// hash map) in step with a unicast MAC just added to or deleted from macs.
// s.mu is held.
func (s *Steering) syncFast(objs *steerObjects, mac [6]byte, vif int, add bool) error {
	hi, lo := binary.NativeEndian.Uint32(mac[:4]), binary.NativeEndian.Uint16(mac[4:])
	slot := func(match func(i int) bool) int {
		for i := range s.fast.E {
			if match(i) {
				return i
			}
		}
		return -1
	}
	if add {
		if i := slot(func(i int) bool { return s.fast.E[i].Vif1 == 0 }); i >= 0 {
			s.fast.E[i].Hi, s.fast.E[i].Lo, s.fast.E[i].Vif1 = hi, lo, uint16(vif+1)
		} else {
			s.extra++
		}
	} else if i := slot(func(i int) bool { return s.fast.E[i].Vif1 != 0 && s.fast.E[i].Hi == hi && s.fast.E[i].Lo == lo }); i >= 0 {
		s.fast.E[i].Vif1 = 0
		if s.extra > 0 {
			// Promote a unicast MAC that only the hash map holds.
			var k steerMacKey
			var owner uint32
			it := objs.Macs.Iterate()
			for it.Next(&k, &owner) {
				if k.Addr[0]&1 != 0 {
					continue
				}
				h, l := binary.NativeEndian.Uint32(k.Addr[:4]), binary.NativeEndian.Uint16(k.Addr[4:])
				if slot(func(j int) bool { return s.fast.E[j].Vif1 != 0 && s.fast.E[j].Hi == h && s.fast.E[j].Lo == l }) < 0 {
					s.fast.E[i].Hi, s.fast.E[i].Lo, s.fast.E[i].Vif1 = h, l, uint16(owner+1)
					s.extra--
					break
				}
			}
			if err := it.Err(); err != nil {
				return err
			}
		}
	} else {
		s.extra--
	}
	s.fast.More = 0
	if s.extra > 0 {
		s.fast.More = 1
	}
	return objs.Fast.Update(uint32(0), &s.fast, ebpf.UpdateAny)
}

// SetPromisc turns promiscuous mode of vif on or off. A promiscuous vif
// receives every frame no other rule claims (rule 4). Only one socket can take
// a frame, so when several vifs are promiscuous the lowest-numbered one
// receives; the others get theirs only by rules 1-3. Errors: unix.EINVAL for
// a bad vif.
func (s *Steering) SetPromisc(vif int, on bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	objs, err := s.forVif(vif)
	if err != nil {
		return err
	}
	was := s.promisc[vif]
	if on {
		s.promisc[vif] = true
	} else {
		delete(s.promisc, vif)
	}
	var v uint32 // 1 + the lowest promiscuous vif; 0 for none
	for p := range s.promisc {
		if v == 0 || uint32(p)+1 < v {
			v = uint32(p) + 1
		}
	}
	if err := objs.Promisc.Update(uint32(0), v, ebpf.UpdateAny); err != nil {
		if was {
			s.promisc[vif] = true
		} else {
			delete(s.promisc, vif)
		}
		return fmt.Errorf("bpf: vif %d: set promiscuous %t: %w", vif, on, err)
	}
	r := *s.rules.Load()
	r.promisc = int(v) - 1
	s.rules.Store(&r)
	return nil
}
