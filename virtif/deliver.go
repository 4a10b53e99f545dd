package virtif

// deliver is VIF_DELIVERPKT, handed to the backend as BackendConfig.Deliver.
func (i *Interface) deliver(frame []byte) { i.deliverOn(nil, frame) }

// newDeliver is BackendConfig.NewDeliver: a deliver with its own shard.
func (i *Interface) newDeliver() func(frame []byte) {
	own := i.ctr.newOwned()
	return func(frame []byte) { i.deliverOn(own, frame) }
}

// deliverOn is VIF_DELIVERPKT counting into own (nil: any shard). It
// allocates nothing and takes no lock: flags, MAC, taps and handler are
// atomics, counters a shard behind a try-lock.
func (i *Interface) deliverOn(own *shard, frame []byte) {
	f := i.flags.Load()
	if f&uint32(FlagRunning) == 0 {
		i.ctr.add1(own, cIDrops)
		return
	}
	if len(frame) < ethHeaderLen {
		i.ctr.add1(own, cIErrors)
		return
	}
	mcast := frame[0]&1 != 0 // ETHER_IS_MULTICAST, broadcast included
	promisc := false
	if !mcast && macKey(frame) != i.mac.Load() {
		if f&uint32(FlagPromisc) == 0 {
			s := i.ctr.get(own)
			s.c[cIDrops]++
			s.c[cIFiltered]++
			i.ctr.put(own, s)
			return
		}
		promisc = true
	}
	in := i.input.Load()
	s := i.ctr.get(own)
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
	i.ctr.put(own, s)
	if tp := i.taps.Load(); tp != nil {
		for _, t := range *tp {
			t.Tap(frame, In)
		}
	}
	if in != nil {
		in.fn(frame, promisc)
	}
}

// endBatch is BackendConfig.EndBatch: the end handler of SetInputBatch,
// if any. It runs whatever the flags, so a handler that held frames back
// before the interface went down still hands them up.
func (i *Interface) endBatch() {
	if in := i.input.Load(); in != nil && in.end != nil {
		in.end()
	}
}
