//go:build linux

package xdp

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/virtif"
)

// openIn opens a bare Backend (no virtif.Interface) with link string link in
// the lab's host namespace; deliver may be nil.
func openIn(t testing.TB, ns, link string, deliver func([]byte)) (*Backend, error) {
	t.Helper()
	if deliver == nil {
		deliver = func([]byte) {}
	}
	var b *Backend
	err := netlab.DoIn(ns, func() error {
		var err error
		b, err = Open(virtif.BackendConfig{Name: "vt0", Link: link, MAC: testMAC(), Deliver: deliver})
		return err
	})
	return b, err
}

func testMAC() []byte { return []byte{0x02, 0, 0, 0, 0x0b, 0x01} }

// leakCheck records the goroutines and descriptors now; the returned func
// fails the test if either grew (goroutines may take a moment to end).
func leakCheck(t *testing.T) func() {
	t.Helper()
	runtime.GC()
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)
	return func() {
		t.Helper()
		if !waitFor(func() bool { return runtime.NumGoroutine() <= goroutines }) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d before, %d after\n%s", goroutines, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		if !waitFor(func() bool { return openFDs(t) <= fds }) {
			t.Fatalf("descriptors: %d before, %d after", fds, openFDs(t))
		}
		if n := nicsOpen(); n != 0 {
			t.Fatalf("%d NICs still served", n)
		}
	}
}

var errInjected = fmt.Errorf("injected fault: %w", unix.EIO)

