//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// testCtx bounds a failing exchange; it measures nothing.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// run serves a userspace host on the lab's host-side veth. From the peer
// namespace, the kernel's ping reaches both it and the host kernel's own
// addresses on the same veth, over IPv4 and IPv6; Go's TCP reaches its echo
// service and status page. The host kernel's traffic never reaches the vif,
// and a cancel (Ctrl-C) ends it with exit 0 and no XDP program left.
// The peer's checksum offload stays on: --trust-rx-checksum copes with it.
func TestIntegrationRun(t *testing.T) {
	labtest.RequireRoot(t)
	lab := labtest.NewT(t, netlab.Options{})
	if err := addLabIPv6(lab); err != nil {
		t.Fatal(err)
	}
	r := startCmd(t, "run", "--netns", lab.NS[netlab.Host], "--link", "xdp:"+lab.Link[netlab.Host],
		"--addr", "198.18.0.3/24", "--addr", "fd00:198:18::3/64", "--trust-rx-checksum", "--metrics", "127.0.0.1:0", "--udp-echo", "7")
	r.waitRunning(t)
	if attached, err := xdpAttached(lab); err != nil || !attached {
		t.Fatalf("no XDP program on the NIC while run runs (%v)", err)
	}
	for _, want := range []string{"status http://198.18.0.3:80/ http://[fd00:198:18::3]:80/ (counters only)",
		"echo   tcp port 7 on every address", "echo   udp port 7 on every address", "limits 64 connections at once, idle 1m0s, writes 10s, HTTP headers 8 KiB"} {
		if !strings.Contains(r.out.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, r.out.String())
		}
	}
	// veth has no unicast filter: the kernel makes it promiscuous for the
	// vif's MAC, and the banner says so.
	if !strings.Contains(r.out.String(), "the NIC accepts the vif's MACs by promiscuous (the NIC has no unicast filter)") {
		t.Errorf("banner does not say how the NIC accepts the vif's MACs:\n%s", r.out.String())
	}
	ping := func(dst string) {
		t.Helper()
		if out, err := lab.Run(netlab.Peer, "ping", "-n", "-c", "2", "-i", "0.2", "-W", "5", dst); err != nil {
			t.Errorf("ping %s from the peer: %v\n%s", dst, err, out)
		}
	}

	// The host kernel's addresses first, while nothing else is in flight:
	// the vif receives nothing, the XDP program passes it all to the kernel.
	url := r.metricsURL(t)
	m0 := scrape(t, url)
	ping("198.18.0.1")
	ping("fd00:198:18::1")
	m1 := scrape(t, url)
	rx0, ok0 := metricValue(m0, "virtif_rx_packets_total")
	rx1, ok1 := metricValue(m1, "virtif_rx_packets_total")
	pass0, _ := metricValue(m0, "virtif_xdp_host_frames_total", `rule="pass"`)
	pass1, _ := metricValue(m1, "virtif_xdp_host_frames_total", `rule="pass"`)
	if !ok0 || !ok1 || rx1 != rx0 {
		t.Errorf("the vif received %v frames while the peer pinged the host kernel (found %v %v)", rx1-rx0, ok0, ok1)
	}
	if pass1-pass0 < 4 {
		t.Errorf("the XDP program passed %v frames to the host kernel, want >= 4 echo requests", pass1-pass0)
	}

	ping("198.18.0.3")
	ping("fd00:198:18::3")
	for _, dst := range []string{"198.18.0.3:7", "[fd00:198:18::3]:7"} {
		c, err := lab.DialContext(netlab.Peer)(testCtx(t), "tcp", dst)
		if err != nil {
			t.Fatalf("dial %s from the peer: %v", dst, err)
		}
		if err := echoRoundTrip(c, 100000); err != nil {
			t.Errorf("echo at %s: %v", dst, err)
		}
		c.Close()
	}
	for _, dst := range []string{"198.18.0.3:7", "[fd00:198:18::3]:7"} {
		if err := udpEchoRoundTrip(lab, dst); err != nil {
			t.Errorf("udp echo at %s: %v", dst, err)
		}
	}
	for _, u := range []string{"http://198.18.0.3/?text", "http://[fd00:198:18::3]/?text"} {
		body, err := peerHTTPGet(testCtx(t), lab, u)
		if err != nil {
			t.Fatalf("GET %s from the peer: %v", u, err)
		}
		for _, want := range []string{"interface vif0", "inet fd00:198:18::3/64", "rx packets", "xdp_unicast", "served by virtif-xdp run, frames demultiplexed by " + wantDemux(t) + ", up ",
			"services connections open 1 (at most 64)"} {
			if !strings.Contains(body, want) {
				t.Errorf("status page at %s lacks %q:\n%s", u, want, body)
			}
		}
		// Counters, not how the NIC is set up: anyone on the segment reads it.
		for _, not := range []string{lab.Link[netlab.Host], "xdp:", "attach", "queues", "accepts the vif's MACs"} {
			if strings.Contains(body, not) {
				t.Errorf("status page at %s shows %q:\n%s", u, not, body)
			}
		}
	}

	// curl, where installed, is one more of the kernel's own clients.
	httpRequests := 2
	if _, err := exec.LookPath("curl"); err == nil {
		out, err := lab.Run(netlab.Peer, "curl", "-sS", "-m", "10", "-H", "Accept: text/plain", "http://198.18.0.3/")
		if err != nil || !strings.Contains(string(out), "interface vif0") {
			t.Errorf("curl from the peer: %v\n%s", err, out)
		}
		httpRequests++
	} else {
		t.Log("no curl here: the status page was fetched with Go's client only")
	}

	m := scrape(t, url)
	for _, want := range []struct {
		name, label string
		v           float64
	}{
		{"virtif_stack_icmp_echo_replies_total", `family="ipv4"`, 2},
		{"virtif_stack_icmp_echo_replies_total", `family="ipv6"`, 2},
		{"virtif_stack_tcp_accepted_total", `vif="vif0"`, float64(2 + httpRequests)},
		{"virtif_stack_echo_connections_total", `vif="vif0"`, 2},
		{"virtif_stack_http_requests_total", `vif="vif0"`, float64(httpRequests)},
		{"virtif_stack_connections_closed_total", `reason="refused"`, 0},
		{"virtif_info", `mode="run"`, 1},
	} {
		if v, ok := metricValue(m, want.name, want.label); !ok || v != want.v {
			t.Errorf("%s{%s} = %v (found %v), want %v", want.name, want.label, v, ok, want.v)
		}
	}

	r.cancel()
	res := r.wait(t)
	if res.code != exitOK {
		t.Fatalf("run after cancel: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if want := fmt.Sprintf("answered: ping 2, ping6 2, tcp connections %d (echo 2), udp echoes 2, http requests %d", 2+httpRequests, httpRequests); !strings.Contains(res.stdout, want) {
		t.Errorf("summary lacks %q:\n%s", want, res.stdout)
	}
	if attached, err := xdpAttached(lab); err != nil || attached {
		t.Errorf("XDP program left on the NIC after run (attached %v, %v)", attached, err)
	}
	// The host kernel is alone on the NIC again and still answers.
	ping("198.18.0.1")
}

