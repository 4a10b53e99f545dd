//go:build linux

package bpf

import (
	"encoding/binary"
	"fmt"

	"github.com/cilium/ebpf"
)

// MetaLen is the length of the XDP metadata the program writes in front of
// every frame it redirects while tagging is on (SetTagging). An AF_XDP
// receiver finds it in the UMEM right before the frame's first byte (copy
// mode copies it along; Linux 5.x+). A frame the program cannot tag (a
// driver without XDP metadata) is not redirected while tagging is on: it
// passes to the host and counts as NoMeta.
const MetaLen = 4

// MetaTag is the high half of that metadata; the low 16 bits are the vif.
const MetaTag = 0x5ef00000

// VifFromMeta returns the vif a redirected frame was steered to, from the
// MetaLen bytes in front of it (host byte order, as the program wrote them).
// ok is false when the bytes carry no tag: the frame was redirected while
// tagging was off. The program never clears the bytes, so a receiver that
// reuses the frame should wipe a tag it has read.
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

// SetTagging turns the metadata tag on or off. Vifs that share a socket
// need it to tell their frames apart; a lone vif does not, and the tag has a
// cost (bpf_xdp_adjust_meta, and the copy of the metadata in copy mode), so
// it is off after Load. Errors: net.ErrClosed after Close.
func (s *Steering) SetTagging(on bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	objs, err := s.loaded()
	if err != nil {
		return err
	}
	var v uint32
	if on {
		v = 1
	}
	if err := objs.Tagging.Update(uint32(0), v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("bpf: set tagging %t: %w", on, err)
	}
	return nil
}
