//go:build linux

package trafficgen

import "github.com/virtif-xdp/virtif-xdp/internal/netlab"

// The generators and the sink resolve their interface in the calling
// thread's network namespace; these open them on one end of a lab, from any
// goroutine.

// LiveIn opens a Live generator on the lab's side (netlab.Host or Peer).
func LiveIn(l *netlab.Lab, side int) (*Live, error) {
	return in(l, side, NewLive)
}

// SinkIn attaches a Sink to the lab's side.
func SinkIn(l *netlab.Lab, side int, action SinkAction) (*Sink, error) {
	return in(l, side, func(ifindex int) (*Sink, error) { return NewSink(ifindex, action) })
}

// PacketIn opens a Packet generator on the lab's side.
func PacketIn(l *netlab.Lab, side int) (*Packet, error) {
	return in(l, side, NewPacket)
}

func in[T any](l *netlab.Lab, side int, open func(ifindex int) (T, error)) (v T, err error) {
	err = l.Do(side, func() (err error) {
		v, err = open(l.Index[side])
		return err
	})
	return v, err
}
