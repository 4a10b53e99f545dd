package xdp

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/bpf"
	"github.com/virtif-xdp/virtif-xdp/xsk"
)

// Scheme is the link-string scheme this backend registers: "xdp:IFNAME,...".
const Scheme = "xdp"

// Config is a parsed link string:
//
//	xdp:IFNAME[,queues=N|N-M|all][,mode=auto|copy|zerocopy][,attach=auto|native|generic]
//	    [,frame=2048|4096][,frames=N][,ring=N][,wakeup=on|off][,busypoll=N][,rxwait=poll|spin]
//	    [,umemmax=BYTES[K|M|G|T]][,sg=auto|on|off][,switch=PATH][,napi=on|off]
//
// The zero values of the numeric fields mean "the default".
type Config struct {
	Ifname string
	// Queues lists the NIC queues to serve; nil means every RX queue the NIC
	// uses (a frame for the vif can arrive on any of them): its active
	// channels where the driver reports them (ETHTOOL_GCHANNELS), else
	// every queue it allocated.
	Queues []int
	// Mode is how the sockets bind (key "mode": auto, copy, zerocopy);
	// the zero value is xsk.ModeAuto.
	Mode xsk.Mode
	// Attach is where the program runs (key "attach": auto, native,
	// generic); the zero value is bpf.AttachAuto.
	Attach bpf.AttachMode
	// FrameSize is the UMEM frame size: 2048 or 4096 (default 2048).
	FrameSize int
	// Frames is the number of UMEM frames per queue (default 4096), a power of two.
	Frames int
	// Ring is the size of each of the four rings (default 2048), a power of two.
	Ring int
	// Wakeup uses XDP_USE_NEED_WAKEUP (default on).
	Wakeup bool
	// BusyPoll, when > 0, enables SO_PREFER_BUSY_POLL with this budget and
	// makes the RX goroutines spin instead of sleeping in poll(2).
	BusyPoll int
	// NAPI (key napi=on, with busypoll only) sets the NIC's
	// napi_defer_hard_irqs and gro_flush_timeout while it is open, so
	// that preferred busy polling takes over from interrupts, and writes
	// the values found back at close (napi.go).
	NAPI bool
	// RXWait is how an RX goroutine waits for frames (key "rxwait").
	RXWait RXWait
	// UMEMMax caps the UMEM of the NIC, all queues together (frames ×
	// frame size × queues), in bytes; 0 means DefaultUMEMMax. A link
	// string asking for more is refused before anything is mapped.
	UMEMMax int64
	// SG is multi-buffer, frames longer than a UMEM frame in a chain of
	// descriptors (XDP_USE_SG, 6.6; the program loaded as xdp.frags, 5.18):
	// xsk.SGAuto (the link string's default, sg=auto) where the kernel and
	// the driver allow it, else single-buffer, saying why (Info); xsk.SGOn
	// or fail; xsk.SGOff (the zero value) single-buffer. With it the vif's
	// MTU may go up to the NIC's (MaxMTU).
	SG xsk.SGMode
	// Switch, when set, is the control socket of a `virtif-xdp switch`
	// that owns the NIC IFNAME: the vif gets a tenant port of its own
	// (a veth end moved into the calling thread's namespace), its MAC,
	// groups and IPv4 addresses are registered with the switch, and the
	// AF_XDP sockets bind on that veth end (see switch.go).
	Switch string
}

// RXWait is how an RX goroutine waits for frames (link-string key "rxwait").
type RXWait int

const (
	// RXWaitPoll (the zero value, "poll") sleeps in poll(2), so an idle
	// vif costs no CPU.
	RXWaitPoll RXWait = iota
	// RXWaitSpin ("spin") keeps checking the ring, a CPU per queue, as
	// xdpsock's default loop does: no wakeup costs on the kernel's side,
	// the highest receive rate.
	RXWaitSpin
)

func (w RXWait) String() string {
	switch w {
	case RXWaitPoll:
		return "poll"
	case RXWaitSpin:
		return "spin"
	}
	return fmt.Sprintf("RXWait(%d)", int(w))
}