// Every step of setting a NIC up, and of Open after it, can fail: the error
// is returned (errno kept, the NIC named), nothing panics, and what was done
// is undone — no program on the NIC, no socket or goroutine left, the NIC
// not kept in the process's table, its address list and its NAPI settings
// (napi=on: napi_defer_hard_irqs, gro_flush_timeout) as they were, also
// when the second NAPI write fails after the first changed its file. On a
// 2-queue NIC the second socket failing undoes the first.
func TestIntegrationSetupFailuresUndo(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{Queues: 2})
	link := "xdp:" + lab.Link[netlab.Host] + ",busypoll=8,napi=on"
	setNAPIValues(t, lab, "1", "1000") // not the kernel's zeros, so a reset shows
	napiBefore, fdbBefore := napiValues(t, lab), fdbSelf(t, lab)
	for _, tc := range []struct {
		step  string
		queue int
	}{
		{"link", -1}, {"load", -1}, {"attach", -1}, {"addrlist", -1},
		{"socket", 0}, {"socket", 1},
		{"napi", -1}, {"napi", 0}, {"napi", 1},
		{"setsocket", 0}, {"setsocket", 1}, {"addmac", -1},
	} {
		t.Run(fmt.Sprintf("%s/%d", tc.step, tc.queue), func(t *testing.T) {
			check := leakCheck(t)
			hit := false
			setFault(t, func(step string, q int) error {
				if step == tc.step && q == tc.queue {
					hit = true
					return errInjected
				}
				return nil
			})
			b, err := openIn(t, lab.NS[netlab.Host], link, nil)
			if err == nil {
				b.Close()
				t.Fatalf("Open succeeded (fault step reached: %v)", hit)
			}
			if !errors.Is(err, unix.EIO) || !strings.Contains(err.Error(), lab.Link[netlab.Host]) {
				t.Fatalf("error %q: want EIO naming %s", err, lab.Link[netlab.Host])
			}
			t.Log(err)
			if xdpAttached(t, lab) {
				t.Fatal("XDP program left on the NIC")
			}
			check()
			if got := napiValues(t, lab); got != napiBefore {
				t.Errorf("NAPI settings %q after the failure, want %q as before", got, napiBefore)
			}
			if got := fdbSelf(t, lab); !slices.Equal(got, fdbBefore) {
				t.Errorf("NIC address list %v after the failure, want %v as before", got, fdbBefore)
			}
			// Nothing is in the way of the next Open.
			fault.Store(nil)
			b, err = openIn(t, lab.NS[netlab.Host], link, nil)
			if err != nil {
				t.Fatalf("Open after the failure: %v", err)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A second vif whose Open fails after it got a slot on a NIC in use leaves
// the first one working and its slot and MAC free for the next.
func TestIntegrationSecondVifFailureUndo(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	v := newVif(t, lab, nil, "")
	for _, step := range []string{"setsocket", "addmac"} {
		t.Run(step, func(t *testing.T) {
			setFault(t, func(s string, q int) error {
				if s == step {
					return errInjected
				}
				return nil
			})
			// The first vif's options (the kernel lab's too), so that
			// the injected fault is what fails.
			link := "xdp:" + lab.Link[netlab.Host] + netlab.TestLinkOpts()
			b, err := openIn(t, lab.NS[netlab.Host], link, nil)
			if !errors.Is(err, unix.EIO) {
				if b != nil {
					b.Close()
				}
				t.Fatalf("Open: %v, want the injected EIO", err)
			}
			fault.Store(nil)
			peer := openRaw(t, lab, netlab.Peer)
			marker := "SECOND" + step
			peer.send(t, frame(lab, v.ifc.HardwareAddr(), marker, 100))
			if !waitFor(func() bool { got, _ := v.rec.matching([]byte(marker)); return len(got) == 1 }) {
				t.Fatal("the first vif stopped receiving")
			}
			// The failed vif's MAC is not steered: the host gets it (on
			// a NIC that filters by address, it is off the NIC's list).
			host := openRaw(t, lab, netlab.Host)
			if !unsteered(t, lab, v, host, peer, testMAC(), marker+"X") {
				t.Fatal("the failed vif's MAC is still steered away from the host")
			}
			got := make(chan []byte, 1)
			b, err = openIn(t, lab.NS[netlab.Host], link, func(f []byte) {
				select {
				case got <- append([]byte(nil), f...):
				default:
				}
			})
			if err != nil {
				t.Fatalf("Open after the failure: %v", err)
			}
			defer b.Close()
			peer.send(t, frame(lab, testMAC(), marker+"Y", 100))
			if !waitFor(func() bool { return len(got) == 1 }) {
				t.Fatal("the vif opened after the failure receives nothing")
			}
		})
	}
}

// mode=zerocopy on a veth (no zero-copy in its driver) is an error that
// says so, not a panic, and leaves nothing on the NIC.
func TestIntegrationZeroCopyOnVeth(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	check := leakCheck(t)
	b, err := openIn(t, lab.NS[netlab.Host], "xdp:"+lab.Link[netlab.Host]+",mode=zerocopy", nil)
	if err == nil {
		b.Close()
		t.Fatal("zero-copy Open succeeded on a veth")
	}
	if !errors.Is(err, unix.EOPNOTSUPP) || !strings.Contains(err.Error(), "zero-copy") || !strings.Contains(err.Error(), "mode=copy") {
		t.Fatalf("error %q: want EOPNOTSUPP saying zero-copy is not there and what to use", err)
	}
	t.Log(err)
	if xdpAttached(t, lab) {
		t.Fatal("XDP program left on the veth")
	}
	check()
}

// A NIC that is down cannot be opened: ENETDOWN, saying how to bring it up.
func TestIntegrationOpenDownNIC(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	if out, err := lab.Run(netlab.Host, "ip", "link", "set", lab.Link[netlab.Host], "down"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	check := leakCheck(t)
	b, err := openIn(t, lab.NS[netlab.Host], "xdp:"+lab.Link[netlab.Host], nil)
	if err == nil {
		b.Close()
		t.Fatal("Open of a NIC that is down succeeded")
	}
	if !errors.Is(err, unix.ENETDOWN) || !strings.Contains(err.Error(), "ip link set "+lab.Link[netlab.Host]+" up") {
		t.Fatalf("error %q: want ENETDOWN saying how to set it up", err)
	}
	check()
}

// A veth made the plain way (`ip link add A type veth peer name B`) has a
// queue per CPU allocated and one in use: queues=all serves the one in use
// and receives; a queue the NIC does not use is an error naming it, not a
// panic, and leaves nothing behind.
func TestIntegrationUserMadeVeth(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	a, b := lab.Name+"a", lab.Name+"b"
	if err := lab.PlainVeth(netlab.Host, a, b); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = lab.Run(netlab.Host, "ip", "link", "del", a) })
	check := leakCheck(t)
	got := make(chan struct{}, 1)
	be, err := openIn(t, lab.NS[netlab.Host], "xdp:"+a, func([]byte) {
		select {
		case got <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatalf("Open on a plain veth: %v", err)
	}
	t.Logf("served queues %v", be.Info().Queues)
	if q := be.Info().Queues; len(q) != 1 || q[0] != 0 {
		t.Fatalf("queues %v, want [0], the one in use", q)
	}
	// A frame from B reaches the vif on A.
	var ifindexB int
	if err := lab.Do(netlab.Host, func() error {
		ifc, err := net.InterfaceByName(b)
		if err == nil {
			ifindexB = ifc.Index
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	sendFrom(t, lab, ifindexB, frame(lab, testMAC(), "PLAIN", 100))
	if !waitFor(func() bool { return len(got) == 1 }) {
		t.Fatal("no frame received on the plain veth")
	}
	if err := be.Close(); err != nil {
		t.Fatal(err)
	}

	_, err = openIn(t, lab.NS[netlab.Host], "xdp:"+a+",queues=1", nil)
	if !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "queue 1") || !strings.Contains(err.Error(), "ethtool -l "+a) {
		t.Fatalf("Open of the unused queue 1: %v, want EINVAL naming the queue and how to see the channels", err)
	}
	t.Log(err)
	if attached, _ := linkXDPAttached(lab, a); attached {
		t.Fatal("XDP program left on the veth")
	}
	check()
}

// sendFrom writes f on the interface ifindex of the lab's host side.
func sendFrom(t *testing.T, lab *netlab.Lab, ifindex int, f []byte) {
	t.Helper()
	if err := lab.Do(netlab.Host, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, f, 0, &unix.SockaddrLinklayer{Ifindex: ifindex, Halen: 6})
	}); err != nil {
		t.Fatal(err)
	}
}

// linkXDPAttached reports whether an XDP program is on the named link of the
// lab's host side.
func linkXDPAttached(lab *netlab.Lab, name string) (bool, error) {
	var on bool
	err := lab.Do(netlab.Host, func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		on = l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached
		return nil
	})
	return on, err
}
