package netstack_test

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/virtif-xdp/virtif-xdp/netstack"
	"github.com/virtif-xdp/virtif-xdp/virtif"
	_ "github.com/virtif-xdp/virtif-xdp/virtif/mem"
)

// A userspace host with a TCP echo service, and a second stack that pings
// it and talks to it, both on the in-memory segment "example". On a real
// NIC the link string is "xdp:eth0" (set inside the NIC's namespace).
func ExampleNewHost() {
	c, err := virtif.NewCloner(virtif.ClonerConfig{})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	var ifcs [2]*virtif.Interface
	for i := range ifcs {
		if ifcs[i], err = c.Create(); err != nil {
			panic(err)
		}
		if err := ifcs[i].SetLinkStr("mem:example"); err != nil {
			panic(err)
		}
	}

	server, err := netstack.NewHost(ifcs[0], netstack.HostConfig{
		Addrs:    []netip.Prefix{netip.MustParsePrefix("198.18.0.3/24")},
		EchoPort: 7,
	})
	if err != nil {
		panic(err)
	}
	defer server.Close()
	client, err := netstack.NewHost(ifcs[1], netstack.HostConfig{
		Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.0.4/24")},
	})
	if err != nil {
		panic(err)
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := client.Stack().Ping(ctx, netip.MustParseAddr("198.18.0.3"), nil); err != nil {
		panic(err)
	}
	conn, err := client.Stack().DialTCP(ctx, netip.MustParseAddrPort("198.18.0.3:7"))
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("hello, userspace")); err != nil {
		panic(err)
	}
	reply := make([]byte, 16)
	if _, err := io.ReadFull(conn, reply); err != nil {
		panic(err)
	}
	fmt.Printf("echo: %s\n", reply)
	fmt.Printf("%+v\n", server.Counters())
	// Output:
	// echo: hello, userspace
	// {EchoRepliesV4:1 EchoRepliesV6:0 TCPAccepted:1 EchoConns:1 UDPEchoes:0 HTTPRequests:0 ConnsRefused:0 ConnsTimedOut:0 ConnsOpen:1}
}