// parseEnum returns the value among vals whose String is s.
func parseEnum[T fmt.Stringer](s string, vals ...T) (T, bool) {
	for _, v := range vals {
		if v.String() == s {
			return v, true
		}
	}
	var zero T
	return zero, false
}

// Defaults for the numeric keys.
const (
	DefaultFrameSize = xsk.DefaultFrameSize
	DefaultFrames    = xsk.DefaultNumFrames
	DefaultRing      = xsk.DefaultRingSize
	maxQueue         = 1023
	maxFrames        = 1 << 20
	maxRing          = 1 << 16
	// DefaultUMEMMax is the default ceiling of one NIC's UMEM (key
	// umemmax): the default frames on 128 queues.
	DefaultUMEMMax = 1 << 30
	maxUMEMMax     = 1 << 40
)

// ParseLinkStr parses an "xdp:" link string. Errors wrap unix.EINVAL and name
// the key and value at fault.
func ParseLinkStr(s string) (*Config, error) {
	rest, ok := strings.CutPrefix(s, Scheme+":")
	if !ok {
		return nil, fmt.Errorf("link string %q: want %q: %w", s, Scheme+":IFNAME[,key=value...]", unix.EINVAL)
	}
	parts := strings.Split(rest, ",")
	c := &Config{
		Ifname:    parts[0],
		FrameSize: DefaultFrameSize,
		Frames:    DefaultFrames,
		Ring:      DefaultRing,
		Wakeup:    true,
		SG:        xsk.SGAuto,
	}
	if c.Ifname == "" || len(c.Ifname) >= unix.IFNAMSIZ || strings.ContainsAny(c.Ifname, "/ =\x00") {
		return nil, fmt.Errorf("link string %q: bad interface name %q: %w", s, c.Ifname, unix.EINVAL)
	}
	seen := map[string]bool{}
	for _, kv := range parts[1:] {
		key, val, ok := strings.Cut(kv, "=")
		if !ok || key == "" {
			return nil, fmt.Errorf("link string %q: %q is not key=value: %w", s, kv, unix.EINVAL)
		}
		if seen[key] {
			return nil, fmt.Errorf("link string %q: key %q given twice: %w", s, key, unix.EINVAL)
		}
		seen[key] = true
		bad := func(want string) error {
			return fmt.Errorf("link string %q: key %q: bad value %q (want %s): %w", s, key, val, want, unix.EINVAL)
		}
		var err error
		switch key {
		case "queues":
			if c.Queues, err = parseQueues(val); err != nil {
				return nil, bad("N, N-M or all, queues 0.." + strconv.Itoa(maxQueue))
			}
		case "mode":
			if c.Mode, ok = parseEnum(val, xsk.ModeAuto, xsk.ModeCopy, xsk.ModeZeroCopy); !ok {
				return nil, bad("auto, copy or zerocopy")
			}
		case "attach":
			if c.Attach, ok = parseEnum(val, bpf.AttachAuto, bpf.AttachNative, bpf.AttachGeneric); !ok {
				return nil, bad("auto, native or generic")
			}
		case "frame":
			if c.FrameSize, err = strconv.Atoi(val); err != nil || (c.FrameSize != 2048 && c.FrameSize != 4096) {
				return nil, bad("2048 or 4096")
			}
		case "frames":
			if c.Frames, err = parsePow2(val, 64, maxFrames); err != nil {
				return nil, bad("a power of two from 64 to " + strconv.Itoa(maxFrames))
			}
		case "ring":
			if c.Ring, err = parsePow2(val, 64, maxRing); err != nil {
				return nil, bad("a power of two from 64 to " + strconv.Itoa(maxRing))
			}
		case "wakeup":
			switch val {
			case "on":
				c.Wakeup = true
			case "off":
				c.Wakeup = false
			default:
				return nil, bad("on or off")
			}
		case "busypoll":
			if c.BusyPoll, err = strconv.Atoi(val); err != nil || c.BusyPoll < 0 || c.BusyPoll > 65535 {
				return nil, bad("a budget from 0 (off) to 65535")
			}
		case "rxwait":
			if c.RXWait, ok = parseEnum(val, RXWaitPoll, RXWaitSpin); !ok {
				return nil, bad("poll or spin")
			}
		case "sg":
			if c.SG, ok = parseEnum(val, xsk.SGAuto, xsk.SGOn, xsk.SGOff); !ok {
				return nil, bad("auto, on or off")
			}
		case "napi":
			switch val {
			case "on":
				c.NAPI = true
			case "off":
				c.NAPI = false
			default:
				return nil, bad("on or off")
			}
		case "umemmax":
			if c.UMEMMax, err = parseBytes(val); err != nil || c.UMEMMax < 1<<20 || c.UMEMMax > maxUMEMMax {
				return nil, bad("bytes from 1M to 1T, with K, M, G or T (powers of 1024)")
			}
		case "switch":
			if val == "" || strings.ContainsRune(val, 0) {
				return nil, bad("the path of a switch's control socket")
			}
			c.Switch = val
		default:
			return nil, fmt.Errorf("link string %q: unknown key %q (known: queues, mode, attach, frame, frames, ring, wakeup, busypoll, rxwait, umemmax, sg, switch, napi): %w", s, key, unix.EINVAL)
		}
	}
	if c.NAPI && c.BusyPoll == 0 {
		return nil, fmt.Errorf("link string %q: napi=on sets the NIC up for busy polling: it needs busypoll=N: %w", s, unix.EINVAL)
	}
	if c.Frames < 2*c.Ring {
		return nil, fmt.Errorf("link string %q: frames=%d must be at least twice ring=%d (fill and TX both hold frames): %w", s, c.Frames, c.Ring, unix.EINVAL)
	}
	return c, nil
}

