package bpf

import "fmt"

// AttachMode is where on the receive path the program runs.
type AttachMode int

const (
	// AttachAuto tries AttachNative, then AttachGeneric.
	AttachAuto AttachMode = iota
	// AttachNative runs the program in the driver (XDP_FLAGS_DRV_MODE); the
	// driver must support XDP.
	AttachNative
	// AttachGeneric runs the program on the generic receive path
	// (XDP_FLAGS_SKB_MODE), slower but available on any interface.
	AttachGeneric
)

func (m AttachMode) String() string {
	switch m {
	case AttachAuto:
		return "auto"
	case AttachNative:
		return "native"
	case AttachGeneric:
		return "generic"
	}
	return fmt.Sprintf("AttachMode(%d)", int(m))
}
