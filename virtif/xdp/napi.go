//go:build linux

package xdp

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/xsk"
)

// Preferred busy polling (SO_PREFER_BUSY_POLL, link-string key busypoll)
// only takes over from interrupts when the NIC defers them: with napi=on
// the NIC's napi_defer_hard_irqs and gro_flush_timeout are set to these
// values (the kernel's Documentation/networking/napi.rst example) while it
// is open, and the values found are written back when it closes. A process
// killed meanwhile leaves them set: `echo 0 >
// /sys/class/net/IF/napi_defer_hard_irqs` and the same for
// gro_flush_timeout undo it (0 is the kernel's default for both).
const (
	napiDefer        = "2"
	napiFlushTimeout = "200000" // ns
)

var napiFiles = [2]string{"napi_defer_hard_irqs", "gro_flush_timeout"}

// napiSettings holds the NIC's NAPI settings while they are ours: a locked
// OS thread in the NIC's network namespace and in a mount namespace of its
// own, where a sysfs of that network namespace is mounted (the process's
// /sys may show another namespace's devices), serves reads and writes
// until restore. The two files are opened once, read-write, when the
// values are set: restore writes through those descriptors, so it needs
// no permission on the files by then, only the CAP_NET_ADMIN the kernel
// checks on each write (the process keeps it when it drops the rest; a
// non-root user opened the root-owned files with CAP_DAC_OVERRIDE, gone
// by then).
type napiSettings struct {
	dir   string // /sys/class/net/IF in the thread's sysfs
	old   [2]string
	files [2]*os.File // napiFiles, open read-write
	req   chan func()
	done  chan struct{}
}

// applyNAPI sets the NIC's NAPI settings for busy polling. The calling
// thread must be in the NIC's network namespace.
func applyNAPI(ifname string, ifindex int) (*napiSettings, error) {
	nsfd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("xdp: napi: %w", os.NewSyscallError("open", err))
	}
	s := &napiSettings{req: make(chan func()), done: make(chan struct{})}
	started := make(chan error, 1)
	go s.serve(nsfd, started)
	if err := <-started; err != nil {
		return nil, fmt.Errorf("xdp: napi: %s: %w", ifname, err)
	}
	s.dir = filepath.Join(s.dir, ifname)
	if err := faultAt("napi", -1); err != nil {
		s.stop()
		return nil, fmt.Errorf("xdp: napi: %s: %w", ifname, err)
	}
	err = s.do(func() error {
		b, err := os.ReadFile(filepath.Join(s.dir, "ifindex"))
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(b)) != strconv.Itoa(ifindex) {
			return fmt.Errorf("sysfs shows another %s: %w", ifname, unix.ENODEV)
		}
		for i, f := range napiFiles {
			if s.files[i], err = os.OpenFile(filepath.Join(s.dir, f), os.O_RDWR, 0); err != nil {
				return err
			}
			b := make([]byte, 64)
			n, err := s.files[i].ReadAt(b, 0)
			if err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			s.old[i] = strings.TrimSpace(string(b[:n]))
		}
		// A write that fails puts back the files already written.
		for i, v := range [2]string{napiDefer, napiFlushTimeout} {
			err := faultAt("napi", i)
			if err == nil {
				_, err = s.files[i].WriteAt([]byte(v), 0)
			}
			if err != nil {
				for j := range i {
					if _, rerr := s.files[j].WriteAt([]byte(s.old[j]), 0); rerr != nil {
						err = fmt.Errorf("%w; restoring %s: %w", err, napiFiles[j], rerr)
					}
				}
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.closeFiles()
		s.stop()
		return nil, fmt.Errorf("xdp: napi: %s: %w", ifname, err)
	}
	return s, nil
}

// serve runs on its own locked thread, which it discards at the end.
func (s *napiSettings) serve(nsfd int, started chan<- error) {
	defer close(s.done)
	runtime.LockOSThread() // never unlocked: the thread goes with its namespaces
	err := unix.Setns(nsfd, unix.CLONE_NEWNET)
	unix.Close(nsfd)
	if err == nil {
		err = unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS)
	}
	if err == nil {
		err = unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
	}
	var tmp string
	if err == nil {
		tmp, err = os.MkdirTemp("", "virtif-napi")
	}
	if err == nil {
		err = unix.Mount("sysfs", tmp, "sysfs", unix.MS_NOSUID|unix.MS_NOEXEC|unix.MS_NODEV, "")
		defer os.Remove(tmp)
	}
	if err != nil {
		started <- err
		return
	}
	s.dir = filepath.Join(tmp, "class", "net")
	started <- nil
	for f := range s.req {
		f()
	}
}

func (s *napiSettings) do(fn func() error) error {
	errc := make(chan error, 1)
	s.req <- func() { errc <- fn() }
	return <-errc
}

// write writes v to the files through their descriptors, each at offset
// 0: a sysfs attribute takes each write whole.
func (s *napiSettings) write(v [2]string) error {
	var errs []error
	for i, f := range s.files {
		if _, err := f.WriteAt([]byte(v[i]), 0); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *napiSettings) closeFiles() {
	for _, f := range s.files {
		if f != nil {
			f.Close()
		}
	}
}

func (s *napiSettings) stop() {
	close(s.req)
	<-s.done
}

// restore writes back the values found and ends the thread.
func (s *napiSettings) restore() error {
	err := s.do(func() error { return s.write(s.old) })
	s.closeFiles()
	s.stop()
	if err != nil {
		return fmt.Errorf("xdp: napi: restore %s: %w", s.dir, err)
	}
	return nil
}

// busyPollState says whether busy polling is in effect: "off"; "on" with
// the NAPI id the sockets are polled by; or a no-op while no socket has a
// NAPI id (before its first frame, or on a driver without NAPI).
func (n *nic) busyPollState() string {
	if n.cfg.BusyPoll == 0 {
		return "off"
	}
	napi := "NIC settings unchanged (napi=off)"
	if n.napi != nil {
		napi = "napi_defer_hard_irqs " + napiDefer + ", gro_flush_timeout " + napiFlushTimeout + " ns"
	}
	var ids []string
	for _, q := range n.queues {
		if id := q.napiID.Load(); id != 0 {
			ids = append(ids, strconv.FormatUint(uint64(id), 10))
		}
	}
	if len(ids) == 0 {
		return "no-op so far: no socket has a NAPI id (none received a frame yet, or the driver has no NAPI); " + napi
	}
	return fmt.Sprintf("on, budget %d, NAPI id %s; %s", n.cfg.BusyPoll, strings.Join(ids, ","), napi)
}

// napiIDOf is the NAPI id of the frames sock received
// (SO_INCOMING_NAPI_ID), 0 if none. Only the socket's RX goroutine calls
// it: the socket may be closed under anyone else.
func napiIDOf(sock *xsk.Socket) uint32 {
	id, err := unix.GetsockoptInt(sock.FD(), unix.SOL_SOCKET, unix.SO_INCOMING_NAPI_ID)
	if err != nil || id < 0 {
		return 0
	}
	return uint32(id)
}
