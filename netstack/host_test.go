package netstack

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// limitedPair is a server Host with limits and a client Host on one
// in-memory segment.
func limitedPair(t *testing.T, lim Limits) (srv, cli *Host) {
	t.Helper()
	c := newCloner(t)
	seg := segName(t)
	srvIfc, cliIfc := memIfc(t, c, seg), memIfc(t, c, seg)
	srv, err := NewHost(srvIfc, HostConfig{Addrs: []netip.Prefix{srv4}, EchoPort: 7, DiscardPort: 9, HTTPAddr: ":80", Limits: lim})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	cli, err = NewHost(cliIfc, HostConfig{Addrs: []netip.Prefix{cli4}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return srv, cli
}

// waitCond polls cond; the deadline only bounds a failing test.
func waitCond(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// closedByPeer: reading c ends (EOF or reset) within 10 s.
func closedByPeer(c net.Conn) error {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, c)
	if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("still open after 10s")
	}
	return nil
}

// At most MaxConns connections at once across the services: one more is
// closed at once and counted; when one ends, its place is free again.
func TestHostConnLimit(t *testing.T) {
	srv, cli := limitedPair(t, Limits{MaxConns: 2})
	ctx := testCtx(t)
	echo := netip.AddrPortFrom(srv4.Addr(), 7)
	a, err := cli.Stack().DialTCP(ctx, echo)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	echoCheck(t, a, 1000)
	b, err := cli.Stack().DialTCP(ctx, netip.AddrPortFrom(srv4.Addr(), 80))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !waitCond(10*time.Second, func() bool { return srv.Counters().ConnsOpen == 2 }) {
		t.Fatalf("open connections %d, want 2", srv.Counters().ConnsOpen)
	}
	third, err := cli.Stack().DialTCP(ctx, echo)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if err := closedByPeer(third); err != nil {
		t.Errorf("a connection over the limit: %v", err)
	}
	if c := srv.Counters(); c.ConnsRefused != 1 || c.ConnsOpen != 2 {
		t.Errorf("refused %d open %d, want 1 and 2", c.ConnsRefused, c.ConnsOpen)
	}
	a.Close()
	if !waitCond(10*time.Second, func() bool { return srv.Counters().ConnsOpen == 1 }) {
		t.Fatalf("a closed connection kept its place: open %d", srv.Counters().ConnsOpen)
	}
	d, err := cli.Stack().DialTCP(ctx, echo)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	echoCheck(t, d, 1000)
}

// An echo client that sends without ever reading is cut off once a write
// waits WriteTimeout: it does not hold the service's memory for as long
// as it likes.
func TestHostEchoNonReader(t *testing.T) {
	srv, cli := limitedPair(t, Limits{WriteTimeout: 500 * time.Millisecond})
	c, err := cli.Stack().DialTCP(testCtx(t), netip.AddrPortFrom(srv4.Addr(), 7))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() {
		chunk := make([]byte, 64<<10)
		_ = c.SetWriteDeadline(time.Now().Add(20 * time.Second))
		for {
			if _, err := c.Write(chunk); err != nil {
				done <- err
				return
			}
		}
	}()
	if !waitCond(10*time.Second, func() bool { return srv.Counters().ConnsTimedOut == 1 && srv.Counters().ConnsOpen == 0 }) {
		t.Fatalf("the non-reading echo client still holds its connection: %+v", srv.Counters())
	}
	c.Close()
	<-done
}

// A connection that sends nothing is closed after IdleTimeout, on echo and
// on HTTP (a header that never ends: slowloris).
func TestHostIdleTimeout(t *testing.T) {
	srv, cli := limitedPair(t, Limits{IdleTimeout: 300 * time.Millisecond})
	for _, port := range []uint16{7, 9, 80} {
		c, err := cli.Stack().DialTCP(testCtx(t), netip.AddrPortFrom(srv4.Addr(), port))
		if err != nil {
			t.Fatal(err)
		}
		if port == 80 {
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n")
		}
		if err := closedByPeer(c); err != nil {
			t.Errorf("port %d, silent client: %v", port, err)
		}
		c.Close()
	}
	if !waitCond(10*time.Second, func() bool { return srv.Counters().ConnsOpen == 0 }) {
		t.Errorf("connections left open: %+v", srv.Counters())
	}
}

// A request header beyond MaxHeaderBytes (default 8 KiB) is refused with
// 431, not read into memory.
func TestHostHeaderLimit(t *testing.T) {
	_, cli := limitedPair(t, Limits{})
	c, err := cli.Stack().DialTCP(testCtx(t), netip.AddrPortFrom(srv4.Addr(), 80))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go fmt.Fprintf(c, "GET /?text HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 64<<10))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a 64 KiB header: %s, want 431", resp.Status)
	}
}

// The status page shows counters, not the link string (which NIC, its
// settings): a stranger on the segment can read it.
func TestHostStatusPageExposes(t *testing.T) {
	srv, cli := limitedPair(t, Limits{})
	body := httpGet(t, stackDialer(cli.Stack()), "http://198.18.0.3/?text")
	link, _ := srv.Stack().Interface().LinkStr()
	if strings.Contains(body, link) || strings.Contains(body, "link ") {
		t.Errorf("status page shows the link string %q:\n%s", link, body)
	}
	for _, want := range []string{"rx packets", "tx packets", "tcp active", "services connections open 1 (at most 64) refused 0 timed-out 0"} {
		if !strings.Contains(body, want) {
			t.Errorf("status page lacks %q:\n%s", want, body)
		}
	}
}