// SIGTERM ends run like Ctrl-C: exit 0, the vif and its XDP program gone.
func TestIntegrationRunSIGTERM(t *testing.T) {
	labtest.RequireRoot(t)
	bin := commandBinary(t)
	lab := labtest.NewT(t, netlab.Options{})
	cmd := exec.Command(bin, "run", "--netns", lab.NS[netlab.Host], "--link", "xdp:"+lab.Link[netlab.Host], "--addr", "198.18.0.3/24")
	var out, errb syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitLogged(t, &errb)
	if o, err := lab.Run(netlab.Peer, "ping", "-n", "-c", "1", "-W", "5", "198.18.0.3"); err != nil {
		t.Fatalf("ping the userspace host: %v\n%s", err, o)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v\n%s", err, errb.String())
	}
	if !strings.Contains(out.String(), "answered: ping 1,") {
		t.Errorf("summary after SIGTERM:\n%s", out.String())
	}
	if attached, err := xdpAttached(lab); err != nil || attached {
		t.Fatalf("XDP program left on the NIC after SIGTERM (attached %v, %v)", attached, err)
	}
}

func TestStatusURLs(t *testing.T) {
	p := []netip.Prefix{netip.MustParsePrefix("198.18.0.3/24"), netip.MustParsePrefix("fd00::3/64")}
	for _, c := range []struct {
		http string
		want string
	}{
		{":80", "http://198.18.0.3:80/ http://[fd00::3]:80/"},
		{"[::]:8080", "http://198.18.0.3:8080/ http://[fd00::3]:8080/"},
		{"0.0.0.0:80", "http://198.18.0.3:80/"},
		{"198.18.0.3:81", "http://198.18.0.3:81/"},
		{"[fd00::3]:81", "http://[fd00::3]:81/"},
	} {
		if got := strings.Join(statusURLs(c.http, p), " "); got != c.want {
			t.Errorf("statusURLs(%q) = %q, want %q", c.http, got, c.want)
		}
	}
}

