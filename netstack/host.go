package netstack

import (
	"context"
	"errors"
	"fmt"
	"html"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/virtif"
)

// HostConfig shapes a Host.
type HostConfig struct {
	// Addrs are the host's addresses, IPv4 and IPv6 (at least one).
	Addrs []netip.Prefix
	// Gateway, if valid, is the default route of its family.
	Gateway netip.Addr
	// EchoPort, if > 0, runs a TCP echo service (RFC 862) on that port.
	EchoPort int
	// UDPEchoPort, if > 0, runs a UDP echo service (RFC 862) on that
	// port: each datagram goes back to its sender (up to 2048 bytes of it).
	UDPEchoPort int
	// DiscardPort, if > 0, runs a TCP discard service (RFC 863) on that
	// port: a sink for bulk-transfer benchmarks.
	DiscardPort int
	// HTTPAddr, if set, serves the status page on it: ":80" listens on every
	// address, "0.0.0.0:80" on every IPv4 one, "[::]:80" on every address
	// (gVisor's IPv6 sockets are dual-stack), "198.18.0.3:8080" on one.
	HTTPAddr string
	// StatusFunc, if set, adds its text to the status page, which anyone
	// on the segment can read: counters, not configuration.
	StatusFunc func(w io.Writer)
	// StatusCounter, if set, gives the interface counters the status page
	// shows: the vif's own, nothing a stranger on the segment should not
	// learn (a backend's counters of the whole NIC or of the host
	// kernel's traffic, names that give its queues away). Without it the
	// page shows the interface's Stats without their Backend counters,
	// which a backend may share with other interfaces.
	StatusCounter func() virtif.Stats
	// Limits bound what the services take from strangers; zero fields get
	// the defaults.
	Limits Limits
	// Probe is the check that nobody on the segment holds Addrs, made
	// before they are added (and then announced): ARP probes for IPv4,
	// duplicate address detection for IPv6. An address someone answers
	// for fails NewHost with a *ConflictError naming who.
	Probe ProbeConfig
	// Stack shapes the stack.
	Stack StackConfig
}

// Limits bound the services of a Host: everyone on the segment can reach
// them, so no client may hold more than a bounded share for a bounded time.
type Limits struct {
	// MaxConns caps the connections open at once across the echo, discard
	// and HTTP services (default DefaultMaxConns). One more is closed as
	// soon as it is accepted, and counted (Counters.ConnsRefused).
	MaxConns int
	// IdleTimeout closes a connection that sends nothing for this long
	// (default DefaultIdleTimeout); for HTTP it also bounds reading one
	// request and the wait between requests.
	IdleTimeout time.Duration
	// WriteTimeout closes a connection whose peer does not take what is
	// written to it within this time (default DefaultWriteTimeout): an
	// echo client that never reads holds only the echo's buffer and the
	// socket's send buffer, and only this long.
	WriteTimeout time.Duration
	// MaxHeaderBytes bounds an HTTP request's header (default
	// DefaultMaxHeaderBytes); a longer one is answered 431.
	MaxHeaderBytes int
}

// The defaults of Limits.
const (
	DefaultMaxConns       = 64
	DefaultIdleTimeout    = 60 * time.Second
	DefaultWriteTimeout   = 10 * time.Second
	DefaultMaxHeaderBytes = 8 << 10
	echoBufferSize        = 16 << 10 // what the echo service holds of a connection's data
)

// httpHeaderSlack is what net/http reads beyond Server.MaxHeaderBytes
// (its 4 KiB bufio slack); the server is given MaxHeaderBytes less it.
const httpHeaderSlack = 4096

// WithDefaults is l with its zero fields set to the defaults.
func (l Limits) WithDefaults() Limits {
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultMaxConns
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = DefaultIdleTimeout
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = DefaultWriteTimeout
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	return l
}

