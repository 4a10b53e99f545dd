//go:build linux

// Command gvisor-ref is the gVisor reference for virtif-xdp's benchmarks: an
// AF_XDP socket driven through gvisor.dev/gvisor/pkg/xdp (its UMEM and ring
// types, used as gVisor's own tools use them), with gVisor's own XDP program
// (runsc/sandbox/bpf.AFXDPProgram, "redirect every frame to one AF_XDP
// socket") loaded and attached the way runsc does it: a bpf_link with no
// mode flags, the socket in key 0 of its sock_map. That program steers
// every queue to key 0, so only queue 0 is meaningful.
//
// Modes rxdrop and txonly; one JSON line at the end, like the C references.
package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/xdp"
	gvbpf "gvisor.dev/gvisor/runsc/sandbox/bpf"
)

const batch = 64

type result struct {
	System  string  `json:"system"`
	Mode    string  `json:"mode"`
	Packets uint64  `json:"packets"`
	Bytes   uint64  `json:"bytes"`
	Seconds float64 `json:"seconds"`
	PPS     float64 `json:"pps"`
	Wall    float64 `json:"wall_seconds"`
	Attach  string  `json:"attach"`
	Wakeups uint64  `json:"wakeups"`

	RXDropped        uint64 `json:"rx_dropped"`
	RXInvalidDescs   uint64 `json:"rx_invalid_descs"`
	TXInvalidDescs   uint64 `json:"tx_invalid_descs"`
	RXRingFull       uint64 `json:"rx_ring_full"`
	RXFillRingEmpty  uint64 `json:"rx_fill_ring_empty_descs"`
	TXRingEmptyDescs uint64 `json:"tx_ring_empty_descs"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gvisor-ref:", err)
		if errors.Is(err, unix.EPERM) {
			fmt.Fprintln(os.Stderr, "gvisor-ref: run as root (CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW)")
		}
		os.Exit(1)
	}
}

func run() error {
	var (
		ifname  = flag.String("i", "", "interface to run on (required)")
		mode    = flag.String("m", "rxdrop", "rxdrop|txonly")
		queue   = flag.Uint("q", 0, "queue id (gVisor's program serves queue 0 only)")
		seconds = flag.Float64("d", 10, "seconds to run")
		size    = flag.Int("s", 64, "frame size for txonly, 60..3000")
		dstS    = flag.String("dst", "ff:ff:ff:ff:ff:ff", "destination MAC of the txonly frame")
		srcS    = flag.String("src", "02:00:00:00:00:01", "source MAC of the txonly frame")
		poll    = flag.Bool("p", false, "sleep in poll() when idle, as gVisor's link endpoint does (default: busy loop)")
	)
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: gvisor-ref -i IFNAME [-m rxdrop|txonly] [-q 0] [-d SECONDS] [-s SIZE] [--dst MAC] [--src MAC] [-p]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *ifname == "" || flag.NArg() != 0 || (*mode != "rxdrop" && *mode != "txonly") || *size < 60 || *size > 3000 || *seconds <= 0 {
		flag.Usage()
		os.Exit(2)
	}
	dst, err := net.ParseMAC(*dstS)
	if err != nil {
		return fmt.Errorf("--dst: %w", err)
	}
	src, err := net.ParseMAC(*srcS)
	if err != nil {
		return fmt.Errorf("--src: %w", err)
	}
	ifc, err := net.InterfaceByName(*ifname)
	if err != nil {
		return fmt.Errorf("interface %s: %w", *ifname, err)
	}

	// Load and attach as runsc/sandbox/xdp.go createSocketXDP does.
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(gvbpf.AFXDPProgram))
	if err != nil {
		return fmt.Errorf("load gVisor's AF_XDP program spec: %w", err)
	}
	var objs struct {
		Program *ebpf.Program `ebpf:"xdp_prog"`
		SockMap *ebpf.Map     `ebpf:"sock_map"`
	}
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return fmt.Errorf("load gVisor's AF_XDP program: %w", err)
	}
	defer objs.Program.Close()
	defer objs.SockMap.Close()
	lk, err := link.AttachRawLink(link.RawLinkOptions{Program: objs.Program, Attach: ebpf.AttachXDP, Target: ifc.Index})
	if err != nil {
		return fmt.Errorf("attach XDP program to %s: %w", *ifname, err)
	}
	defer lk.Close()

	opts := xdp.DefaultOpts()
	opts.Bind = true
	opts.UseNeedWakeup = true
	cb, err := xdp.New(uint32(ifc.Index), uint32(*queue), opts)
	if err != nil {
		return fmt.Errorf("gVisor xdp.New on %s queue %d: %w", *ifname, *queue, err)
	}
	fd := int(cb.UMEM.SockFD())
	defer unix.Close(fd)
	if err := objs.SockMap.Update(uint32(0), uint32(fd), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("insert socket into sock_map: %w", err)
	}

	fmt.Fprintln(os.Stderr, "ready: gvisor", *mode) // a harness may start its generator now
	var stop atomic.Bool
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() { <-sig; stop.Store(true) }()
	time.AfterFunc(time.Duration(*seconds*float64(time.Second)), func() { stop.Store(true) })

	r := result{System: "gvisor", Mode: *mode, Attach: "kernel's choice (no flags)"}
	start := time.Now()
	var first, last time.Time
	if *mode == "rxdrop" {
		first, last = rxdrop(cb, fd, &stop, *poll, &r)
	} else {
		txonly(cb, udpFrame(dst, src, *size), &stop, &r)
	}
	// As in the C references: receiving modes are timed from the first
	// frame to the last, so start-up and a quiet tail do not dilute the rate.
	r.Wall = time.Since(start).Seconds()
	r.Seconds = r.Wall
	if *mode == "rxdrop" && r.Packets > 1 && last.After(first) {
		r.Seconds = last.Sub(first).Seconds()
	}
	r.PPS = float64(r.Packets) / r.Seconds
	st, err := statistics(fd)
	if err != nil {
		return err
	}
	r.RXDropped, r.RXInvalidDescs, r.TXInvalidDescs = st.Rx_dropped, st.Rx_invalid_descs, st.Tx_invalid_descs
	r.RXRingFull, r.RXFillRingEmpty, r.TXRingEmptyDescs = st.Rx_ring_full, st.Rx_fill_ring_empty_descs, st.Tx_ring_empty_descs
	return json.NewEncoder(os.Stdout).Encode(&r)
}

// rxdrop keeps the fill queue full and gives every received frame straight
// back, as gVisor's tcpdump tool does, minus the printing.
// It returns when the first and the last frame arrived.
func rxdrop(cb *xdp.ControlBlock, fd int, stop *atomic.Bool, poll bool, r *result) (first, last time.Time) {
	cb.UMEM.Lock()
	cb.Fill.FillAll(&cb.UMEM)
	cb.UMEM.Unlock()
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for !stop.Load() {
		n, idx := cb.RX.Peek()
		if n == 0 {
			if poll {
				r.Wakeups++
				_, _ = unix.Poll(pfd, 100)
			}
			continue
		}
		cb.UMEM.Lock()
		for i := range n {
			d := cb.RX.Get(idx + i)
			r.Bytes += uint64(d.Len)
			cb.UMEM.FreeFrame(d.Addr)
		}
		cb.RX.Release(n)
		cb.Fill.FillAll(&cb.UMEM)
		cb.UMEM.Unlock()
		r.Packets += uint64(n)
		last = time.Now()
		if first.IsZero() {
			first = last
		}
	}
	return first, last
}

// txonly sends batches of one prepared frame; every UMEM frame holds a copy,
// so a frame coming back from the completion queue is ready to go again.
// Packets counts completions: frames the kernel has sent.
func txonly(cb *xdp.ControlBlock, frame []byte, stop *atomic.Bool, r *result) {
	cb.UMEM.Lock()
	defer cb.UMEM.Unlock()
	opts := xdp.DefaultOpts()
	for i := range uint64(opts.NFrames) {
		copy(cb.UMEM.Get(unix.XDPDesc{Addr: i * uint64(opts.FrameSize), Len: uint32(len(frame))}), frame)
	}
	for !stop.Load() {
		if n, idx := cb.TX.Reserve(&cb.UMEM, batch); n > 0 {
			for i := range n {
				cb.TX.Set(idx+i, unix.XDPDesc{Addr: cb.UMEM.AllocFrame(), Len: uint32(len(frame))})
			}
		}
		// Notify kicks when the kernel asks for it (always, in copy mode),
		// also when the ring is full, so the kernel drains it.
		cb.TX.Notify()
		n, idx := cb.Completion.Peek()
		for i := range n {
			cb.UMEM.FreeFrame(cb.Completion.Get(idx + i))
		}
		cb.Completion.Release(n)
		r.Packets += uint64(n)
		r.Bytes += uint64(n) * uint64(len(frame))
	}
}

// statistics reads the socket's XDP_STATISTICS (all six counters, Linux 5.9).
func statistics(fd int) (unix.XDPStatistics, error) {
	var st unix.XDPStatistics
	l := uint32(unsafe.Sizeof(st))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_STATISTICS,
		uintptr(unsafe.Pointer(&st)), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return st, fmt.Errorf("XDP_STATISTICS: %w", os.NewSyscallError("getsockopt", errno))
	}
	return st, nil
}

// udpFrame is the same frame as trafficgen.UDPFrame and the C references':
// 198.18.0.1:9 -> 198.18.0.2:9, IPv4 checksum set, UDP checksum 0.
func udpFrame(dst, src net.HardwareAddr, size int) []byte {
	f := make([]byte, size)
	copy(f[0:6], dst)
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0], ip[6], ip[8], ip[9] = 0x45, 0x40, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(size-14))
	copy(ip[12:], []byte{198, 18, 0, 1, 198, 18, 0, 2})
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(f[34:], 9)
	binary.BigEndian.PutUint16(f[36:], 9)
	binary.BigEndian.PutUint16(f[38:], uint16(size-34))
	return f
}
