//go:build linux

package switchd

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Client is one connection to a switch: at most one tenant, which the switch
// removes when the connection closes.
type Client struct {
	path    string
	c       *net.UnixConn
	reqMu   sync.Mutex // one request at a time
	replies chan []byte
	done    chan struct{}
	errMu   sync.Mutex
	err     error // why the connection ended
	closed  bool
}

// Dial connects to the switch at path and says hello. Errors keep their
// errno: ENOENT or ECONNREFUSED without a switch there, EPROTONOSUPPORT for
// a switch of another protocol version.
func Dial(path string) (*Client, error) {
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("switch at %s: %w", path, err)
	}
	cl := &Client{path: path, c: conn, replies: make(chan []byte, 1), done: make(chan struct{})}
	go cl.read()
	if _, err := cl.do(Request{Op: "hello", Version: Version}, -1); err != nil {
		cl.Close()
		return nil, err
	}
	return cl, nil
}

func (cl *Client) read() {
	defer close(cl.done)
	buf := make([]byte, maxMessage)
	for {
		n, err := cl.c.Read(buf)
		if err == nil && n == 0 {
			err = errors.New("connection closed by the switch")
		}
		if err != nil {
			cl.errMu.Lock()
			if cl.closed {
				err = net.ErrClosed
			}
			cl.err = fmt.Errorf("switch at %s: %w (%w)", cl.path, err, unix.ENETDOWN)
			cl.errMu.Unlock()
			return
		}
		cl.replies <- append([]byte(nil), buf[:n]...)
	}
}

// Done is closed when the connection to the switch has ended.
func (cl *Client) Done() <-chan struct{} { return cl.done }

// Err says why the connection ended (nil while it is up); it wraps ENETDOWN.
func (cl *Client) Err() error {
	cl.errMu.Lock()
	defer cl.errMu.Unlock()
	return cl.err
}

// do sends req (with fd as SCM_RIGHTS when >= 0) and waits for the reply.
func (cl *Client) do(req Request, fd int) (Reply, error) {
	cl.reqMu.Lock()
	defer cl.reqMu.Unlock()
	b, err := encode(req)
	if err != nil {
		return Reply{}, err
	}
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	if _, _, err := cl.c.WriteMsgUnix(b, oob, nil); err != nil {
		return Reply{}, fmt.Errorf("switch at %s: %s: %w", cl.path, req.Op, err)
	}
	select {
	case m := <-cl.replies:
		var r Reply
		if err := json.Unmarshal(m, &r); err != nil {
			return Reply{}, fmt.Errorf("switch at %s: %s: bad reply: %v: %w", cl.path, req.Op, err, unix.EPROTO)
		}
		return r, replyErr(req.Op, r)
	case <-cl.done:
		return Reply{}, cl.Err()
	}
}

// Port is a tenant's port as the switch made it.
type Port struct {
	Port    int
	Ifname  string // the tenant end, in the namespace given to AddTenant
	Ifindex int
	MTU     int
}

// AddTenant makes this connection's tenant: its veth's tenant end is moved
// into the network namespace of the calling thread.
func (cl *Client) AddTenant(name string) (Port, error) {
	ns, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return Port{}, fmt.Errorf("switch: own network namespace: %w", err)
	}
	defer ns.Close()
	r, err := cl.do(Request{Op: "add", Name: name}, int(ns.Fd()))
	if err != nil {
		return Port{}, err
	}
	return Port{Port: r.Port, Ifname: r.Ifname, Ifindex: r.Ifindex, MTU: r.MTU}, nil
}

// Register adds (or, add false, removes) one of the tenant's addresses:
// kind "mac" (a unicast MAC: steered to it, and the source MACs it may send
// with), "group" (a multicast MAC) or "ipv4" (ARP requests for it).
func (cl *Client) Register(kind, addr string, add bool) error {
	_, err := cl.do(Request{Op: kind, Addr: addr, Add: add}, -1)
	return err
}

// Remove removes the tenant; the connection stays.
func (cl *Client) Remove() error {
	_, err := cl.do(Request{Op: "remove"}, -1)
	return err
}

// List returns every tenant of the switch with its counters.
func (cl *Client) List() ([]TenantInfo, error) {
	r, err := cl.do(Request{Op: "list"}, -1)
	return r.Tenants, err
}

// Stats returns the NIC's counters.
func (cl *Client) Stats() (NICInfo, error) {
	r, err := cl.do(Request{Op: "stats"}, -1)
	if r.NIC == nil {
		return NICInfo{}, err
	}
	return *r.NIC, err
}

// Close ends the connection; the switch removes the tenant.
func (cl *Client) Close() error {
	cl.errMu.Lock()
	cl.closed = true
	cl.errMu.Unlock()
	err := cl.c.Close()
	<-cl.done
	return err
}
