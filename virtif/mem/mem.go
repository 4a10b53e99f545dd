// Package mem is an in-memory virtif backend: interfaces whose link strings
// name the same segment ("mem:seg0") share one Ethernet segment, a hub on
// which every frame one member sends reaches every other member, so several
// interfaces can talk inside one process (tests, examples, benchmarks).
//
// Link string: mem:NAME[,queue=N]. Each member has a receive queue of N
// frames (default 1024) drained by its own goroutine, as a NIC's RX ring
// is drained by its interrupt; a frame arriving at a full queue is dropped
// and counted (mem_rx_queue_full), as a wire would lose it. Delivering on
// the member's goroutine, not the sender's, means an upper layer may answer
// a frame from inside its input handler without deadlocking, and may close
// its own interface there: Close then completes without waiting for the
// goroutine it runs on. Frames still queued when a member closes are
// counted (mem_rx_dying), never delivered. The goroutine delivers what
// its queue holds, up to 64 frames, as one batch and then ends it
// (virtif.BackendConfig.EndBatch; the backend is a virtif.BatchEnder).
//
// Importing the package registers the "mem" scheme.
package mem

import (
	"bytes"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/virtif-xdp/virtif-xdp/virtif"
	"golang.org/x/sys/unix"
)

// Scheme is the link-string scheme of this backend.
const Scheme = "mem"

// DefaultQueue is the default receive queue length, in frames.
const DefaultQueue = 1024

func init() {
	// The only possible error is a second "mem" registration; the first stays.
	_ = virtif.RegisterBackend(Scheme, Open)
}

type hub struct {
	name  string
	mu    sync.RWMutex // read-held while a frame is copied to the members
	ports []*port
}

var hubs struct {
	sync.Mutex
	m map[string]*hub
}

type frameBuf struct{ b []byte }

type port struct {
	hub      *hub
	name     string
	deliver  func([]byte)
	endBatch func()
	free     chan *frameBuf // empty buffers
	ready    chan *frameBuf // frames waiting for delivery
	done     chan struct{}
	wg       sync.WaitGroup
	dying    atomic.Bool
	closed   sync.Once
	runID    atomic.Uint64 // goid of the receive goroutine

	tx, rx, rxFull, rxDying atomic.Uint64
}

var (
	_ virtif.Backend         = (*port)(nil)
	_ virtif.Flusher         = (*port)(nil)
	_ virtif.Promiscuous     = (*port)(nil)
	_ virtif.MulticastFilter = (*port)(nil)
	_ virtif.MTULimiter      = (*port)(nil)
	_ virtif.StatsReporter   = (*port)(nil)
	_ virtif.BatchEnder      = (*port)(nil)
)

// Open attaches an interface to the segment its link string names and
// starts its receive goroutine. EINVAL for a malformed link string (the
// message names the bad key or value).
func Open(cfg virtif.BackendConfig) (virtif.Backend, error) {
	name, queue, err := parse(cfg.Link)
	if err != nil {
		return nil, err
	}
	if cfg.Deliver == nil {
		return nil, fmt.Errorf("mem: %s: no deliver function: %w", cfg.Name, unix.EINVAL)
	}
	deliver := cfg.Deliver
	if cfg.NewDeliver != nil {
		deliver = cfg.NewDeliver() // one receiving goroutine: counters of its own
	}
	p := &port{
		name:     cfg.Name,
		deliver:  deliver,
		endBatch: func() {},
		free:     make(chan *frameBuf, queue),
		ready:    make(chan *frameBuf, queue),
		done:     make(chan struct{}),
	}
	if cfg.EndBatch != nil {
		p.endBatch = cfg.EndBatch
	}
	for range queue {
		p.free <- &frameBuf{}
	}
	hubs.Lock()
	if hubs.m == nil {
		hubs.m = make(map[string]*hub)
	}
	h := hubs.m[name]
	if h == nil {
		h = &hub{name: name}
		hubs.m[name] = h
	}
	p.hub = h
	h.mu.Lock()
	h.ports = append(h.ports, p)
	h.mu.Unlock()
	hubs.Unlock()
	p.wg.Add(1)
	go p.run()
	return p, nil
}

func parse(link string) (name string, queue int, err error) {
	rest, ok := strings.CutPrefix(link, Scheme+":")
	if !ok {
		return "", 0, fmt.Errorf("mem: link string %q: scheme is not %q: %w", link, Scheme, unix.EINVAL)
	}
	parts := strings.Split(rest, ",")
	name, queue = parts[0], DefaultQueue
	if name == "" {
		return "", 0, fmt.Errorf("mem: link string %q: empty segment name: %w", link, unix.EINVAL)
	}
	for _, kv := range parts[1:] {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "queue":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 1<<16 {
				return "", 0, fmt.Errorf("mem: link string %q: queue=%q: want 1..65536: %w", link, v, unix.EINVAL)
			}
			queue = n
		default:
			return "", 0, fmt.Errorf("mem: link string %q: unknown key %q: %w", link, k, unix.EINVAL)
		}
	}
	return name, queue, nil
}

