//go:build linux

package trafficgen

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// XDP return codes (enum xdp_action).
const (
	xdpAborted = 0
	xdpDrop    = 1
	xdpPass    = 2
	xdpTX      = 3
)

// counted is an XDP program that adds one to slot 0 of a per-CPU array for
// every frame (or every IPv4 frame), spins for a while if asked, and
// returns a fixed action.
type counted struct {
	prog  *ebpf.Program
	count *ebpf.Map
}

// loadCounted loads the program. A per-CPU counter needs no atomic add, so
// counting costs the generator and the sink almost nothing.
func loadCounted(name string, action int32, ipv4Only bool, spins int) (*counted, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       name,
		Type:       ebpf.PerCPUArray,
		KeySize:    4,
		ValueSize:  8,
		MaxEntries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("trafficgen: create counter map: %w", err)
	}
	var insns asm.Instructions
	if ipv4Only {
		insns = append(insns,
			asm.LoadMem(asm.R2, asm.R1, 0, asm.Word), // ctx->data
			asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // ctx->data_end
			asm.Mov.Reg(asm.R4, asm.R2),
			asm.Add.Imm(asm.R4, ethLen),
			asm.JGT.Reg(asm.R4, asm.R3, "out"),
			asm.LoadMem(asm.R4, asm.R2, 12, asm.Half), // EtherType, network order
			asm.JNE.Imm(asm.R4, 0x0008, "out"),        // 0x0800 read little-endian (amd64, arm64)
		)
	}
	insns = append(insns,
		// key = 0 on the stack; r0 = bpf_map_lookup_elem(map, &key)
		asm.StoreImm(asm.R10, -4, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R2, 0).WithSymbol("out"),
	)
	if spins > 0 {
		insns = append(insns,
			asm.Add.Imm(asm.R2, 1).WithSymbol("spin"),
			asm.JLT.Imm(asm.R2, int32(spins), "spin"),
		)
	}
	insns = append(insns,
		asm.Mov.Imm(asm.R0, action),
		asm.Return(),
	)
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         name,
		Type:         ebpf.XDP,
		License:      "Dual MIT/GPL",
		Instructions: insns,
	})
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("trafficgen: load XDP program: %w", err)
	}
	return &counted{prog: p, count: m}, nil
}

// total sums the per-CPU counter.
func (c *counted) total() (uint64, error) {
	var per []uint64
	if err := c.count.Lookup(uint32(0), &per); err != nil {
		return 0, fmt.Errorf("trafficgen: read counter: %w", err)
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n, nil
}

func (c *counted) close() error {
	return errors.Join(c.prog.Close(), c.count.Close())
}

// SinkAction is what a Sink does with the frames it counts.
type SinkAction int32

const (
	// SinkDrop drops every frame: the kernel's XDP_DROP limit.
	SinkDrop SinkAction = xdpDrop
	// SinkPass passes every frame on to the kernel's stack.
	SinkPass SinkAction = xdpPass
)

// Sink is an XDP program that drops or passes every frame and counts the
// IPv4 ones: what UDPFrame makes, and not the kernel's own IPv6 neighbour
// discovery, which would spoil exact counts. It is attached through a
// bpf_link (so a crashed process leaves nothing behind). On veth it is also what lets
// the interface accept frames sent to it by XDP_TX or XDP_REDIRECT from its
// peer: veth drops those unless the receiving end runs XDP.
type Sink struct {
	c    *counted
	link link.Link
}

// NewSink attaches a counting program to ifindex, native (driver) mode first,
// generic (SKB) mode if the driver refuses. Call it on a thread inside the
// interface's network namespace (netlab's Lab.Do); the ifindex is resolved
// there. Needs Linux 5.9 (XDP bpf_link) and CAP_NET_ADMIN + CAP_BPF; a busy
// interface (another XDP program attached) gives an error wrapping EBUSY.
func NewSink(ifindex int, action SinkAction) (*Sink, error) { return NewSlowSink(ifindex, action, 0) }

// NewSlowSink is NewSink with a receiver slower than any sender: the program
// spins spins rounds per frame (bench/results/notes.md says how long 200000
// take on one machine). Behind a veth with a
// qdisc, whose queue the kernel stops while the peer's ring is full, it
// backs up the sender's transmit path, e.g. an AF_XDP TX ring.
func NewSlowSink(ifindex int, action SinkAction, spins int) (*Sink, error) {
	c, err := loadCounted("tg_sink", int32(action), true, spins)
	if err != nil {
		return nil, err
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: c.prog, Interface: ifindex, Flags: link.XDPDriverMode})
	if err != nil {
		var gerr error
		l, gerr = link.AttachXDP(link.XDPOptions{Program: c.prog, Interface: ifindex, Flags: link.XDPGenericMode})
		if gerr != nil {
			c.close()
			return nil, fmt.Errorf("trafficgen: attach XDP sink to ifindex %d: %w", ifindex, errors.Join(err, gerr))
		}
	}
	return &Sink{c: c, link: l}, nil
}

