//go:build linux

package xsk

// Metadata returns the n bytes in front of the received packet d: where an
// XDP program's bpf_xdp_adjust_meta data lands (in the frame's headroom; copy
// mode copies it along). It returns nil when those bytes would fall outside
// d's frame. Valid, like Frame, until the frame is released.
func (s *Socket) Metadata(d Desc, n int) []byte {
	if n < 0 || d.Addr >= uint64(len(s.umem)) || d.Addr-d.Addr&s.frameMask < uint64(n) {
		return nil
	}
	return s.umem[d.Addr-uint64(n) : d.Addr : d.Addr]
}

// TXPending is the number of descriptors on the TX ring that the kernel has
// not taken yet. In copy mode a kick sends only a budget of them, so a
// sender that must not leave frames behind kicks until this is 0.
func (s *Socket) TXPending() int {
	if s.closed.Load() {
		return 0
	}
	return int(s.tx.outstanding())
}
