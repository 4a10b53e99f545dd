//go:build linux

package netstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/virtif"
)

const (
	sinkPort  = 5001
	bulkChunk = 64 << 10
)

// serveSink reads each accepted connection to EOF, then writes one byte, so
// a sender knows every byte arrived. The returned func waits for its
// goroutines once l is closed.
func serveSink(l net.Listener) (wait func()) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if _, err := io.Copy(io.Discard, c); err == nil {
					_, _ = c.Write([]byte{1})
				}
			}()
		}
	}()
	return wg.Wait
}

// finish half-closes c and waits for the sink's byte: every byte sent has
// then been received.
func finish(c net.Conn) error {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return fmt.Errorf("%T cannot half-close", c)
	}
	if err := cw.CloseWrite(); err != nil {
		return err
	}
	var one [1]byte
	_, err := io.ReadFull(c, one[:])
	return err
}

// bulk sends n bytes over c to a sink and returns how long until all arrived.
func bulk(c net.Conn, n int64) (time.Duration, error) {
	buf := make([]byte, bulkChunk)
	start := time.Now()
	for sent := int64(0); sent < n; {
		m, err := c.Write(buf[:min(int64(len(buf)), n-sent)])
		if err != nil {
			return 0, err
		}
		sent += int64(m)
	}
	if err := finish(c); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// benchBulk is the body of the b.N benchmarks: b.N writes of 64 KiB over c,
// reported as Gbit/s.
func benchBulk(b *testing.B, c net.Conn) {
	b.ReportAllocs()
	b.SetBytes(bulkChunk)
	buf := make([]byte, bulkChunk)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := finish(c); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)*bulkChunk*8/time.Since(start).Seconds()/1e9, "Gbit/s")
}

// BenchmarkTCPMem: TCP bulk transfer between two userspace stacks on the
// in-memory backend (both stacks' cost in one process).
func BenchmarkTCPMem(b *testing.B) {
	c := newCloner(b)
	seg := segName(b)
	var sts [2]*Stack
	for i, p := range []netip.Prefix{srv4, cli4} {
		ifc := memIfc(b, c, seg)
		if err := ifc.Up(); err != nil {
			b.Fatal(err)
		}
		st, err := NewStack(ifc, StackConfig{})
		if err != nil {
			b.Fatal(err)
		}
		sts[i] = st
		defer sts[i].Close()
		if err := sts[i].AddAddress(p); err != nil {
			b.Fatal(err)
		}
	}
	l, err := sts[0].ListenTCP(netip.AddrPortFrom(netip.Addr{}, sinkPort))
	if err != nil {
		b.Fatal(err)
	}
	wait := serveSink(l)
	defer wait()
	defer l.Close()
	conn, err := sts[1].DialTCP(testCtx(b), netip.AddrPortFrom(srv4.Addr(), sinkPort))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	benchBulk(b, conn)
}

// BenchmarkTCPXDP: the peer namespace's kernel TCP sends into the userspace
// stack on an XDP vif over a veth.
func BenchmarkTCPXDP(b *testing.B) {
	labtest.RequireRoot(b)
	lab := labtest.NewT(b, netlab.Options{})
	peerTxChecksumOff(b, lab)
	dial, closeFn, err := openXDPSink(lab)
	if err != nil {
		b.Fatal(err)
	}
	defer closeFn()
	conn, err := dial(testCtx(b))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	benchBulk(b, conn)
}

// A sink target: dial connects from the peer namespace's kernel to it.
type openFunc func(lab *netlab.Lab) (dial func(context.Context) (net.Conn, error), closeFn func(), err error)

func peerDial(lab *netlab.Lab, ap netip.AddrPort) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		return lab.DialContext(netlab.Peer)(ctx, "tcp", ap.String())
	}
}

// openXDPSink: the userspace stack on an XDP vif at 198.18.0.3, GRO on
// (the default).
func openXDPSink(lab *netlab.Lab) (func(context.Context) (net.Conn, error), func(), error) {
	return openXDPSinkWith(lab, EndpointOptions{})
}

// openXDPNoGROSink: the same with GRO off (EndpointOptions.NoGRO), as it
// was before GRO.
func openXDPNoGROSink(lab *netlab.Lab) (func(context.Context) (net.Conn, error), func(), error) {
	return openXDPSinkWith(lab, EndpointOptions{NoGRO: true})
}

