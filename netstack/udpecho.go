package netstack

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
)

// ListenUDP opens a UDP socket on the stack; an unspecified or invalid
// address of ap binds every address of ap's family (IPv4 when ap's address
// is invalid).
func (s *Stack) ListenUDP(ap netip.AddrPort) (net.PacketConn, error) {
	fa, proto := fullAddr(ap)
	c, err := gonet.DialUDP(s.s, &fa, nil, proto)
	if err != nil {
		return nil, fmt.Errorf("netstack: listen udp %s: %w", ap, err)
	}
	return c, nil
}

// udpEchoMax is the largest datagram the UDP echo service answers whole
// (one buffer for the service, whatever strangers send).
const udpEchoMax = 2048

// startUDPEcho runs the UDP echo service (RFC 862) on port: every
// datagram goes back to its sender as it came, from one buffer; a longer
// one is cut to udpEchoMax bytes, as a read into the buffer cuts it.
func (h *Host) startUDPEcho(unspec netip.Addr, port int) error {
	if port > 65535 {
		return fmt.Errorf("netstack: new host: udp port %d: %w", port, unix.EINVAL)
	}
	c, err := h.st.ListenUDP(netip.AddrPortFrom(unspec, uint16(port)))
	if err != nil {
		return err
	}
	h.udp = c
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		buf := make([]byte, udpEchoMax)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) || h.isClosed() {
					return
				}
				continue // a datagram's error (ICMP unreachable, say): go on
			}
			if _, err := c.WriteTo(buf[:n], from); err == nil {
				h.udpEchoes.Add(1)
			}
		}
	}()
	return nil
}

func (h *Host) isClosed() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closed
}
