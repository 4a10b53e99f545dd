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