// udpEchoRoundTrip sends one datagram from the peer to dst and expects it
// back (the peer already pinged dst: its neighbour entry is there).
func udpEchoRoundTrip(lab *netlab.Lab, dst string) error {
	c, err := lab.DialContext(netlab.Peer)(context.Background(), "udp", dst)
	if err != nil {
		return err
	}
	defer c.Close()
	msg, buf := []byte("udp echo "+dst), make([]byte, 256)
	if _, err := c.Write(msg); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != string(msg) {
		return fmt.Errorf("got %q back, want %q", buf[:n], msg)
	}
	return nil
}

// With busypoll the banner says whether busy polling is in effect: on a
// veth, whose XDP frames carry no NAPI id, it is a no-op, and napi=on says
// which NIC settings it set.
func TestIntegrationRunBusyPollBanner(t *testing.T) {
	labtest.RequireRoot(t)
	lab := labtest.NewT(t, netlab.Options{})
	r := startCmd(t, "run", "--netns", lab.NS[netlab.Host], "--link", "xdp:"+lab.Link[netlab.Host]+",busypoll=8,napi=on",
		"--addr", "198.18.0.3/24", "--echo", "0", "--http", "off", "--probe", "0")
	r.waitRunning(t)
	if want := "busy polling no-op so far: no socket has a NAPI id"; !strings.Contains(r.out.String(), want) ||
		!strings.Contains(r.out.String(), "napi_defer_hard_irqs 2, gro_flush_timeout 200000 ns") {
		t.Errorf("banner lacks %q and the NAPI settings:\n%s", want, r.out.String())
	}
}

// run --echo 0 --http off serves nothing: a TCP connection from the peer
// to port 7 or 80 is refused (the vif's stack answers with a reset; the host
// kernel, which does not hold the address, would not answer at all), over
// IPv4 and IPv6, ping still answers, and the banner says the services are
// off (and gives no limits for services that do not run).
func TestIntegrationRunServicesOff(t *testing.T) {
	labtest.RequireRoot(t)
	lab := labtest.NewT(t, netlab.Options{})
	if err := addLabIPv6(lab); err != nil {
		t.Fatal(err)
	}
	r := startCmd(t, "run", "--netns", lab.NS[netlab.Host], "--link", "xdp:"+lab.Link[netlab.Host],
		"--addr", "198.18.0.3/24", "--addr", "fd00:198:18::3/64", "--trust-rx-checksum", "--echo", "0", "--http", "off")
	r.waitRunning(t)
	for _, want := range []string{"\n  echo   off\n", "\n  status off\n"} {
		if !strings.Contains(r.out.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, r.out.String())
		}
	}
	for _, not := range []string{"tcp port", "udp port", "http://", "limits "} {
		if strings.Contains(r.out.String(), not) {
			t.Errorf("banner says %q with the services off:\n%s", not, r.out.String())
		}
	}
	for _, dst := range []string{"198.18.0.3", "fd00:198:18::3"} {
		if out, err := lab.Run(netlab.Peer, "ping", "-n", "-c", "2", "-i", "0.2", "-W", "5", dst); err != nil {
			t.Errorf("ping %s: %v\n%s", dst, err, out)
		}
		for _, port := range []string{"7", "80"} {
			ap := net.JoinHostPort(dst, port)
			c, err := lab.DialContext(netlab.Peer)(testCtx(t), "tcp", ap)
			if err == nil {
				c.Close()
				t.Errorf("connect to %s from the peer succeeded, want refused", ap)
			} else if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("connect to %s from the peer: %v, want refused (a reset from the vif's stack)", ap, err)
			}
		}
	}
	r.cancel()
	if res := r.wait(t); res.code != exitOK || !strings.Contains(res.stdout, "http requests 0") {
		t.Errorf("exit %d, want 0 and no http request answered:\n%s%s", res.code, res.stdout, res.stderr)
	}
}