// Host is a userspace host on a virtif interface: a Stack with its
// addresses, answering ping (IPv4 and IPv6, the stack does that itself) and
// running the services HostConfig asks for.
type Host struct {
	st  *Stack
	cfg HostConfig

	lns   []net.Listener // echo and discard
	udp   net.PacketConn // UDP echo
	srv   *http.Server
	httpL []net.Listener

	httpRequests atomic.Uint64
	echoConns    atomic.Uint64
	udpEchoes    atomic.Uint64
	refused      atomic.Uint64 // connections over Limits.MaxConns
	timedOut     atomic.Uint64 // connections closed by a deadline
	open         atomic.Int64  // connections open now, against MaxConns

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// NewHost brings ifc up, puts a Stack on it with cfg's addresses and routes,
// and starts the services. ifc must have its backend (ENXIO otherwise); EINVAL
// without addresses or for a bad HTTPAddr. Close stops everything and leaves
// ifc open (and up).
func NewHost(ifc *virtif.Interface, cfg HostConfig) (h *Host, err error) {
	if len(cfg.Addrs) == 0 {
		return nil, fmt.Errorf("netstack: new host: no address: %w", unix.EINVAL)
	}
	var httpAPs []netip.AddrPort
	if cfg.HTTPAddr != "" {
		if httpAPs, err = parseListenAddr(cfg.HTTPAddr); err != nil {
			return nil, fmt.Errorf("netstack: new host: http address %q: %w", cfg.HTTPAddr, err)
		}
	}
	st, err := NewStack(ifc, cfg.Stack)
	if err != nil {
		return nil, err
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	host := &Host{st: st, cfg: cfg, conns: map[net.Conn]struct{}{}}
	defer func() {
		if err != nil {
			_ = host.Close()
		}
	}()
	h = host
	if err := ifc.Up(); err != nil {
		return nil, fmt.Errorf("netstack: new host: %w", err)
	}
	var addrs []netip.Addr
	for _, p := range cfg.Addrs {
		addrs = append(addrs, p.Addr())
	}
	if !cfg.Probe.Off {
		interval := cfg.Probe.Interval
		if interval <= 0 {
			interval = defaultProbeInterval
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*interval+10*time.Second) // a bound, never reached
		err := st.Probe(ctx, addrs, cfg.Probe)
		cancel()
		if err != nil {
			return nil, err
		}
	}
	var has6 bool
	for _, p := range cfg.Addrs {
		if err := st.AddAddress(p); err != nil {
			return nil, err
		}
		has6 = has6 || p.Addr().Is6() && !p.Addr().Is4In6()
	}
	if cfg.Gateway.IsValid() {
		if err := st.SetGateway(cfg.Gateway); err != nil {
			return nil, err
		}
	}
	// gVisor's IPv6 sockets are dual-stack: one on [::] serves IPv4 too.
	unspec := netip.IPv4Unspecified()
	if has6 {
		unspec = netip.IPv6Unspecified()
	}
	for _, svc := range []struct {
		port  int
		serve func(net.Conn)
	}{{cfg.EchoPort, h.echo}, {cfg.DiscardPort, h.discard}} {
		if svc.port <= 0 {
			continue
		}
		if svc.port > 65535 {
			return nil, fmt.Errorf("netstack: new host: port %d: %w", svc.port, unix.EINVAL)
		}
		l, err := st.ListenTCP(netip.AddrPortFrom(unspec, uint16(svc.port)))
		if err != nil {
			return nil, err
		}
		h.lns = append(h.lns, l)
		h.wg.Add(1)
		go h.acceptLoop(&limitListener{Listener: l, h: h}, svc.serve)
	}
	if cfg.UDPEchoPort > 0 {
		if err := h.startUDPEcho(unspec, cfg.UDPEchoPort); err != nil {
			return nil, err
		}
	}
	if len(httpAPs) > 0 {
		mux := http.NewServeMux()
		mux.HandleFunc("/", h.serveStatus)
		lim := cfg.Limits
		h.srv = &http.Server{Handler: mux,
			ReadHeaderTimeout: min(10*time.Second, lim.IdleTimeout), ReadTimeout: lim.IdleTimeout,
			WriteTimeout: lim.WriteTimeout, IdleTimeout: lim.IdleTimeout,
			MaxHeaderBytes: max(1, lim.MaxHeaderBytes-httpHeaderSlack),
			ErrorLog:       log.New(io.Discard, "", 0)} // a library does not log
		for _, ap := range httpAPs {
			if !ap.Addr().IsValid() {
				ap = netip.AddrPortFrom(unspec, ap.Port())
			}
			l, err := st.ListenTCP(ap)
			if err != nil {
				return nil, err
			}
			h.httpL = append(h.httpL, l)
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				_ = h.srv.Serve(&limitListener{Listener: l, h: h}) // returns http.ErrServerClosed at Close
			}()
		}
	}
	return h, nil
}

// parseListenAddr turns ":80", "0.0.0.0:80", "[::]:80" or "ip:port" into
// the addresses to listen on.
func parseListenAddr(s string) ([]netip.AddrPort, error) {
	hostPart, portPart, err := net.SplitHostPort(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", unix.EINVAL, err)
	}
	port, err := strconv.ParseUint(portPart, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("bad port: %w", unix.EINVAL)
	}
	if hostPart == "" { // every address: filled in once the families are known
		return []netip.AddrPort{netip.AddrPortFrom(netip.Addr{}, uint16(port))}, nil
	}
	a, err := netip.ParseAddr(hostPart)
	if err != nil {
		return nil, fmt.Errorf("bad address: %w", unix.EINVAL)
	}
	return []netip.AddrPort{netip.AddrPortFrom(a.Unmap(), uint16(port))}, nil
}

// Stack is the host's stack.
func (h *Host) Stack() *Stack { return h.st }

// HTTPAddrs are the addresses the status page is served on.
func (h *Host) HTTPAddrs() []net.Addr {
	var out []net.Addr
	for _, l := range h.httpL {
		out = append(out, l.Addr())
	}
	return out
}

func (h *Host) acceptLoop(l net.Listener, serve func(net.Conn)) {
	defer h.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			return // the listener was closed
		}
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			_ = c.Close()
			return
		}
		h.conns[c] = struct{}{}
		h.wg.Add(1)
		h.mu.Unlock()
		go func() {
			defer h.wg.Done()
			serve(c)
			_ = c.Close()
			h.mu.Lock()
			delete(h.conns, c)
			h.mu.Unlock()
		}()
	}
}

