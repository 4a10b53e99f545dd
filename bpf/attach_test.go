//go:build linux

package bpf

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// linkXDP reads what netlink reports about XDP on the lab's host link.
func linkXDP(t *testing.T, lab *netlab.Lab) netlink.LinkXdp {
	t.Helper()
	var x netlink.LinkXdp
	err := lab.Do(netlab.Host, func() error {
		l, err := netlink.LinkByIndex(lab.Index[netlab.Host])
		if err != nil {
			return err
		}
		if l.Attrs().Xdp != nil {
			x = *l.Attrs().Xdp
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func progID(t *testing.T, s *Steering) uint32 {
	t.Helper()
	info, err := s.Program().Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("kernel reports no program ID")
	}
	return uint32(id)
}

func ping(t *testing.T, lab *netlab.Lab) {
	t.Helper()
	if _, err := lab.Run(netlab.Peer, "ping", "-c", "2", "-i", "0.2", "-W", "5", lab.Addr[netlab.Host].Addr().String()); err != nil {
		t.Fatal(err)
	}
}

func TestIntegrationAttach(t *testing.T) {
	for _, tc := range []struct {
		mode     AttachMode
		want     AttachMode
		attached uint32
	}{
		{AttachNative, AttachNative, nl.XDP_ATTACHED_DRV},
		{AttachGeneric, AttachGeneric, nl.XDP_ATTACHED_SKB},
		{AttachAuto, AttachNative, nl.XDP_ATTACHED_DRV}, // veth has native XDP
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			lab := labtest.NewT(t, netlab.Options{})
			s := loadT(t, nil)
			var got AttachMode
			err := lab.Do(netlab.Host, func() (err error) {
				got, err = s.Attach(lab.Index[netlab.Host], tc.mode)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("Attach(%s) chose %s, want %s", tc.mode, got, tc.want)
			}
			if ifi, m := s.Attached(); ifi != lab.Index[netlab.Host] || m != tc.want {
				t.Fatalf("Attached() = %d, %s", ifi, m)
			}
			x := linkXDP(t, lab)
			if !x.Attached || x.AttachMode != tc.attached || x.ProgId != progID(t, s) {
				t.Fatalf("netlink reports %+v, want mode %d and program %d", x, tc.attached, progID(t, s))
			}

			if _, err := s.Attach(lab.Index[netlab.Host], tc.mode); !errors.Is(err, unix.EBUSY) {
				t.Fatalf("second Attach: %v, want EBUSY", err)
			}
			other := loadT(t, nil)
			if err := lab.Do(netlab.Host, func() error {
				_, err := other.Attach(lab.Index[netlab.Host], tc.mode)
				return err
			}); !errors.Is(err, unix.EBUSY) {
				t.Fatalf("Attach of a second program: %v, want EBUSY", err)
			}

			// The host keeps its traffic: ICMP and ARP to the host's own,
			// unregistered MAC pass through the program to the kernel.
			before, err := s.HostCounters()
			if err != nil {
				t.Fatal(err)
			}
			ping(t, lab)
			after, err := s.HostCounters()
			if err != nil {
				t.Fatal(err)
			}
			if after.Pass < before.Pass+2 {
				t.Fatalf("host Pass counter went from %d to %d over 2 pings", before.Pass, after.Pass)
			}

			// Even the host's MAC registered to a vif without a socket is not
			// black-holed.
			if err := s.AddMAC(lab.MAC[netlab.Host], 0); err != nil {
				t.Fatal(err)
			}
			ping(t, lab)
			c, err := s.Counters(0)
			if err != nil {
				t.Fatal(err)
			}
			if c.NoSocket < 2 || c.Redirected() != 0 {
				t.Fatalf("vif 0 without socket: %+v, want NoSocket >= 2 and nothing redirected", c)
			}

			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if x := linkXDP(t, lab); x.Attached {
				t.Fatalf("after Close netlink still reports XDP: %+v", x)
			}
			ping(t, lab)
		})
	}
}

func TestIntegrationDetach(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	s := loadT(t, nil)
	attach := func() {
		t.Helper()
		if err := lab.Do(netlab.Host, func() error {
			_, err := s.Attach(lab.Index[netlab.Host], AttachGeneric)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	attach()
	if err := s.Detach(); err != nil {
		t.Fatal(err)
	}
	if x := linkXDP(t, lab); x.Attached {
		t.Fatalf("after Detach netlink still reports XDP: %+v", x)
	}
	if err := s.Detach(); err != nil {
		t.Fatalf("second Detach: %v", err)
	}
	attach()
	if x := linkXDP(t, lab); !x.Attached {
		t.Fatal("re-Attach after Detach did not attach")
	}
}

func TestIntegrationAttachErrors(t *testing.T) {
	s := loadT(t, nil)
	if _, err := s.Attach(0, AttachAuto); !errors.Is(err, unix.ENODEV) {
		t.Errorf("Attach(0): %v, want ENODEV", err)
	}
	lab := labtest.NewT(t, netlab.Options{})
	// The lab's ifindex means nothing, or something else, outside its
	// namespace; an index no namespace has fails in every mode.
	for _, m := range []AttachMode{AttachAuto, AttachNative, AttachGeneric} {
		err := lab.Do(netlab.Host, func() error {
			_, err := s.Attach(1<<30, m)
			return err
		})
		if !errors.Is(err, unix.ENODEV) {
			t.Errorf("Attach(%s) to a missing ifindex: %v, want ENODEV", m, err)
		}
	}
	if _, err := s.Attach(1, AttachMode(9)); !errors.Is(err, unix.EINVAL) {
		t.Errorf("Attach with mode 9: %v, want EINVAL", err)
	}
	// lo has no native XDP: native fails, auto falls back to generic.
	err := lab.Do(netlab.Host, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if _, err := s.Attach(lo.Attrs().Index, AttachNative); !errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("native Attach on lo: %v, want EOPNOTSUPP", err)
		}
		m, err := s.Attach(lo.Attrs().Index, AttachAuto)
		if err != nil {
			return err
		}
		if m != AttachGeneric {
			return fmt.Errorf("auto Attach on lo chose %s, want generic", m)
		}
		return s.Detach()
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := AttachMode(7).String(); got != "AttachMode(7)" {
		t.Errorf("String of a bad mode: %q", got)
	}
}

// Frames on a queue reach only the socket set for that queue, and a queue
// beyond MaxQueues never aliases another vif's slot.
func TestIntegrationQueues(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{Queues: 4})
	s := loadT(t, &Options{MaxVifs: 4, MaxQueues: 2})
	for _, e := range []error{
		s.AddMAC(mac0, 0),
		s.AddMAC(mac1, 1),
		s.SetSocket(0, 1, xskFD(t)),
		s.SetSocket(1, 1, xskFD(t)), // slot 1*2+1 = 3, what vif 0 queue 3 would alias
	} {
		if e != nil {
			t.Fatal(e)
		}
	}
	for _, tc := range []struct {
		queue uint32
		dst   []byte
		want  uint32
	}{
		{0, mac0, xdpPass}, {1, mac0, xdpRedirect}, {3, mac0, xdpPass},
		{1, mac1, xdpRedirect}, {2, mac1, xdpPass},
	} {
		var got uint32
		before := snap(t, s, 0, 1)
		err := lab.Do(netlab.Host, func() (err error) {
			ctx := xdpMd{DataEnd: 60, IngressIfindex: uint32(lab.Index[netlab.Host]), RxQueueIndex: tc.queue}
			got, err = s.Program().Run(&ebpf.RunOptions{Data: ether(tc.dst, 0x0800, nil), Context: ctx})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("queue %d to %x: action %d, want %d", tc.queue, tc.dst, got, tc.want)
		}
		vif := 0
		if tc.dst[5] == 2 {
			vif = 1
		}
		d := sub(snap(t, s, 0, 1)[vif], before[vif])
		if (tc.want == xdpPass) != (d == RuleCounters{NoSocket: 1}) {
			t.Errorf("queue %d to %x: vif %d counters moved by %+v", tc.queue, tc.dst, vif, d)
		}
	}
}

// A process that dies by SIGKILL with the program attached leaves nothing on
// the NIC: the bpf_link dies with its last descriptor.
func TestIntegrationKilledOwnerDetaches(t *testing.T) {
	if os.Getenv("BPF_TEST_ATTACH_NS") != "" {
		return // the child's copy of this test does nothing
	}
	lab := labtest.NewT(t, netlab.Options{})
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperAttachAndWait$", "-test.count=1")
	cmd.Env = append(os.Environ(), "BPF_TEST_ATTACH_NS="+lab.NS[netlab.Host], "BPF_TEST_ATTACH_IF="+strconv.Itoa(lab.Index[netlab.Host]))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(out)
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "attached") {
	}
	if x := linkXDP(t, lab); !x.Attached {
		t.Fatal("the child did not attach")
	}
	if err := cmd.Process.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	// The link is released when the dead process's files are closed, which
	// is done by the time wait(2) returns.
	if x := linkXDP(t, lab); x.Attached {
		t.Fatalf("XDP still attached after its owner was killed: %+v", x)
	}
	ping(t, lab)
}

// TestHelperAttachAndWait runs in the child of TestIntegrationKilledOwnerDetaches.
func TestHelperAttachAndWait(t *testing.T) {
	ns := os.Getenv("BPF_TEST_ATTACH_NS")
	if ns == "" {
		return // only meaningful as the child of TestIntegrationKilledOwnerDetaches
	}
	ifindex, _ := strconv.Atoi(os.Getenv("BPF_TEST_ATTACH_IF"))
	s, err := Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlab.DoIn(ns, func() error {
		_, err := s.Attach(ifindex, AttachNative)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	fmt.Println("attached")
	select {} // until killed
}

// The NIC vanishing under an attached program leaves a defunct link that
// still closes cleanly; the maps keep working until then.
func TestIntegrationNICDeleted(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	s := loadT(t, nil)
	if err := lab.Do(netlab.Host, func() error {
		_, err := s.Attach(lab.Index[netlab.Host], AttachNative)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := lab.DeleteLink(netlab.Host); err != nil {
		t.Fatal(err)
	}
	if err := s.AddMAC(mac0, 0); err != nil {
		t.Fatalf("AddMAC after the NIC was deleted: %v", err)
	}
	if _, err := s.HostCounters(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close after the NIC was deleted: %v", err)
	}
}
