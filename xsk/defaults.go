package xsk

// The defaults of a zero Config, stated once (virtif/xdp's link string
// uses them too): 2048-byte frames, where a 1500-byte MTU frame fits behind
// XDP_PACKET_HEADROOM and two frames share a page; 2048-entry rings, as
// libxdp's XSK_RING_*__DEFAULT_NUM_DESCS; twice that many frames, so the
// fill ring can hold half and the other half serve TX.
const (
	DefaultFrameSize = 2048
	DefaultNumFrames = 4096
	DefaultRingSize  = 2048
)
