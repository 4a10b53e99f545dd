package xsk

import "fmt"

// Mode is how a socket is bound to its queue.
type Mode int

const (
	// ModeAuto binds with neither XDP_COPY nor XDP_ZEROCOPY: the kernel
	// tries zero-copy and falls back to copy on any driver error (no
	// zero-copy support at all, as on veth, or a driver that refuses this
	// device, as virtio-net does without iommu_platform). Mode reports
	// which was chosen.
	ModeAuto Mode = iota
	// ModeCopy copies frames between the driver's buffers and the UMEM
	// (XDP_COPY). Works on every device.
	ModeCopy
	// ModeZeroCopy lets the driver DMA into the UMEM (XDP_ZEROCOPY). Open
	// fails with an error matching unix.EOPNOTSUPP where the driver lacks it.
	ModeZeroCopy
)

func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeCopy:
		return "copy"
	case ModeZeroCopy:
		return "zerocopy"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// SGMode is whether a socket is bound for multi-buffer packets (XDP_USE_SG,
// Linux 6.6): packets longer than one frame, carried in a chain of
// descriptors (see Desc.Continues and Packet).
type SGMode int

const (
	// SGOff binds single-buffer, as before multi-buffer existed: the kernel
	// drops a packet longer than a frame (counted in Stats.RXDropped).
	SGOff SGMode = iota
	// SGAuto binds with XDP_USE_SG where the kernel and the driver take it,
	// and single-buffer where they refuse it (a kernel before 6.6 answers
	// EINVAL, a driver whose zero-copy has no multi-buffer EOPNOTSUPP); SG
	// reports which, SGError why not. Zero-copy is never given up for it:
	// with ModeAuto on a driver whose zero-copy has no multi-buffer the
	// socket binds zero-copy, single-buffer.
	SGAuto
	// SGOn binds with XDP_USE_SG or fails Open.
	SGOn
)

func (m SGMode) String() string {
	switch m {
	case SGOff:
		return "off"
	case SGAuto:
		return "auto"
	case SGOn:
		return "on"
	}
	return fmt.Sprintf("SGMode(%d)", int(m))
}
