//go:build linux

package xsk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
)

// testEtherType is IEEE 802 local experimental 1: nothing else in the lab
// sends it, so the tests can tell their frames from IPv6 neighbour discovery.
const testEtherType = 0x88b5

// redirectProgram is the smallest steering program: every frame goes to the
// XSKMAP entry of its RX queue, or on to the kernel when that entry is empty.
func redirectProgram(xsks *ebpf.Map) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, 16, asm.Word), // ctx->rx_queue_index
		asm.LoadMapPtr(asm.R1, xsks.FD()),
		asm.Mov.Imm(asm.R3, 2), // XDP_PASS when the entry is empty (5.3)
		asm.FnRedirectMap.Call(),
		asm.Return(),
	}
}

// xskLab is a netlab lab with the redirect program on the host end.
type xskLab struct {
	*netlab.Lab
	xsks *ebpf.Map
}

func newXSKLab(tb testing.TB, opts netlab.Options) *xskLab {
	tb.Helper()
	return newXSKLabFlags(tb, opts, 0)
}

// newXSKLabFlags is newXSKLab with the program loaded with flags
// (BPF_F_XDP_HAS_FRAGS: the program takes multi-buffer frames).
func newXSKLabFlags(tb testing.TB, opts netlab.Options, flags uint32) *xskLab {
	tb.Helper()
	lab := labtest.NewT(tb, opts)
	xsks, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: 64})
	if err != nil {
		tb.Fatalf("XSKMAP: %v", err)
	}
	tb.Cleanup(func() { xsks.Close() })
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.XDP, License: "Dual MIT/GPL", Instructions: redirectProgram(xsks), Flags: flags,
	})
	if err != nil {
		tb.Fatalf("XDP program: %v", err)
	}
	defer prog.Close()
	err = lab.Do(netlab.Host, func() error {
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: lab.Index[netlab.Host]})
		if err != nil {
			return err
		}
		tb.Cleanup(func() { l.Close() })
		return nil
	})
	if err != nil {
		tb.Fatalf("attach XDP: %v", err)
	}
	return &xskLab{Lab: lab, xsks: xsks}
}

// open opens a socket on the host end's queue and puts it in the XSKMAP.
func (l *xskLab) open(tb testing.TB, queue int, cfg *Config) *Socket {
	tb.Helper()
	var s *Socket
	err := l.Do(netlab.Host, func() (err error) {
		s, err = Open(l.Index[netlab.Host], queue, cfg)
		return err
	})
	if err != nil {
		tb.Fatalf("Open queue %d: %v", queue, err)
	}
	tb.Cleanup(func() { s.Close() })
	if err := l.xsks.Put(uint32(queue), uint32(s.FD())); err != nil {
		tb.Fatalf("XSKMAP put: %v", err)
	}
	return s
}

// packetConn is an AF_PACKET socket on one end of the lab.
type packetConn struct {
	fd, ifindex int
}

func (l *xskLab) packet(tb testing.TB, side int) *packetConn {
	tb.Helper()
	var fd int
	err := l.Do(side, func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(testEtherType)))
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(testEtherType), Ifindex: l.Index[side]})
	})
	if err != nil {
		tb.Fatalf("AF_PACKET: %v", err)
	}
	tb.Cleanup(func() { unix.Close(fd) })
	// A generous bound so a broken test fails instead of hanging.
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		tb.Fatal(err)
	}
	return &packetConn{fd: fd, ifindex: l.Index[side]}
}

func (p *packetConn) send(tb testing.TB, frame []byte) {
	tb.Helper()
	for {
		err := unix.Sendto(p.fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: p.ifindex})
		if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN) {
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			tb.Fatalf("AF_PACKET send: %v", err)
		}
		return
	}
}

func (p *packetConn) recv(tb testing.TB, buf []byte) []byte {
	tb.Helper()
	for {
		n, from, err := trafficgen.Recvfrom(p.fd, buf)
		if err != nil {
			tb.Fatalf("AF_PACKET receive: %v", err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		return buf[:n]
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// testFrame builds an Ethernet frame of size bytes carrying seq.
func testFrame(dst, src []byte, seq uint32, size int) []byte {
	f := make([]byte, size)
	copy(f[0:6], dst)
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:14], testEtherType)
	binary.BigEndian.PutUint32(f[14:18], seq)
	for i := 18; i < size; i++ {
		f[i] = byte(seq) ^ byte(i)
	}
	return f
}

// receiveOne waits for one frame of ours on s and returns a copy.
func receiveOne(tb testing.TB, s *Socket) []byte {
	tb.Helper()
	var descs [1]Desc
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if s.Receive(descs[:]) == 0 {
			if _, err := s.Wait(100 * time.Millisecond); err != nil {
				tb.Fatalf("Wait: %v", err)
			}
			continue
		}
		f := bytes.Clone(s.Frame(descs[0]))
		s.Release(descs[:])
		if len(f) >= 14 && binary.BigEndian.Uint16(f[12:14]) == testEtherType {
			return f
		}
	}
	tb.Fatal("no frame received within 5s")
	return nil
}