// Count returns how many frames the sink has seen since it was attached.
func (s *Sink) Count() (uint64, error) {
	return s.c.total()
}

// Close detaches the program. It is safe to call more than once.
func (s *Sink) Close() error {
	if s.link == nil {
		return nil
	}
	err := errors.Join(s.link.Close(), s.c.close())
	s.link = nil
	return err
}

// Layout of the pacer's one map value (four u64).
const (
	paceInterval  = 0  // ns between frames
	paceNext      = 8  // earliest ktime for the next frame
	paceRemaining = 16 // frames still to send
	paceSent      = 24 // frames sent (XDP_TX) since load
	paceBurst     = 64 // frames the pacer may catch up at once after a stall
)

// pacer is an XDP program that paces copies in a live run: a copy goes out
// (XDP_TX) only when its time has come and frames remain to be sent; every
// other copy is dropped, which in a live run recycles its page at once.
// The run itself spins; userspace ends it with a signal.
type pacer struct {
	prog  *ebpf.Program
	state *ebpf.Map
}

func loadPacer() (*pacer, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "tg_pace",
		Type:       ebpf.Array,
		KeySize:    4,
		ValueSize:  32,
		MaxEntries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("trafficgen: create pacer map: %w", err)
	}
	insns := asm.Instructions{
		asm.StoreImm(asm.R10, -4, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "drop"),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.LoadMem(asm.R1, asm.R7, paceRemaining, asm.DWord),
		asm.JEq.Imm(asm.R1, 0, "drop"),
		asm.FnKtimeGetNs.Call(), // r0 = now
		asm.LoadMem(asm.R2, asm.R7, paceNext, asm.DWord),
		asm.JGT.Reg(asm.R2, asm.R0, "drop"), // not yet
		// next = max(next, now - burst*interval) + interval: after a stall
		// catch up by at most paceBurst frames.
		asm.LoadMem(asm.R4, asm.R7, paceInterval, asm.DWord),
		asm.Mov.Reg(asm.R3, asm.R4),
		asm.Mul.Imm(asm.R3, paceBurst),
		asm.Mov.Reg(asm.R5, asm.R0),
		asm.Sub.Reg(asm.R5, asm.R3),
		asm.JGE.Reg(asm.R2, asm.R5, "keep"),
		asm.Mov.Reg(asm.R2, asm.R5),
		asm.Add.Reg(asm.R2, asm.R4).WithSymbol("keep"),
		asm.StoreMem(asm.R7, paceNext, asm.R2, asm.DWord),
		asm.LoadMem(asm.R1, asm.R7, paceRemaining, asm.DWord),
		asm.Sub.Imm(asm.R1, 1),
		asm.StoreMem(asm.R7, paceRemaining, asm.R1, asm.DWord),
		asm.LoadMem(asm.R1, asm.R7, paceSent, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R7, paceSent, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, xdpTX),
		asm.Return(),
		asm.Mov.Imm(asm.R0, xdpDrop).WithSymbol("drop"),
		asm.Return(),
	}
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "tg_live_pace",
		Type:         ebpf.XDP,
		License:      "Dual MIT/GPL",
		Instructions: insns,
	})
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("trafficgen: load pacing XDP program: %w", err)
	}
	return &pacer{prog: p, state: m}, nil
}

// start arms the pacer for count frames at one per interval ns.
func (p *pacer) start(count uint64, interval uint64) error {
	var v [4]uint64
	if err := p.state.Lookup(uint32(0), &v); err != nil {
		return fmt.Errorf("trafficgen: read pacer: %w", err)
	}
	v[0], v[1], v[2] = interval, 0, count
	if err := p.state.Update(uint32(0), &v, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("trafficgen: arm pacer: %w", err)
	}
	return nil
}

// state returns frames remaining and frames sent since load.
func (p *pacer) progress() (remaining, sent uint64, err error) {
	var v [4]uint64
	if err := p.state.Lookup(uint32(0), &v); err != nil {
		return 0, 0, fmt.Errorf("trafficgen: read pacer: %w", err)
	}
	return v[2], v[3], nil
}

func (p *pacer) close() error {
	return errors.Join(p.prog.Close(), p.state.Close())
}
