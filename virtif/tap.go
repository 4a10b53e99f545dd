package virtif

import (
	"io"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
	"golang.org/x/sys/unix"
)

// Direction tells a tap which way a frame went.
type Direction uint8

const (
	In  Direction = 1 // received (VIF_DELIVERPKT, after the filter)
	Out Direction = 2 // sent (virtif_start, before VIFHYPER_SEND)
)

func (d Direction) String() string {
	switch d {
	case In:
		return "in"
	case Out:
		return "out"
	}
	return "?"
}

// Tap sees frames as bpf_mtap shows them to BPF listeners: every frame sent
// and every frame the receive filter accepted. frame is valid only during
// the call. Taps are called concurrently (from each receiving goroutine and
// the sender) and must not block for long: they run on the data path.
//
// What a tap may call: frames Out are shown under the interface's send
// lock, frames In on a receiving goroutine. A tap may call the getters of
// any interface, which take no lock and so work while Down or a destroy
// waits for the send lock: Name, Unit, Flags, MTU, HardwareAddr, LinkStr,
// LinkStrLen, Backend, Stats; and the cloner's Interface, Interfaces and
// Prefix. It must not call, on the interface it taps, what sends or waits
// for the send lock (Output, OutputBatch, Down, Close, Cloner.Destroy or
// Cloner.Close), which would wait for the tap itself.
//
// Exactly, from what the code does: a tap shown a frame Out runs under the
// send lock of the interface it taps. Output, OutputBatch, Down, Close,
// Cloner.Destroy and Cloner.Close of that interface take that lock and
// would wait for the tap: a deadlock that no errno reports, so a tap must
// not call them. Down or a destroy waiting for the send lock meanwhile
// holds no lock a getter takes, so the getters answer at once. The setters
// SetHardwareAddr, SetMTU and SetPromisc take the interface's lock, which
// no holder keeps while it waits for the send lock: they work
// (SetHardwareAddr returns EBUSY while the interface is up, as from
// anywhere); SetLinkStr is EBUSY (the link string is set once, before
// anything is sent). A tap shown a frame In runs on the backend's
// receiving goroutine like an input handler and may call what one may
// (see Input). A slow tap stalls the path it runs on; wrap it in a
// TapQueue, which decouples it and counts what it drops.
type Tap interface {
	Tap(frame []byte, dir Direction)
}

// AddTap attaches a tap. Attaching the same tap twice is EEXIST. With no tap
// attached the data paths pay one atomic load.
func (i *Interface) AddTap(t Tap) error {
	if t == nil {
		return opErr(i.name, "add tap: nil", unix.EINVAL)
	}
	i.tapMu.Lock()
	defer i.tapMu.Unlock()
	var old []Tap
	if p := i.taps.Load(); p != nil {
		old = *p
	}
	for _, o := range old {
		if sameTap(o, t) {
			return opErr(i.name, "add tap", unix.EEXIST)
		}
	}
	l := append(append(make([]Tap, 0, len(old)+1), old...), t)
	i.taps.Store(&l)
	return nil
}

// RemoveTap detaches a tap: ENOENT if it is not attached.
func (i *Interface) RemoveTap(t Tap) error {
	i.tapMu.Lock()
	defer i.tapMu.Unlock()
	var old []Tap
	if p := i.taps.Load(); p != nil {
		old = *p
	}
	for k, o := range old {
		if sameTap(o, t) {
			if len(old) == 1 {
				i.taps.Store(nil)
				return nil
			}
			l := append(append(make([]Tap, 0, len(old)-1), old[:k]...), old[k+1:]...)
			i.taps.Store(&l)
			return nil
		}
	}
	return opErr(i.name, "remove tap", unix.ENOENT)
}

// sameTap compares taps without panicking on uncomparable dynamic types.
func sameTap(a, b Tap) bool {
	ta, tb := reflect.TypeOf(a), reflect.TypeOf(b)
	return ta == tb && ta.Comparable() && a == b
}

// PcapWriter is a Tap writing a classic pcap stream (LINKTYPE_ETHERNET,
// microsecond timestamps) that tcpdump -r and Wireshark read. It is safe
// for concurrent use. Nothing is lost silently: frames that could not be
// written are counted (Stats) and the first error is kept (Err) with its
// errno. Wrap a file in a bufio.Writer for speed and flush it after Close.
type PcapWriter struct {
	mu      sync.Mutex
	w       *pcapgo.Writer
	ew      errWriter
	snaplen int
	dirs    Direction
	written atomic.Uint64
	failed  atomic.Uint64
	err     error
}

// errWriter keeps the underlying writer's error, which pcapgo formats away.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil && e.err == nil {
		e.err = err
	}
	return n, err
}

// PcapOptions shape a PcapWriter; the zero value captures whole frames up
// to 65535 bytes in both directions.
type PcapOptions struct {
	Snaplen    int       // bytes kept per frame (default 65535)
	Directions Direction // In, Out or In|Out (default both)
}

// NewPcapWriter writes the pcap file header to w and returns the tap.
func NewPcapWriter(w io.Writer, opts PcapOptions) (*PcapWriter, error) {
	if w == nil {
		return nil, opErr("pcap", "new writer: nil io.Writer", unix.EINVAL)
	}
	if opts.Snaplen <= 0 {
		opts.Snaplen = 65535
	}
	if opts.Directions == 0 {
		opts.Directions = In | Out
	}
	p := &PcapWriter{snaplen: opts.Snaplen, dirs: opts.Directions}
	p.ew.w = w
	p.w = pcapgo.NewWriter(&p.ew)
	if err := p.w.WriteFileHeader(uint32(opts.Snaplen), layers.LinkTypeEthernet); err != nil {
		if p.ew.err != nil {
			err = p.ew.err
		}
		return nil, opErr("pcap", "write file header", err)
	}
	return p, nil
}

// Tap writes one frame.
func (p *PcapWriter) Tap(frame []byte, dir Direction) {
	p.TapQueued(frame, dir, time.Now(), len(frame))
}

// Err is the first write error, nil if every frame was written.
func (p *PcapWriter) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return opErr("pcap", "write packet", p.err)
	}
	return nil
}

// Stats are the frames written and those lost to write errors.
func (p *PcapWriter) Stats() (written, failed uint64) {
	return p.written.Load(), p.failed.Load()
}
