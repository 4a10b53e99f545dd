//go:build linux

// Package switchd is `virtif-xdp switch`: one NIC shared by tenant
// processes, each with a veth pair of its own, the frames for each tenant's
// MACs steered in the kernel (package bpf's switch programs: DEVMAP
// redirects, no userspace relay), and the control protocol tenants use to
// get their port and register their addresses.
//
// # Control protocol (version 1)
//
// A unix SOCK_SEQPACKET socket; every message is one line of JSON (a
// Request or a Reply, newline-terminated), one connection per tenant. The
// first request must be {"op":"hello","version":1}; the reply carries the
// server's version. Then:
//
//	{"op":"add","name":"vif0"}   make this connection's tenant: a veth pair,
//	                             the tenant end moved into the network
//	                             namespace whose descriptor rides along
//	                             (SCM_RIGHTS; none: the switch's own)
//	{"op":"mac","addr":"02:..","add":true}      register a unicast MAC
//	{"op":"group","addr":"33:33:..","add":true} join a multicast group
//	{"op":"ipv4","addr":"198.18.0.3","add":true}
//	{"op":"remove"}              remove the tenant (the connection stays)
//	{"op":"list"}                every tenant with its counters
//	{"op":"stats"}               the NIC's counters (port 0)
//
// A reply is {"ok":true,...} or {"ok":false,"error":"...","errno":"EEXIST"}.
// When the connection closes (the tenant process exits or dies) the switch
// removes the tenant: its map entries and its veth pair.
package switchd

import (
	"encoding/json"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/bpf"
)

// Version is the control protocol's version.
const Version = 1

// maxMessage bounds one message.
const maxMessage = 64 << 10

// Request is one message from a client.
type Request struct {
	Op      string `json:"op"`
	Version int    `json:"version,omitempty"`
	Name    string `json:"name,omitempty"`
	Addr    string `json:"addr,omitempty"`
	Add     bool   `json:"add,omitempty"`
}

// Reply is the switch's answer to one Request.
type Reply struct {
	OK      bool   `json:"ok"`
	Error   string `json:"error,omitempty"`
	Errno   string `json:"errno,omitempty"`
	Version int    `json:"version,omitempty"`
	// add
	Port    int    `json:"port,omitempty"`
	Ifname  string `json:"ifname,omitempty"`  // the tenant end, in the tenant's namespace
	Ifindex int    `json:"ifindex,omitempty"` // its ifindex there
	MTU     int    `json:"mtu,omitempty"`
	// list
	Tenants []TenantInfo `json:"tenants,omitempty"`
	// stats
	NIC *NICInfo `json:"nic,omitempty"`
}

// TenantInfo describes one tenant for list.
type TenantInfo struct {
	Port     int                `json:"port"`
	Name     string             `json:"name,omitempty"`
	PID      int                `json:"pid"`
	Ifname   string             `json:"ifname"`    // tenant end
	SwitchIf string             `json:"switch_if"` // switch end
	MACs     []string           `json:"macs"`
	Groups   []string           `json:"groups"`
	IPv4s    []string           `json:"ipv4s"`
	Counters bpf.SwitchCounters `json:"counters"`
}

// NICInfo describes the NIC for stats.
type NICInfo struct {
	Name     string             `json:"name"`
	Ifindex  int                `json:"ifindex"`
	Attach   string             `json:"attach"`
	Tenants  int                `json:"tenants"`
	Counters bpf.SwitchCounters `json:"counters"`
}

// errReply turns err into a failed Reply, keeping its errno by name.
func errReply(err error) Reply {
	r := Reply{Error: err.Error()}
	var en unix.Errno
	if errors.As(err, &en) {
		r.Errno = unix.ErrnoName(en)
	}
	return r
}

// replyErr turns a failed Reply back into an error wrapping its errno.
func replyErr(op string, r Reply) error {
	if r.OK {
		return nil
	}
	if en := errnoByName(r.Errno); en != 0 {
		return fmt.Errorf("switch: %s: %s: %w", op, r.Error, en)
	}
	return fmt.Errorf("switch: %s: %s", op, r.Error)
}

func encode(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// errnoByName is unix.ErrnoName backwards; 0 for a name it does not know.
func errnoByName(name string) unix.Errno {
	if name == "" {
		return 0
	}
	for e := unix.Errno(1); e < 256; e++ {
		if unix.ErrnoName(e) == name {
			return e
		}
	}
	return 0
}
