//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
)

// ping sends count ICMP or ICMPv6 echo requests from the peer's kernel to
// dst and reports how many were answered (each waits up to a second).
func (d *demoLab) ping(ctx context.Context, dst netip.Addr, count int) (bool, string) {
	network, src, proto := "ip4:icmp", demoPeerIP, 1
	var reqType, repType icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if dst.Is6() {
		network, src, proto = "ip6:ipv6-icmp", demoPeerIP6.Addr(), 58
		reqType, repType = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	var c *icmp.PacketConn
	err := d.lab.Do(netlab.Peer, func() (err error) {
		c, err = icmp.ListenPacket(network, src.String())
		return err
	})
	if err != nil {
		return false, fmt.Sprintf("opening an ICMP socket: %v", err)
	}
	defer c.Close()
	id := os.Getpid() & 0xffff
	replies := 0
	buf := make([]byte, 1500)
	for seq := 1; seq <= count && ctx.Err() == nil; seq++ {
		// The kernel fills in an ICMPv6 checksum itself.
		msg := icmp.Message{Type: reqType, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("virtif-xdp demo")}}
		b, _ := msg.Marshal(nil)
		if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			return false, fmt.Sprintf("%d/%d replies; send: %v", replies, count, err)
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				break // timeout: this one is lost
			}
			ip, _ := from.(*net.IPAddr)
			m, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil || ip == nil || !ip.IP.Equal(dst.AsSlice()) || m.Type != repType {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && e.Seq == seq {
				replies++
				break
			}
		}
	}
	return replies == count, fmt.Sprintf("%d/%d echo replies from %s", replies, count, dst)
}

// echoRoundTrip sends n random bytes through an echo connection and checks
// that they come back unchanged.
func echoRoundTrip(c net.Conn, n int) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	want := make([]byte, n)
	rand.Read(want)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		werr <- err
	}()
	got := make([]byte, n)
	_, rerr := io.ReadFull(c, got)
	if err := errors.Join(rerr, <-werr); err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%d bytes came back different", n)
	}
	return nil
}

// tcpEcho connects from the peer to the echo service at ap and sends n bytes
// through it.
func (d *demoLab) tcpEcho(ctx context.Context, ap netip.AddrPort, n int) (bool, string) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := d.lab.DialContext(netlab.Peer)(dctx, "tcp", ap.String())
	if err != nil {
		return false, fmt.Sprintf("connect: %v", err)
	}
	defer c.Close()
	if err := echoRoundTrip(c, n); err != nil {
		return false, fmt.Sprintf("echo: %v", err)
	}
	return true, fmt.Sprintf("%d bytes echoed", n)
}

// peerHTTPGet fetches url from the peer namespace and returns the body of a
// 200 answer.
func peerHTTPGet(ctx context.Context, lab *netlab.Lab, url string) (string, error) {
	client := &http.Client{
		Transport: &http.Transport{DialContext: lab.DialContext(netlab.Peer), DisableKeepAlives: true},
		Timeout:   10 * time.Second,
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("%s", resp.Status)
	}
	return string(b), nil
}

// httpStatus fetches vif0's status page from the peer.
func (d *demoLab) httpStatus(ctx context.Context, url string) (bool, string) {
	body, err := peerHTTPGet(ctx, d.lab, url)
	if err != nil {
		return false, fmt.Sprintf("GET: %v", err)
	}
	if !strings.Contains(body, "interface vif0") || !strings.Contains(body, "xdp_unicast") {
		return false, fmt.Sprintf("the page lacks vif0's counters: %.60q", body)
	}
	return true, fmt.Sprintf("200, %d bytes with vif0's counters", len(body))
}
