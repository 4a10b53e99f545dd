package bpf

import "encoding/binary"

// MetaLen is the length of the XDP metadata the program writes in front of
// every frame it redirects. An AF_XDP receiver finds it in the UMEM right
// before the frame's first byte (copy mode copies it along; Linux 5.x+).
const MetaLen = 4

// MetaTag is the high half of that metadata; the low 16 bits are the vif.
const MetaTag = 0x5ef00000

// VifFromMeta returns the vif a redirected frame was steered to, from the
// MetaLen bytes in front of it (host byte order, as the program wrote them).
// ok is false when the bytes carry no tag: the program could not write it.
func VifFromMeta(meta []byte) (vif int, ok bool) {
	if len(meta) < MetaLen {
		return 0, false
	}
	v := binary.NativeEndian.Uint32(meta[len(meta)-MetaLen:])
	if v&0xffff0000 != MetaTag {
		return 0, false
	}
	return int(v & 0xffff), true
}
