package ethtool_test

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/ethtool"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
)

// GetChannels reports the queues a veth uses and allows, inside the
// namespace it lives in; errors keep their errno.
func TestIntegrationGetChannels(t *testing.T) {
	l := netlab.NewT(t, netlab.Options{Queues: 2})
	var ch ethtool.Channels
	if err := l.Do(netlab.Host, func() (err error) { ch, err = ethtool.GetChannels(l.Link[netlab.Host]); return err }); err != nil {
		t.Fatal(err)
	}
	if ch.Combined+ch.RXCount != 2 || ch.MaxRX < 2 {
		t.Fatalf("channels %+v, want 2 RX queues in use", ch)
	}
	if _, err := ethtool.GetChannels(l.Link[netlab.Host]); !errors.Is(err, unix.ENODEV) {
		t.Fatalf("outside the namespace: %v, want ENODEV", err)
	}
	if _, err := ethtool.GetChannels(strings.Repeat("x", unix.IFNAMSIZ)); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("a name too long: %v, want EINVAL", err)
	}
}
