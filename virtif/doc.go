// Package virtif is NetBSD's rump-kernel virtual network interface,
// if_virt.c (revision 1.52), in Go: a cloner of interfaces vif0, vif1, ...
// whose host side is a narrow "hypercall" Backend (create, send, dying,
// destroy, and the deliver upcall), chosen by the scheme of the interface's
// link string: "mem:seg0" for the in-memory segment of package virtif/mem,
// "xdp:eth0,..." for AF_XDP. The package knows nothing of AF_XDP.
//
// # From if_virt.c to Go
//
//	if_clone_attach (VIF_MODCMD INIT)  NewCloner
//	if_clone_detach (VIF_MODCMD FINI)  Cloner.Detach: EBUSY while interfaces remain (if_virt.c: ENOTTY)
//	virtif_clone                       Cloner.Create / CreateUnit (EEXIST if taken)
//	#ifndef RUMP_VIF_LINKSTR           ClonerConfig.UnitMode: the unit number is the link string
//	virtif_unclone                     Cloner.Destroy: EBUSY if up; Dying, stop, Close
//	SIOCSLINKSTR                       Interface.SetLinkStr: once (EBUSY), while down (EBUSY),
//	                                   1..4095 bytes + NUL (EINVAL / E2BIG), unknown scheme ENXIO
//	SIOCGLINKSTR (IFLINKSTR_QUERYLEN)  Interface.LinkStr, LinkStrLen (strlen+1); ENOENT when unset
//	IFLINKSTR_UNSET: panic             Interface.UnsetLinkStr: ENOTSUP
//	virtif_create                      MAC b2:0a:RR:0b:0e:NN (RR random, NN the unit); the
//	                                   backend may replace it (HardwareAddrer)
//	VIFHYPER_CREATE/SEND/DYING/DESTROY OpenFunc, Backend.Send, Backend.Dying, Backend.Close
//	virtif_init / virtif_stop          Interface.Up (ENXIO without backend) / Down
//	default ioctl branch: ENXIO        every operation needing the backend before it exists
//	ether_ioctl                        SetMTU (ETHERMIN..ETHERMTU, 46..1500; more if the backend is
//	                                   an MTULimiter, which is ours), SetHardwareAddr (only while down), SetPromisc,
//	                                   Join/LeaveMulticast (reference counted; leaving a group
//	                                   not joined is ENXIO, as ether_delmulti), Add/DelIPv4
//	if_output + virtif_start           Output, OutputBatch: bounded send queue (ENOBUFS),
//	                                   empty segments skipped, at most MaxSegments (LB_SH)
//	                                   per Send; panic("lazy bum") becomes coalescing
//	VIF_DELIVERPKT                     BackendConfig.Deliver: the receive filter, no copy
//	(ours)                             BackendConfig.EndBatch, SetInputBatch: the end of an RX batch
//	bpf_mtap                           Tap, PcapWriter
//	if_ipackets, if_opackets           Stats: the whole of struct if_data's counters
//
// # Receive path
//
// The backend calls BackendConfig.Deliver for each frame, possibly from
// one goroutine per NIC queue at once. A frame is dropped unless the
// interface is RUNNING, is an input error when shorter than an Ethernet
// header, and is accepted when its destination is the interface's MAC, a
// multicast or broadcast address, or anything while promiscuous (then
// marked promiscuous for the upper layer). Accepted frames are counted,
// shown to the taps and handed to the Input set with SetInput. Where
// if_virt.c copies into an mbuf, the upper layer gets the backend's buffer,
// valid only during the call: one that keeps a frame copies it. The path
// takes no lock and allocates nothing: flags and MAC are atomics, counters
// live in per-P shards (see Stats), taps cost one atomic load when none is
// attached. A backend with long-lived receiving goroutines (one per NIC
// queue) takes one BackendConfig.NewDeliver function per goroutine, whose
// counters are its own: no per-P lookup at all.
//
// A backend that delivers frames in batches (an RX ring's) and implements
// BatchEnder calls BackendConfig.EndBatch after each batch, on the
// goroutine that delivered it; the interface calls the end handler given
// with SetInputBatch, so an upper layer may hold frames back within a
// batch and hand them up coalesced at its end (package netstack's GRO).
// Interface.EndsBatches says whether the backend does; both of ours do.
//
// # Send path
//
// Output and OutputBatch run virtif_start under the interface's send lock,
// so the backend's Send is never called concurrently. The send queue is
// bounded by ClonerConfig.SendQueueLen callers waiting for that lock;
// beyond it frames are dropped with ENOBUFS. Frames are never copied except
// to coalesce a tail beyond MaxSegments segments.
//
// A backend must not call Deliver from inside Send: the send lock is held
// there and an input handler that answers (Output) would wait for itself.
// Deliver from the backend's own goroutines, as package mem does.
//
// # Errors
//
// Errors keep if_virt.c's errno, so errors.Is(err, unix.EBUSY) works, and
// carry the interface name and operation: "vif0: set link string:
// already set: device or resource busy". Nothing panics on any input.
package virtif