// Limits are the host's limits, defaults filled in.
func (h *Host) Limits() Limits { return h.cfg.Limits }

// limitListener hands out at most Limits.MaxConns connections at once, for
// all the host's listeners together; one more is closed at once.
type limitListener struct {
	net.Listener
	h *Host
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.h.open.Add(1) > int64(l.h.cfg.Limits.MaxConns) {
			l.h.open.Add(-1)
			l.h.refused.Add(1)
			_ = c.Close()
			continue
		}
		return &limitedConn{Conn: c, h: l.h}, nil
	}
}

// limitedConn gives its place back at the first Close.
type limitedConn struct {
	net.Conn
	h    *Host
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.h.open.Add(-1) })
	return err
}

// copyBounded copies what c sends to w (c itself for echo), through one
// buffer of echoBufferSize, until c ends, stays silent for IdleTimeout or
// does not take a write within WriteTimeout (then the connection counts as
// timed out).
func (h *Host) copyBounded(w io.Writer, c net.Conn) {
	buf := make([]byte, echoBufferSize)
	lim := h.cfg.Limits
	for {
		_ = c.SetReadDeadline(time.Now().Add(lim.IdleTimeout))
		n, err := c.Read(buf)
		if n > 0 {
			_ = c.SetWriteDeadline(time.Now().Add(lim.WriteTimeout))
			if _, werr := w.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				h.timedOut.Add(1)
			}
			return
		}
	}
}

func (h *Host) echo(c net.Conn) {
	h.echoConns.Add(1)
	h.copyBounded(c, c)
}

func (h *Host) discard(c net.Conn) { h.copyBounded(io.Discard, c) }

// Counters are what a Host has answered, to tell which path a request took
// (the userspace stack, or the host kernel sharing the NIC).
type Counters struct {
	EchoRepliesV4 uint64 // ICMP echo replies sent
	EchoRepliesV6 uint64 // ICMPv6 echo replies sent
	TCPAccepted   uint64 // TCP connections accepted (any service)
	EchoConns     uint64 // connections to the echo service
	UDPEchoes     uint64 // datagrams the UDP echo service sent back
	HTTPRequests  uint64 // requests to the status page
	ConnsRefused  uint64 // connections closed at once: Limits.MaxConns were open
	ConnsTimedOut uint64 // echo and discard connections closed by a deadline
	ConnsOpen     uint64 // connections open now
}

// Counters returns the host's counters.
func (h *Host) Counters() Counters {
	ss := h.st.Netstack().Stats()
	return Counters{
		EchoRepliesV4: ss.ICMP.V4.PacketsSent.EchoReply.Value(),
		EchoRepliesV6: ss.ICMP.V6.PacketsSent.EchoReply.Value(),
		TCPAccepted:   ss.TCP.PassiveConnectionOpenings.Value(),
		EchoConns:     h.echoConns.Load(),
		UDPEchoes:     h.udpEchoes.Load(),
		HTTPRequests:  h.httpRequests.Load(),
		ConnsRefused:  h.refused.Load(),
		ConnsTimedOut: h.timedOut.Load(),
		ConnsOpen:     uint64(max(0, h.open.Load())),
	}
}

