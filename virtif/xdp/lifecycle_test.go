//go:build linux

package xdp

import (
	"bufio"
	"errors"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/virtif"
)

// TestHelperChildVif is not a test: run with VIRTIF_CHILD_NS and
// VIRTIF_CHILD_LINK set, it opens a vif there, says READY and waits to be
// killed (test 6).
func TestHelperChildVif(t *testing.T) {
	ns, link := os.Getenv("VIRTIF_CHILD_NS"), os.Getenv("VIRTIF_CHILD_LINK")
	if ns == "" {
		t.Skip("helper process for TestIntegrationKilledOwner")
	}
	c, err := virtif.NewCloner(virtif.ClonerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	err = netlab.DoIn(ns, func() error {
		ifc, err := c.Create()
		if err != nil {
			return err
		}
		if err := ifc.SetLinkStr("xdp:" + link); err != nil {
			return err
		}
		if err := ifc.Up(); err != nil {
			return err
		}
		os.Stdout.WriteString("READY " + ifc.HardwareAddr().String() + "\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	select {}
}

// startChild runs TestHelperChildVif on the lab's host NIC and returns the
// child, once its vif is up, and the vif's MAC. The child is killed when
// the test ends.
func startChild(t *testing.T, lab *netlab.Lab) (*exec.Cmd, net.HardwareAddr) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperChildVif$", "-test.v")
	cmd.Env = append(os.Environ(), "VIRTIF_CHILD_NS="+lab.NS[netlab.Host], "VIRTIF_CHILD_LINK="+lab.Link[netlab.Host])
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan net.HardwareAddr, 1)
	go func() {
		defer close(ready)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if mac, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
				if m, err := net.ParseMAC(mac); err == nil {
					ready <- m
				}
				break
			}
		}
	}()
	select {
	case mac, ok := <-ready:
		if !ok {
			t.Fatal("child ended without opening its vif")
		}
		return cmd, mac
	case <-time.After(20 * time.Second):
		t.Fatal("child did not open its vif")
	}
	return nil, nil
}

// kill ends the child with SIGKILL and waits for it.
func kill(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
}

func xdpAttached(t *testing.T, lab *netlab.Lab) bool {
	t.Helper()
	a, err := lab.LinkAttrs(netlab.Host)
	if err != nil {
		t.Fatal(err)
	}
	return a.Xdp != nil && a.Xdp.Attached
}