// run delivers queued frames, one goroutine per member. At Close the
// frames still queued are counted as dropped (mem_rx_dying), so every
// frame that reached the queue is delivered or counted. A batch is what
// the queue holds when the goroutine wakes, at most maxBatch frames; its
// end is told to the interface (virtif.BackendConfig.EndBatch).
func (p *port) run() {
	defer p.wg.Done()
	p.runID.Store(goid())
	for {
		select {
		case fb := <-p.ready:
			p.deliverOne(fb)
		batch:
			for range maxBatch - 1 {
				select {
				case fb := <-p.ready:
					p.deliverOne(fb)
				default:
					break batch
				}
			}
			p.endBatch()
		case <-p.done:
			for {
				select {
				case fb := <-p.ready:
					p.rxDying.Add(1)
					p.free <- fb
				default:
					return
				}
			}
		}
	}
}

// maxBatch bounds a receive batch, as an RX ring's batch is bounded.
const maxBatch = 64

func (p *port) deliverOne(fb *frameBuf) {
	if p.dying.Load() {
		p.rxDying.Add(1)
	} else {
		p.rx.Add(1) // before the upcall, whose effects may be observed first
		p.deliver(fb.b)
	}
	p.free <- fb
}

// goid is the calling goroutine's number, read from the first line of its
// stack trace ("goroutine 18 [running]:"). Close compares it with the
// receive goroutine's to know whether it was called from inside the
// member's own upcall, whose goroutine it then must not wait for.
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	var id uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			break
		}
		id = id*10 + uint64(c-'0')
	}
	return id
}

// Send copies the frame into a free buffer of every other member.
func (p *port) Send(segs [][]byte) error {
	if p.dying.Load() {
		return fmt.Errorf("mem: %s: send: %w", p.name, net.ErrClosed)
	}
	h := p.hub
	h.mu.RLock()
	for _, q := range h.ports {
		if q == p {
			continue
		}
		select {
		case fb := <-q.free:
			b := fb.b[:0]
			for _, s := range segs {
				b = append(b, s...)
			}
			fb.b = b
			q.ready <- fb // never blocks: ready holds at most every buffer
		default:
			q.rxFull.Add(1)
		}
	}
	h.mu.RUnlock()
	p.tx.Add(1)
	return nil
}

// Dying stops delivery; frames still queued are dropped.
func (p *port) Dying() error {
	p.dying.Store(true)
	return nil
}

// Close leaves the segment, stops delivery and waits for the receive
// goroutine, so nothing is delivered once it returns. Called from inside
// the member's own upcall (an input handler closing its interface), it
// completes all the same but does not wait for that goroutine, which is
// the caller: the goroutine ends when the upcall returns, delivering
// nothing more.
func (p *port) Close() error {
	p.closed.Do(func() {
		p.dying.Store(true)
		h := p.hub
		hubs.Lock()
		h.mu.Lock()
		for k, q := range h.ports {
			if q == p {
				h.ports = append(h.ports[:k], h.ports[k+1:]...)
				break
			}
		}
		if len(h.ports) == 0 && hubs.m[h.name] == h {
			delete(hubs.m, h.name)
		}
		h.mu.Unlock()
		hubs.Unlock()
		close(p.done)
		if goid() != p.runID.Load() {
			p.wg.Wait()
		}
	})
	return nil
}

// Flush does nothing: every Send is already on the segment.
func (p *port) Flush() error { return nil }

// SetPromisc does nothing: the hub already gives every member every frame
// and the interface filters.
func (p *port) SetPromisc(bool) error { return nil }

// SetMulticast does nothing, for the same reason.
func (p *port) SetMulticast(net.HardwareAddr, bool) error { return nil }

// MaxMTU allows frames up to 64 KiB with Ethernet and VLAN headers.
func (p *port) MaxMTU() int { return 65535 - virtif.EtherVLANHeaderLen }

// AppendStats reports frames sent into the segment, frames delivered, and
// frames lost to a full receive queue or to a dying interface.
func (p *port) AppendStats(dst []virtif.Stat) []virtif.Stat {
	return append(dst,
		virtif.Stat{Name: "mem_tx", Value: p.tx.Load()},
		virtif.Stat{Name: "mem_rx", Value: p.rx.Load()},
		virtif.Stat{Name: "mem_rx_queue_full", Value: p.rxFull.Load()},
		virtif.Stat{Name: "mem_rx_dying", Value: p.rxDying.Load()},
	)
}

// EndsBatches is true: every batch run delivers ends with EndBatch.
func (p *port) EndsBatches() bool { return true }

// Members returns how many interfaces are attached to the named segment.
func Members(segment string) int {
	hubs.Lock()
	defer hubs.Unlock()
	h := hubs.m[segment]
	if h == nil {
		return 0
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.ports)
}