// WriteStatus writes the status page's text: the interface's name, MAC,
// MTU, flags and addresses (what any host on the segment sees of it
// anyway), its counters (StatusCounter's) and those of its stack (which
// serves this interface alone), the services' connection counts, and
// StatusFunc's text. It leaves out the link string (which NIC, its queues
// and settings), counters of the NIC or host beyond the interface, and
// anything else about the machine: the page is served to whoever asks.
func (h *Host) WriteStatus(w io.Writer) {
	ifc := h.st.Interface()
	st := h.statusCounters()
	fmt.Fprintf(w, "interface %s  mac %s  mtu %d  flags %s\n", ifc.Name(), ifc.HardwareAddr(), ifc.MTU(), ifc.Flags())
	for _, p := range h.st.Addresses() {
		fmt.Fprintf(w, "inet %s\n", p)
	}
	fmt.Fprintf(w, "rx packets %d bytes %d errors %d drops %d multicast %d\n", st.IPackets, st.IBytes, st.IErrors, st.IDrops, st.IMcasts)
	fmt.Fprintf(w, "tx packets %d bytes %d errors %d drops %d multicast %d\n", st.OPackets, st.OBytes, st.OErrors, st.ODrops, st.OMcasts)
	for _, b := range st.Backend {
		fmt.Fprintf(w, "%s %d\n", b.Name, b.Value)
	}
	if es := h.st.Endpoint().Stats(); es.GRO {
		fmt.Fprintf(w, "gro frames %d packets %d dropped %d\n", es.GROFrames, es.GROPackets, es.GRODropped)
	}
	ss := h.st.Netstack().Stats()
	fmt.Fprintf(w, "tcp active %d passive %d established %d resets-sent %d\n",
		ss.TCP.ActiveConnectionOpenings.Value(), ss.TCP.PassiveConnectionOpenings.Value(),
		ss.TCP.CurrentEstablished.Value(), ss.TCP.ResetsSent.Value())
	fmt.Fprintf(w, "icmp4 echo-requests %d echo-replies-sent %d  icmp6 echo-requests %d echo-replies-sent %d\n",
		ss.ICMP.V4.PacketsReceived.EchoRequest.Value(), ss.ICMP.V4.PacketsSent.EchoReply.Value(),
		ss.ICMP.V6.PacketsReceived.EchoRequest.Value(), ss.ICMP.V6.PacketsSent.EchoReply.Value())
	c := h.Counters()
	fmt.Fprintf(w, "services connections open %d (at most %d) refused %d timed-out %d  http requests %d\n",
		c.ConnsOpen, h.cfg.Limits.MaxConns, c.ConnsRefused, c.ConnsTimedOut, c.HTTPRequests)
	if h.cfg.StatusFunc != nil {
		h.cfg.StatusFunc(w)
	}
}

// statusCounters are the interface counters the status page shows.
func (h *Host) statusCounters() virtif.Stats {
	if h.cfg.StatusCounter != nil {
		return h.cfg.StatusCounter()
	}
	st := h.st.Interface().Stats()
	st.Backend = nil
	return st
}

func (h *Host) serveStatus(w http.ResponseWriter, r *http.Request) {
	h.httpRequests.Add(1)
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	var b bytesBuffer
	h.WriteStatus(&b)
	if r.URL.Query().Has("text") || r.Header.Get("Accept") == "text/plain" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write(b)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprintf(w, "<!doctype html><title>virtif-xdp %s</title><pre>%s</pre>\n",
		html.EscapeString(h.st.Interface().Name()), html.EscapeString(string(b)))
}

type bytesBuffer []byte

func (b *bytesBuffer) Write(p []byte) (int, error) { *b = append(*b, p...); return len(p), nil }

// Close stops the services (closing their connections), waits for their
// goroutines and closes the stack. The interface stays open. Calling it twice
// is fine.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	for c := range h.conns {
		_ = c.Close()
	}
	h.mu.Unlock()
	var errs []error
	if h.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := h.srv.Shutdown(ctx); err != nil {
			_ = h.srv.Close()
		}
		cancel()
	}
	for _, l := range h.lns {
		_ = l.Close()
	}
	if h.udp != nil {
		_ = h.udp.Close()
	}
	h.wg.Wait()
	errs = append(errs, h.st.Close())
	return errors.Join(errs...)
}
