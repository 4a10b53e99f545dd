//go:build linux

package netlab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// On a fresh machine /run/netns is a plain directory. A namespace bound
// there, and then the first `ip netns add` (which binds /run/netns onto
// itself), is hidden under that mount: deleting it fails with EBUSY, and it
// stays for good. newNamed first makes /run/netns a shared mount point, as
// iproute2 does, and the namespace stays reachable. Both are played in a
// child process in a mount namespace of its own (unshare --mount, private
// propagation), with a fresh tmpfs on /run for each: the machine's own
// /run/netns is never touched.
func TestIntegrationNetnsDirBeforeIPNetns(t *testing.T) {
	if os.Getenv("NETLAB_NETNSDIR_CHILD") == "1" {
		netnsDirChild(t)
		return
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root")
		}
		t.Skip("needs root")
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", os.Args[0],
		"-test.run=^TestIntegrationNetnsDirBeforeIPNetns$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "NETLAB_NETNSDIR_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	t.Logf("child:\n%s", out)
}

func netnsDirChild(t *testing.T) {
	fresh := func() {
		t.Helper()
		if err := unix.Mount("tmpfs", "/run", "tmpfs", 0, "mode=0755"); err != nil {
			t.Fatal(err)
		}
	}
	ipAdd := func(name string) {
		t.Helper()
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v\n%s", name, err, out)
		}
	}
	name := func(s string) string { return fmt.Sprintf("vxdir%d%s", os.Getpid()%100000, s) }

	// The old way: netns.NewNamed on the plain directory, then ip.
	fresh()
	h, err := newNamedOn(name("a"))
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	ipAdd(name("b"))
	if err := deleteNamed(name("a")); !errors.Is(err, unix.EBUSY) {
		t.Fatalf("without the shared mount point, deleting the hidden namespace: %v, want EBUSY (the hazard this guards against)", err)
	}

	// newNamed's way.
	fresh()
	h, err = newNamed(name("c"))
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	ipAdd(name("d"))
	if err := deleteNamed(name("c")); err != nil {
		t.Fatalf("namespace made by newNamed before ip netns add: %v", err)
	}
	if out, err := exec.Command("ip", "netns", "del", name("d")).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v\n%s", err, out)
	}
}

// newNamedOn is netns.NewNamed on a locked thread thrown away afterwards,
// without newNamed's preparation of the directory: what netlab did before.
func newNamedOn(name string) (netns.NsHandle, error) {
	type result struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread changed namespace
		h, err := netns.NewNamed(name)
		ch <- result{h, err}
	}()
	r := <-ch
	return r.h, r.err
}
