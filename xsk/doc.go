//go:build linux

// Package xsk is an AF_XDP socket on golang.org/x/sys/unix, without cgo.
//
// A Socket owns one UMEM (a region of NumFrames frames of FrameSize bytes
// that both the kernel and this process map) and the four rings that pass
// frame addresses between them. A frame travels like this:
//
//	fill ----> kernel writes a received packet into the frame
//	RX   ----> Receive hands its descriptor to the application, which reads
//	           it with Frame and gives it back with Release (to the fill ring)
//	TX   <---- the application takes a free frame (NextFrame), writes a
//	           packet into it and submits it with Transmit
//	completion  the kernel has sent it; Complete returns the frame to the
//	           free list
//
// The first FillSize frames of the UMEM circulate between the fill and RX
// rings; the others form the free list the TX path draws from. Frames may
// change sides: a received frame can be transmitted as is (forwarding without
// a copy; its completion puts it on the free list) and any frame, e.g. one
// from NextFrame, can be handed to Release to take its place on the fill ring.
//
// Packets longer than a frame (jumbo frames) need a socket bound for
// multi-buffer (Config.SG, XDP_USE_SG, Linux 6.6) and an XDP program loaded
// with BPF_F_XDP_HAS_FRAGS (ELF section "xdp.frags"). Such a packet is a
// chain of descriptors, each but the last with PktContd in its Options:
// Receive returns whole chains (Packet walks them), and Transmit and Stage
// take them and never split one. Without SG the kernel drops such a packet
// (Stats.RXDropped).
//
// The kernel needs CONFIG_XDP_SOCKETS (Linux 4.18; need_wakeup 5.4, busy
// polling options 5.11). An XDP program must redirect frames into the socket
// through a BPF_MAP_TYPE_XSKMAP; this package does not load one.
//
// The RX half (Wait, Receive, Frame, Release) and the TX half (NextFrame,
// Transmit, Kick, Complete, FreeFrame) touch disjoint rings and state, so
// each may run on its own goroutine, but neither half is safe for concurrent
// use by itself. Wakeup and Stats may be called from anywhere; Close interrupts a Wait
// and must otherwise not race with the data path: stop the users first.
//
// All unsafe code (mmap pointer arithmetic, getsockopt on structs, the kick)
// is in unsafe.go.
package xsk
