//go:build !linux

package netstack

import (
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// translateErrno stands in for gVisor's tcpip.TranslateErrno, which exists
// on Linux only; elsewhere the few errnos a send returns (translate maps
// them first) leave the rest as gVisor's default for an unknown errno.
func translateErrno(unix.Errno) tcpip.Error { return &tcpip.ErrInvalidEndpointState{} }