func openXDPSinkWith(lab *netlab.Lab, eo EndpointOptions) (func(context.Context) (net.Conn, error), func(), error) {
	c, err := virtif.NewCloner(virtif.ClonerConfig{})
	if err != nil {
		return nil, nil, err
	}
	var ifc *virtif.Interface
	err = lab.Do(netlab.Host, func() error {
		if ifc, err = c.Create(); err != nil {
			return err
		}
		return ifc.SetLinkStr("xdp:" + lab.Link[netlab.Host] + os.Getenv("TCP_LINKOPTS"))
	})
	if mtu := benchMTU(); err == nil && mtu != virtif.DefaultMTU {
		if err = ifc.SetMTU(mtu); err != nil {
			err = fmt.Errorf("%w: %w", errMTU, err)
		}
	}
	if err == nil {
		err = ifc.Up()
	}
	if err != nil {
		_ = c.Close()
		return nil, nil, err
	}
	st, err := NewStack(ifc, StackConfig{Endpoint: eo, SendQueues: envInt("TCP_SENDQ", 0)})
	if err != nil {
		_ = c.Close()
		return nil, nil, err
	}
	var l net.Listener
	if err = st.AddAddress(srv4); err == nil {
		l, err = st.ListenTCP(netip.AddrPortFrom(netip.Addr{}, sinkPort))
	}
	if err != nil {
		_ = st.Close()
		_ = c.Close()
		return nil, nil, err
	}
	wait := serveSink(l)
	return peerDial(lab, netip.AddrPortFrom(srv4.Addr(), sinkPort)), func() {
		_ = l.Close()
		wait()
		_ = st.Close()
		_ = c.Close()
	}, nil
}

// errMTU: a receiver cannot take the benchmark's MTU (TCP_MTU).
var errMTU = errors.New("MTU not possible")

// benchMTU is TCP_MTU, the MTU of the lab's veth pair and of the
// receivers (default 1500).
func benchMTU() int { return envInt("TCP_MTU", virtif.DefaultMTU) }

var fdbasedAddr = netip.MustParsePrefix("198.18.0.5/24")

// openFdbasedSink: the same gVisor stack on gVisor's own AF_PACKET endpoint
// (link/fdbased, PACKET_RX_RING) bound to the host-side veth, at 198.18.0.5.
// The host kernel sees those frames too and drops them (not its MAC).
func openFdbasedSink(lab *netlab.Lab) (func(context.Context) (net.Conn, error), func(), error) {
	var fd int
	err := lab.Do(netlab.Host, func() error {
		var err error
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL))); err != nil {
			return os.NewSyscallError("socket", err)
		}
		sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: lab.Index[netlab.Host]}
		if err := unix.Bind(fd, sa); err != nil {
			unix.Close(fd)
			return os.NewSyscallError("bind", err)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	ep, err := fdbased.New(&fdbased.Options{
		FDs:                []int{fd},
		MTU:                uint32(benchMTU()),
		EthernetHeader:     true,
		Address:            tcpip.LinkAddress([]byte{0x02, 0, 0, 0, 0, 5}),
		PacketDispatchMode: fdbased.PacketMMap,
	})
	if err != nil {
		unix.Close(fd)
		return nil, nil, err
	}
	s := newGVisorStack()
	cleanup := func() {
		s.Destroy()
		unix.Close(fd)
	}
	pa := tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFromSlice(fdbasedAddr.Addr().AsSlice()), PrefixLen: 24},
	}
	if terr := s.CreateNIC(NICID, ep); terr != nil {
		cleanup()
		return nil, nil, asError(terr)
	}
	if terr := s.AddProtocolAddress(NICID, pa, stack.AddressProperties{}); terr != nil {
		cleanup()
		return nil, nil, asError(terr)
	}
	s.AddRoute(tcpip.Route{Destination: pa.AddressWithPrefix.Subnet(), NIC: NICID})
	l, err := gonet.ListenTCP(s, tcpip.FullAddress{NIC: NICID, Port: sinkPort}, ipv4.ProtocolNumber)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	wait := serveSink(l)
	return peerDial(lab, netip.AddrPortFrom(fdbasedAddr.Addr(), sinkPort)), func() {
		_ = l.Close()
		wait()
		cleanup()
	}, nil
}

