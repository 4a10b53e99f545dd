//go:build !linux

package xdp

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/virtif-xdp/virtif-xdp/virtif"
)

// errNotSupported is what every call of this package answers off Linux:
// AF_XDP and XDP are Linux's.
var errNotSupported = fmt.Errorf("xdp: AF_XDP is not supported on %s: %w", runtime.GOOS, errors.ErrUnsupported)

func init() {
	// A link string "xdp:..." parses everywhere; creating the vif fails
	// with errNotSupported.
	_ = virtif.RegisterBackend(Scheme, func(c virtif.BackendConfig) (virtif.Backend, error) {
		if _, err := ParseLinkStr(c.Link); err != nil {
			return nil, err
		}
		return nil, errNotSupported
	})
}

// Backend is one vif's hold on a NIC; off Linux there is none.
type Backend struct{}

// Open is VIFHYPER_CREATE for "xdp:" link strings; off Linux it returns an
// error matching errors.ErrUnsupported.
func Open(virtif.BackendConfig) (*Backend, error) { return nil, errNotSupported }

// Close does nothing off Linux.
func (*Backend) Close() error { return nil }
