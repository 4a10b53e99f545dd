package virtif

// deliver is VIF_DELIVERPKT, handed to the backend as BackendConfig.Deliver.
// It allocates nothing and takes no lock: flags, MAC, taps and handler are
// atomics, counters a per-P shard.
func (i *Interface) deliver(frame []byte) {
	f := i.flags.Load()
	if f&uint32(FlagRunning) == 0 {
		i.ctr.add1(cIDrops)
		return
	}
	if len(frame) < ethHeaderLen {
		i.ctr.add1(cIErrors)
		return
	}
	mcast := frame[0]&1 != 0 // ETHER_IS_MULTICAST, broadcast included
	promisc := false
	if !mcast && macKey(frame) != i.mac.Load() {
		if f&uint32(FlagPromisc) == 0 {
			s := i.ctr.acquire()
			s.c[cIDrops]++
			s.c[cIFiltered]++
			i.ctr.release(s)
			return
		}
		promisc = true
	}
	in := i.input.Load()
	s := i.ctr.acquire()
	if in == nil {
		s.c[cIDrops]++
		s.c[cINoHandler]++
	} else {
		s.c[cIPackets]++
		s.c[cIBytes] += uint64(len(frame))
		if mcast {
			s.c[cIMcasts]++
		}
	}
	i.ctr.release(s)
	if tp := i.taps.Load(); tp != nil {
		for _, t := range *tp {
			t.Tap(frame, In)
		}
	}
	if in != nil {
		(*in)(frame, promisc)
	}
}
