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
// every frame (or every IPv4 frame) and returns a fixed action.
type counted struct {
	prog  *ebpf.Program
	count *ebpf.Map
}

// loadCounted loads the program. A per-CPU counter needs no atomic add, so
// counting costs the generator and the sink almost nothing.
func loadCounted(name string, action int32, ipv4Only bool) (*counted, error) {
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
		asm.Mov.Imm(asm.R0, action).WithSymbol("out"),
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
func NewSink(ifindex int, action SinkAction) (*Sink, error) {
	c, err := loadCounted("tg_sink", int32(action), true)
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