// 6. A process holding a vif is SIGKILLed: no XDP program remains on the
// NIC, and host traffic flows.
func TestIntegrationKilledOwner(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{})
	cmd, _ := startChild(t, lab)
	if !xdpAttached(t, lab) {
		t.Fatal("no XDP program on the NIC while the child holds a vif")
	}
	kill(t, cmd)
	if !waitFor(func() bool { return !xdpAttached(t, lab) }) {
		t.Fatal("XDP program left on the NIC after its owner was killed")
	}
	if _, err := lab.Run(netlab.Peer, "ping", "-c", "1", "-W", "2", lab.Addr[netlab.Host].Addr().String()); err != nil {
		t.Fatalf("host traffic after the owner died: %v", err)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// 7. The NIC is deleted, or set down, under a running vif, in every wait
// mode (poll, spin, busy polling): the RX goroutines end, the error says
// why, the program is off the NIC, Close neither hangs nor leaks goroutines
// or descriptors.
func TestIntegrationNICDeleted(t *testing.T) {
	for _, mode := range []string{"", ",rxwait=spin", ",busypoll=64"} {
		for _, how := range []string{"del", "down"} {
			name := strings.TrimPrefix(mode, ",")
			if name == "" {
				name = "rxwait=poll"
			}
			t.Run(name+"/"+how, func(t *testing.T) { testNICGone(t, mode, how) })
		}
	}
}

func testNICGone(t *testing.T, opts, how string) {
	lab := labtest.NewT(t, netlab.Options{})
	c := newCloner(t)
	runtime.GC()
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)

	v := newVif(t, lab, c, opts)
	peer := openRaw(t, lab, netlab.Peer)
	peer.send(t, frame(lab, v.ifc.HardwareAddr(), "BEFORE", 100))
	if !waitFor(func() bool { return v.rec.count() == 1 }) {
		t.Fatal("vif not receiving before the NIC went away")
	}
	unix.Close(peer.fd)
	peer.fd = -1
	args := []string{"link", "set", lab.Link[netlab.Host], "down"}
	if how == "down" {
		ipCmd(t, lab, netlab.Host, args...)
	} else {
		args = []string{"link", "del", lab.Link[netlab.Host]}
		if err := lab.DeleteLink(netlab.Host); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-v.b.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("RX goroutines still running after ip %s", strings.Join(args, " "))
	}
	if err := v.b.Err(); !errors.Is(err, unix.ENETDOWN) {
		t.Fatalf("Err() = %v, want ENETDOWN", err)
	}
	t.Logf("Err() after the NIC went away: %v", v.b.Err())
	want := []string{"removed"}
	if how == "down" {
		want = []string{"set down"}
	} else if lab.OnNICs() {
		// A hot-unplug closes the NIC (down) before it unregisters it, and
		// on a slow guest the vif may see the first before the second.
		want = append(want, "set down")
	}
	msg := v.b.Err().Error()
	if !strings.Contains(msg, lab.Link[netlab.Host]) || !slices.ContainsFunc(want, func(w string) bool { return strings.Contains(msg, w) }) {
		t.Fatalf("Err() %q does not name the NIC and say it was %s", msg, strings.Join(want, " or "))
	}
	if how == "down" {
		// The failed NIC is torn down at once: nothing stays on it.
		if !waitFor(func() bool { return !xdpAttached(t, lab) }) {
			t.Fatal("XDP program left on the NIC that was set down")
		}
	}
	if err := v.ifc.Output([][]byte{frame(lab, lab.MAC[netlab.Peer], "AFTER", 100)}); err == nil {
		t.Log("Output after the NIC went away returned nil (frame counted by the kernel as dropped)")
	}
	reopenAfterFailure(t, lab, c, how, opts)
	done := make(chan error, 1)
	go func() { done <- c.Destroy(v.ifc.Name()) }()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, unix.EBUSY) {
			t.Logf("destroy: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("destroying the vif hung")
	}
	if _, ok := c.Interface(v.ifc.Name()); ok {
		// Up interfaces cannot be destroyed (EBUSY): bring it down first.
		if err := v.ifc.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
	}
	if !waitFor(func() bool { return runtime.NumGoroutine() <= goroutines }) {
		buf := make([]byte, 1<<16)
		t.Fatalf("goroutines: %d before, %d after\n%s", goroutines, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
	}
	if got := openFDs(t); got > fds {
		t.Fatalf("descriptors: %d before, %d after", fds, got)
	}
	if n := nicsOpen(); n != 0 {
		t.Fatalf("%d NICs still served", n)
	}
}

// A NIC that only loses its carrier (its veth peer set down) is not an
// error: the vif keeps running, in every wait mode, and receives again once
// the carrier is back.
func TestIntegrationNICCarrierLoss(t *testing.T) {
	for _, mode := range []string{"", ",rxwait=spin", ",busypoll=64"} {
		t.Run(strings.TrimPrefix(mode, ","), func(t *testing.T) {
			lab := labtest.NewT(t, netlab.Options{})
			v := newVif(t, lab, nil, mode)
			ipCmd(t, lab, netlab.Peer, "link", "set", lab.Link[netlab.Peer], "down")
			// Longer than the health checks' period, many times over.
			select {
			case <-v.b.Done():
				t.Fatalf("RX goroutines ended on carrier loss: %v", v.b.Err())
			case <-time.After(time.Second):
			}
			ipCmd(t, lab, netlab.Peer, "link", "set", lab.Link[netlab.Peer], "up")
			peer := openRaw(t, lab, netlab.Peer)
			// The carrier comes back a moment after up.
			if !receives(t, lab, v, peer, "CARRIER") {
				t.Fatalf("nothing received after the carrier came back (Err %v)", v.b.Err())
			}
		})
	}
}

// reopenAfterFailure brings the NIC back — set up again, or re-created with
// the same ifindex (and so the same key in the process's NIC table) — while
// the failed vif is still open, and checks that a new vif on it starts
// afresh and receives (test 7 of the hardening issue: a failed NIC is not
// reused).
func reopenAfterFailure(t *testing.T, lab *netlab.Lab, c *virtif.Cloner, how, opts string) {
	t.Helper()
	host, peer := lab.Link[netlab.Host], lab.Link[netlab.Peer]
	if how == "del" && lab.OnNICs() {
		t.Log("not re-opened: the lab's NICs were unplugged, and come back only when the lab closes")
		return
	}
	if how == "del" {
		ipCmd(t, lab, netlab.Host, "link", "add", host, "index", strconv.Itoa(lab.Index[netlab.Host]),
			"type", "veth", "peer", "name", peer, "index", strconv.Itoa(lab.Index[netlab.Peer]), "netns", lab.NS[netlab.Peer])
		ipCmd(t, lab, netlab.Peer, "link", "set", peer, "up")
	}
	ipCmd(t, lab, netlab.Host, "link", "set", host, "up")
	v := newVif(t, lab, c, opts)
	defer v.ifc.Close()
	raw := openRaw(t, lab, netlab.Peer)
	defer func() { unix.Close(raw.fd); raw.fd = -1 }()
	if !receives(t, lab, v, raw, "REOPENED") {
		t.Fatalf("a vif opened on the NIC after it came back receives nothing (Err %v)", v.b.Err())
	}
	select {
	case <-v.b.Done():
		t.Fatalf("the new vif's NIC ended: %v", v.b.Err())
	default:
	}
}

// An RX goroutine that dies (a fault injected into its health check) fails
// the whole NIC: Done and Err say so, the program leaves the NIC, and an
// Open while the failed vif is still open sets the NIC up afresh.
func TestIntegrationFailedNICNotReused(t *testing.T) {
	lab := labtest.NewT(t, netlab.Options{Queues: 2})
	c := newCloner(t)
	v := newVif(t, lab, c, "")
	var once sync.Once
	setFault(t, func(step string, q int) error {
		var err error
		if step == "rx" && q == 1 {
			once.Do(func() { err = errInjected })
		}
		return err
	})
	select {
	case <-v.b.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the NIC's RX goroutines go on after one of them failed")
	}
	if err := v.b.Err(); !errors.Is(err, unix.EIO) || !strings.Contains(err.Error(), "queue 1") {
		t.Fatalf("Err() = %v, want the injected EIO on queue 1", err)
	}
	if !waitFor(func() bool { return !xdpAttached(t, lab) }) {
		t.Fatal("XDP program left on the failed NIC")
	}
	reopenAfterFailure(t, lab, c, "up", "")
	if err := v.ifc.Close(); err != nil {
		t.Fatalf("closing the failed vif: %v", err)
	}
}

// ipCmd runs ip(8) with args on side of the lab, failing the test on error.
func ipCmd(t *testing.T, lab *netlab.Lab, side int, args ...string) {
	t.Helper()
	if out, err := lab.Run(side, "ip", args...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// receives sends frames carrying marker from raw to v until one arrives (a
// link that just came up may drop the first) or the deadline passes.
func receives(t *testing.T, lab *netlab.Lab, v *testVif, raw *rawSock, marker string) bool {
	t.Helper()
	return waitFor(func() bool {
		raw.send(t, frame(lab, v.ifc.HardwareAddr(), marker, 100))
		time.Sleep(20 * time.Millisecond)
		got, _ := v.rec.matching([]byte(marker))
		return len(got) > 0
	})
}