func parseQueues(v string) ([]int, error) {
	if v == "all" {
		return nil, nil
	}
	lo, hi, isRange := strings.Cut(v, "-")
	a, err := strconv.Atoi(lo)
	if err != nil || a < 0 || a > maxQueue {
		return nil, unix.EINVAL
	}
	b := a
	if isRange {
		if b, err = strconv.Atoi(hi); err != nil || b < a || b > maxQueue {
			return nil, unix.EINVAL
		}
	}
	q := make([]int, 0, b-a+1)
	for i := a; i <= b; i++ {
		q = append(q, i)
	}
	return q, nil
}

// parseBytes reads a byte count with an optional K, M, G or T suffix.
func parseBytes(v string) (int64, error) {
	shift := 0
	if n := len(v); n > 0 {
		switch v[n-1] {
		case 'K', 'k':
			shift = 10
		case 'M', 'm':
			shift = 20
		case 'G', 'g':
			shift = 30
		case 'T', 't':
			shift = 40
		}
		if shift > 0 {
			v = v[:n-1]
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > maxUMEMMax>>shift {
		return 0, unix.EINVAL
	}
	return n << shift, nil
}

// umemMax is the NIC's UMEM ceiling: UMEMMax or the default.
func (c *Config) umemMax() int64 {
	if c.UMEMMax > 0 {
		return c.UMEMMax
	}
	return DefaultUMEMMax
}

func parsePow2(v string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi || n&(n-1) != 0 {
		return 0, unix.EINVAL
	}
	return n, nil
}

// String renders c back as a link string that ParseLinkStr accepts.
func (c *Config) String() string {
	var b strings.Builder
	b.WriteString(Scheme + ":" + c.Ifname)
	if len(c.Queues) > 0 {
		fmt.Fprintf(&b, ",queues=%d-%d", c.Queues[0], c.Queues[len(c.Queues)-1])
	}
	fmt.Fprintf(&b, ",mode=%s,attach=%s,frame=%d,frames=%d,ring=%d", c.Mode, c.Attach, c.FrameSize, c.Frames, c.Ring)
	if c.Wakeup {
		b.WriteString(",wakeup=on")
	} else {
		b.WriteString(",wakeup=off")
	}
	fmt.Fprintf(&b, ",busypoll=%d,rxwait=%s", c.BusyPoll, c.RXWait)
	if c.UMEMMax > 0 {
		fmt.Fprintf(&b, ",umemmax=%d", c.UMEMMax)
	}
	fmt.Fprintf(&b, ",sg=%s", c.SG)
	if c.Switch != "" {
		b.WriteString(",switch=" + c.Switch)
	}
	if c.NAPI {
		b.WriteString(",napi=on")
	}
	return b.String()
}
