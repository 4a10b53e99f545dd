//go:build linux

package bpf

import (
	"fmt"
	"os"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

func (m AttachMode) flags() link.XDPAttachFlags {
	if m == AttachGeneric {
		return link.XDPGenericMode
	}
	return link.XDPDriverMode
}

// Attach attaches the program to the interface ifindex through a bpf_link
// and returns the mode it runs in. AttachAuto tries native mode first and
// falls back to generic mode. The link belongs to s: it goes away with
// Close or Detach, or when the process dies.
//
// ifindex is resolved in the network namespace of the calling thread, so call
// Attach from a thread in the interface's namespace (runtime.LockOSThread);
// the link then works from anywhere.
//
// Needs Linux 5.9+ (bpf_link for XDP). Errors: unix.EBUSY when s is already
// attached, or another XDP program is on the interface; unix.ENODEV for an
// unknown ifindex; unix.EOPNOTSUPP when the driver has no native XDP (mode
// AttachNative); os.ErrPermission without CAP_NET_ADMIN.
func (s *Steering) Attach(ifindex int, mode AttachMode) (AttachMode, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	objs, err := s.loaded()
	if err != nil {
		return mode, err
	}
	if s.link != nil {
		return mode, fmt.Errorf("bpf: attach to ifindex %d: already attached to ifindex %d: %w", ifindex, s.ifindex, unix.EBUSY)
	}
	if ifindex <= 0 {
		return mode, fmt.Errorf("bpf: attach to ifindex %d: %w", ifindex, unix.ENODEV)
	}
	// BPF_LINK_CREATE answers EINVAL for a missing device; say ENODEV.
	if err := ifaceExists(ifindex); err != nil {
		return mode, fmt.Errorf("bpf: attach to ifindex %d: %w", ifindex, err)
	}
	if mode != AttachAuto && mode != AttachNative && mode != AttachGeneric {
		return mode, fmt.Errorf("bpf: attach to ifindex %d: bad mode %s: %w", ifindex, mode, unix.EINVAL)
	}
	l, m, err := attachProgram(objs.Steer, ifindex, mode)
	if err != nil {
		return mode, err
	}
	s.link, s.ifindex, s.mode = l, ifindex, m
	return m, nil
}

// ifaceExists asks for the name of ifindex in the calling thread's network
// namespace: unix.ENODEV when there is no such interface.
func ifaceExists(ifindex int) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return err
	}
	ifr.SetUint32(uint32(ifindex))
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFNAME, ifr); err != nil {
		return os.NewSyscallError("ioctl SIOCGIFNAME", err)
	}
	return nil
}

// Attached reports the interface and mode s is attached to, ifindex 0 when
// it is not attached.
func (s *Steering) Attached() (ifindex int, mode AttachMode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.link == nil {
		return 0, AttachAuto
	}
	return s.ifindex, s.mode
}

// Detach removes the program from its interface, keeping the maps; Attach
// may be called again. Detaching when not attached is not an error.
func (s *Steering) Detach() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.link == nil {
		return nil
	}
	err := s.link.Close()
	s.link, s.ifindex = nil, 0
	if err != nil {
		return fmt.Errorf("bpf: detach: %w", err)
	}
	return nil
}
