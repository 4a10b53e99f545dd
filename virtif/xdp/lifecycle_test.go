package xdp

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
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
		return ifc.Up()
	})
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("READY\n")
	select {}
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
	lab := netlab.NewT(t, netlab.Options{})
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
	defer cmd.Process.Kill()
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "READY") {
				ready <- true
				break
			}
		}
		close(ready)
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("child ended without opening its vif")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("child did not open its vif")
	}
	if !xdpAttached(t, lab) {
		t.Fatal("no XDP program on the NIC while the child holds a vif")
	}
	if err := cmd.Process.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
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

// 7. The NIC is deleted under a running vif: the RX goroutines end, the
// error says why, Close neither hangs nor leaks goroutines or descriptors.
func TestIntegrationNICDeleted(t *testing.T) {
	lab := netlab.NewT(t, netlab.Options{})
	c, err := virtif.NewCloner(virtif.ClonerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	runtime.GC()
	goroutines, fds := runtime.NumGoroutine(), openFDs(t)

	v := newVif(t, lab, c, "")
	peer := openRaw(t, lab, netlab.Peer)
	peer.send(t, frame(lab, v.ifc.HardwareAddr(), "BEFORE", 100))
	if !waitFor(func() bool { return v.rec.count() == 1 }) {
		t.Fatal("vif not receiving before the NIC went away")
	}
	unix.Close(peer.fd)
	peer.fd = -1
	if err := lab.DeleteLink(netlab.Host); err != nil {
		t.Fatal(err)
	}
	select {
	case <-v.b.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("RX goroutines still running after the NIC was deleted")
	}
	if err := v.b.Err(); !errors.Is(err, unix.ENETDOWN) && !errors.Is(err, unix.ENXIO) && !errors.Is(err, unix.ENODEV) {
		t.Fatalf("Err() = %v, want one saying the device went away", err)
	}
	t.Logf("Err() after the NIC went away: %v", v.b.Err())
	if !strings.Contains(v.b.Err().Error(), lab.Link[netlab.Host]) {
		t.Fatalf("Err() %q does not name the NIC", v.b.Err())
	}
	if err := v.ifc.Output([][]byte{frame(lab, lab.MAC[netlab.Peer], "AFTER", 100)}); err == nil {
		t.Log("Output after the NIC went away returned nil (frame counted by the kernel as dropped)")
	}
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
}
