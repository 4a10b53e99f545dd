package netstack

import (
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
)

// translateErrno is gVisor's errno table, which it builds on Linux only.
func translateErrno(e unix.Errno) tcpip.Error { return tcpip.TranslateErrno(e) }