// openKernelSink: the host kernel's own TCP at 198.18.0.1.
func openKernelSink(lab *netlab.Lab) (func(context.Context) (net.Conn, error), func(), error) {
	var l net.Listener
	err := lab.Do(netlab.Host, func() (err error) {
		l, err = net.Listen("tcp", fmt.Sprintf("%s:%d", labHost4, sinkPort))
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	wait := serveSink(l)
	return peerDial(lab, netip.AddrPortFrom(labHost4, sinkPort)), func() { _ = l.Close(); wait() }, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// BenchmarkTCPCompare measures TCP bulk transfer from the peer namespace's
// kernel into four receivers on the same veth, interleaved (A B C D A B C D
// ...): the userspace stack over the XDP vif with GRO (the default) and
// without (netstack-xdp-nogro), the same gVisor stack over gVisor's
// AF_PACKET endpoint (fdbased), and the host kernel's TCP. Each run sets up
// its receiver afresh (so the kernel run has no XDP program attached) and
// sends TCP_BYTES (default 256 MiB); TCP_ROUNDS (default 3) rounds, each
// with its ratios; the medians are reported in Gbit/s. The peer computes
// its checksums (tx offload off) for every receiver, as a real wire needs.
// One op is the whole set: run it with -benchtime 1x. TCP_SENDQ sets
// StackConfig.SendQueues of the XDP receivers, TCP_LINKOPTS options of
// their link string (",rxwait=spin"). TCP_MTU (default 1500) sets
// the MTU of the veth pair and of the receivers; a receiver that cannot
// take it (a vif whose backend's MaxMTU is lower) is reported as not
// possible and left out.
func BenchmarkTCPCompare(b *testing.B) {
	labtest.RequireRoot(b)
	rounds := envInt("TCP_ROUNDS", 3)
	mtu := benchMTU()
	size := int64(envInt("TCP_BYTES", 256<<20))
	targets := []struct {
		name string
		open openFunc
	}{
		{"netstack-xdp", openXDPSink},
		{"netstack-xdp-nogro", openXDPNoGROSink},
		{"netstack-fdbased", openFdbasedSink},
		{"kernel", openKernelSink},
	}
	lab := labtest.NewT(b, netlab.Options{MTU: mtu})
	peerTxChecksumOff(b, lab)
	fmt.Printf("MTU %d, %d bytes per run, %d rounds, started %s\n", mtu, size, rounds, time.Now().UTC().Format(time.RFC3339))
	for range b.N {
		gbps := map[string][]float64{}
		impossible := map[string]bool{}
		for round := range rounds {
			for _, tg := range targets {
				if impossible[tg.name] {
					continue
				}
				g, err := measureBulk(lab, tg.open, size)
				if errors.Is(err, errMTU) {
					fmt.Printf("%-18s not possible at MTU %d: %v\n", tg.name, mtu, err)
					impossible[tg.name] = true
					continue
				}
				if err != nil {
					b.Fatalf("%s round %d: %v", tg.name, round, err)
				}
				fmt.Printf("round %d %-18s %6.2f Gbit/s\n", round, tg.name, g)
				gbps[tg.name] = append(gbps[tg.name], g)
			}
			if !impossible["netstack-xdp"] {
				x, k := gbps["netstack-xdp"][round], gbps["kernel"][round]
				fmt.Printf("round %d ratio netstack-xdp/kernel %.2f  netstack-xdp-nogro/kernel %.2f  netstack-xdp/netstack-fdbased %.2f\n",
					round, x/k, gbps["netstack-xdp-nogro"][round]/k, x/gbps["netstack-fdbased"][round])
			}
		}
		for _, tg := range targets {
			v := gbps[tg.name]
			if len(v) == 0 {
				continue
			}
			slices.Sort(v)
			fmt.Printf("%-18s median %6.2f Gbit/s  min %6.2f  max %6.2f\n", tg.name, v[len(v)/2], v[0], v[len(v)-1])
			b.ReportMetric(v[len(v)/2], tg.name+"-Gbit/s")
		}
	}
}

func measureBulk(lab *netlab.Lab, open openFunc, size int64) (float64, error) {
	dial, closeFn, err := open(lab)
	if err != nil {
		return 0, err
	}
	defer closeFn()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dial(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	d, err := bulk(c, size)
	if err != nil {
		return 0, err
	}
	if d <= 0 {
		return 0, errors.New("no time measured")
	}
	return float64(size) * 8 / d.Seconds() / 1e9, nil
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
