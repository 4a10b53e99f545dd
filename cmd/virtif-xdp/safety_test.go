//go:build linux

package main

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// capture -w creates its file 0600, refuses an existing one without
// --force and a symlink always. The link names no NIC: the file is dealt
// with before the vif, so these fail after it, at the NIC.
func TestCaptureFileSafety(t *testing.T) {
	dir := t.TempDir()
	capture := func(args ...string) result {
		t.Helper()
		return runCmd(t, append([]string{"capture", "--link", "xdp:vxnosuch0"}, args...)...)
	}
	mode := func(name string) os.FileMode {
		t.Helper()
		fi, err := os.Lstat(name)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode()
	}

	fresh := filepath.Join(dir, "fresh.pcap")
	capture("-w", fresh)
	if m := mode(fresh); m.Perm() != 0o600 {
		t.Errorf("new -w file has mode %v, want 0600", m.Perm())
	}

	old := filepath.Join(dir, "old.pcap")
	if err := os.WriteFile(old, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := capture("-w", old)
	if b, _ := os.ReadFile(old); string(b) != "keep me" || r.code == exitOK || !strings.Contains(r.stderr, "exists (--force overwrites it)") {
		t.Errorf("existing file without --force: exit %d, content %q, stderr:\n%s", r.code, b, r.stderr)
	}
	capture("-w", old, "--force")
	if b, _ := os.ReadFile(old); strings.Contains(string(b), "keep me") || mode(old).Perm() != 0o600 {
		t.Errorf("--force: content %q, mode %v; want the pcap header only and 0600", b, mode(old).Perm())
	}

	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.pcap")
	dangling := filepath.Join(dir, "dangling.pcap")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "nowhere"), dangling); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"-w", link}, {"-w", link, "--force"}, {"-w", dangling}, {"-w", dangling, "--force"}} {
		r := capture(args...)
		if r.code == exitOK || !strings.Contains(r.stderr, "a symlink") {
			t.Errorf("%q: exit %d, stderr:\n%s", args, r.code, r.stderr)
		}
	}
	if b, _ := os.ReadFile(target); string(b) != "precious" || mode(target).Perm() != 0o644 {
		t.Errorf("the symlink's target was written: %q, mode %v", b, mode(target).Perm())
	}
	if _, err := os.Lstat(filepath.Join(dir, "nowhere")); err == nil {
		t.Errorf("a dangling symlink's target was created")
	}
}

// --netns and lab --name take only names that name a namespace (and, for a
// lab, its links): nothing that reaches outside /run/netns.
func TestNamespaceNames(t *testing.T) {
	long := strings.Repeat("n", 256)
	for _, args := range [][]string{
		{"rxdrop", "--link", "xdp:vxnosuch0", "--netns", "../../proc/1/ns/net"},
		{"rxdrop", "--link", "xdp:vxnosuch0", "--netns", ".."},
		{"run", "--link", "xdp:vxnosuch0", "--addr", "198.18.0.3/24", "--netns", "a/b"},
		{"capture", "--link", "xdp:vxnosuch0", "-w", "-", "--netns", long},
		{"lab", "up", "--name", ""},
		{"lab", "up", "--name", "../../tmp"},
		{"lab", "down", "--name", "../etc"},
		{"lab", "status", "--name", "a/b"},
		{"lab", "up", "--name", "elevenbytes"},
		{"lab", "up", "--name", "a:b"},
		{"lab", "up", "--name", "a b"},
	} {
		r := runCmd(t, args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "name") {
			t.Errorf("%q: exit %d, want %d naming the name; stderr:\n%s", args, r.code, exitUsage, r.stderr)
		}
	}
}

// run refuses to take what the host uses: an address it holds anywhere in
// the NIC's namespace, an IPv6 address sharing the solicited-node group of
// one on the NIC's link (its EUI-64 link-local included), a MAC of the NIC,
// of an interface on it, or on its address list. Each error names the
// conflict; --allow-host-identity overrides.
func TestIntegrationRunRefusesHostIdentity(t *testing.T) {
	labtest.RequireRoot(t)
	lab := labtest.NewT(t, netlab.Options{})
	if err := addLabIPv6(lab); err != nil {
		t.Fatal(err)
	}
	nic := lab.Link[netlab.Host]
	for _, cmd := range [][]string{
		{"ip", "addr", "add", "198.18.9.9/32", "dev", "lo"},
		{"ip", "link", "add", "link", nic, "name", "vxmv0", "address", "02:00:00:00:aa:01", "type", "macvlan"},
		{"bridge", "fdb", "add", "02:00:00:00:aa:02", "dev", nic, "self", "permanent"},
	} {
		if _, err := lab.Run(netlab.Host, cmd[0], cmd[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	mac := lab.MAC[netlab.Host]
	eui := netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x00, 2: 0x01, 3: 0x98, 4: 0x00, 5: 0x18, 12: 0x77, 13: mac[3], 14: mac[4], 15: mac[5]})
	run := func(args ...string) result {
		t.Helper()
		return runCmd(t, append([]string{"run", "--netns", lab.NS[netlab.Host], "--link", "xdp:" + nic,
			"--trust-rx-checksum", "--duration", "1s", "--echo", "0", "--http", "off"}, args...)...)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--addr", "198.18.0.1/24"}, "--addr 198.18.0.1: the host kernel holds it on " + nic},
		{[]string{"--addr", "198.18.9.9/24"}, "--addr 198.18.9.9: the host kernel holds it on lo"},
		{[]string{"--addr", "fd00:198:18::1/64"}, "--addr fd00:198:18::1: the host kernel holds it on " + nic},
		{[]string{"--addr", "198.18.0.3/24", "--addr", "fd00:198:18::aa00:1/64"},
			"--addr fd00:198:18::aa00:1: its solicited-node group ff02::1:ff00:1 is that of fd00:198:18::1, on " + nic},
		{[]string{"--addr", eui.String() + "/64"}, "is that of fe80::"},
		{[]string{"--addr", "198.18.0.3/24", "--mac", mac.String()}, "--mac " + mac.String() + ": used by the NIC " + nic},
		{[]string{"--addr", "198.18.0.3/24", "--mac", "02:00:00:00:aa:01"}, "--mac 02:00:00:00:aa:01: used by vxmv0 (macvlan on " + nic + ")"},
		{[]string{"--addr", "198.18.0.3/24", "--mac", "02:00:00:00:aa:02"}, "--mac 02:00:00:00:aa:02: used by an entry of " + nic + "'s address list"},
	} {
		r := run(c.args...)
		if r.code != exitFailure || !strings.Contains(r.stderr, c.want) || !strings.Contains(r.stderr, "--allow-host-identity") {
			t.Errorf("%q: exit %d, want %d with %q; stderr:\n%s", c.args, r.code, exitFailure, c.want, r.stderr)
		}
	}
	if attached, err := xdpAttached(lab); err != nil || attached {
		t.Errorf("XDP program on the NIC after refused runs (attached %v, %v)", attached, err)
	}
	// The rare case: asked for, the address on lo is taken.
	if r := run("--addr", "198.18.9.9/24", "--allow-host-identity"); r.code != exitOK {
		t.Errorf("--allow-host-identity: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// What the host does not use is fine (the demo's addresses).
	// --echo 0 and --http off: the banner says nothing listens.
	if r := run("--addr", "198.18.0.3/24", "--addr", "fd00:198:18::3/64"); r.code != exitOK ||
		!strings.Contains(r.stdout, "  echo   off\n  status off\n") || strings.Contains(r.stdout, "limits") {
		t.Errorf("a free address: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// The UMEM of one NIC is capped (umemmax=, default 1 GiB), checked before
// anything is mapped, and the error gives the arithmetic.
func TestIntegrationUMEMCeiling(t *testing.T) {
	labtest.RequireRoot(t)
	lab := labtest.NewT(t, netlab.Options{Queues: 64})
	for _, c := range []struct{ link, want string }{
		{",queues=all,frames=1048576,frame=4096", "UMEM of 64 queues × 1048576 frames × 4096 bytes = 256 GiB, beyond the ceiling of 1 GiB"},
		{",queues=0-3,umemmax=16M", "UMEM of 4 queues × 4096 frames × 2048 bytes = 32 MiB, beyond the ceiling of 16 MiB"},
	} {
		r := runCmd(t, "rxdrop", "--netns", lab.NS[netlab.Host], "--link", "xdp:"+lab.Link[netlab.Host]+c.link, "--duration", "1s")
		if r.code != exitFailure || !strings.Contains(r.stderr, c.want) || !strings.Contains(r.stderr, "umemmax=") {
			t.Errorf("%s: exit %d, want %d saying %q:\n%s", c.link, r.code, exitFailure, c.want, r.stderr)
		}
	}
	if attached, err := xdpAttached(lab); err != nil || attached {
		t.Errorf("XDP program on the NIC after a refused UMEM (attached %v, %v)", attached, err)
	}
}

// A process without CAP_IPC_LOCK has its UMEM charged to RLIMIT_MEMLOCK:
// below the hard limit it raises the soft one and runs; beyond, it fails
// naming the limit, the bytes and the fix (not a bare ENOBUFS).
func TestIntegrationMemlock(t *testing.T) {
	labtest.RequireRoot(t)
	for _, tool := range []string{"prlimit", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found (util-linux)", tool)
		}
	}
	bin := commandBinary(t)
	lab := labtest.NewT(t, netlab.Options{})
	// 2048 frames of 2048 bytes: 4 MiB of UMEM.
	rxdrop := func(memlock string) result {
		t.Helper()
		cmd := exec.Command("ip", "netns", "exec", lab.NS[netlab.Host], "prlimit", "--memlock="+memlock,
			"setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", "--",
			bin, "rxdrop", "--link", "xdp:"+lab.Link[netlab.Host]+",frames=2048,ring=512", "--duration", "1s")
		var out, errb syncBuffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		code := 0
		if err := cmd.Run(); err != nil {
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatal(err)
			}
			code = ee.ExitCode()
		}
		return result{code, out.String(), errb.String()}
	}
	if r := rxdrop("1048576:8388608"); r.code != exitOK {
		t.Errorf("soft limit 1 MiB under a hard 8 MiB: exit %d, want the limit raised and 0:\n%s%s", r.code, r.stdout, r.stderr)
	}
	r := rxdrop("1048576:1048576")
	for _, want := range []string{"RLIMIT_MEMLOCK", "= 4 MiB", "limit is 1 MiB (hard 1 MiB)", "no CAP_IPC_LOCK", "ulimit -l"} {
		if r.code != exitFailure || !strings.Contains(r.stderr, want) {
			t.Errorf("hard limit 1 MiB: exit %d, want %d saying %q:\n%s", r.code, exitFailure, want, r.stderr)
		}
	}
	if attached, err := xdpAttached(lab); err != nil || attached {
		t.Errorf("XDP program on the NIC after the refused UMEM (attached %v, %v)", attached, err)
	}
}

// run probes its addresses first: one the peer holds (IPv4: it answers the
// ARP probe; IPv6: duplicate address detection) is not taken, and run
// exits 1 naming the peer's MAC. A free one is taken (TestIntegrationRun).
func TestIntegrationRunProbesAddresses(t *testing.T) {
	labtest.RequireRoot(t)
	lab := labtest.NewT(t, netlab.Options{})
	if err := addLabIPv6(lab); err != nil {
		t.Fatal(err)
	}
	peer := lab.MAC[netlab.Peer].String()
	for _, addrs := range [][]string{
		{"--addr", "198.18.0.2/24"},
		{"--addr", "198.18.0.3/24", "--addr", "fd00:198:18::2/64"},
	} {
		r := runCmd(t, append([]string{"run", "--netns", lab.NS[netlab.Host], "--link", "xdp:" + lab.Link[netlab.Host],
			"--duration", "1s"}, addrs...)...)
		held := addrs[len(addrs)-1]
		held = held[:strings.IndexByte(held, '/')]
		want := held + " is in use on the segment: " + peer + " answered our probe"
		if r.code != exitFailure || !strings.Contains(r.stderr, want) {
			t.Errorf("%q: exit %d, want %d with %q:\n%s%s", addrs, r.code, exitFailure, want, r.stdout, r.stderr)
		}
	}
	if attached, err := xdpAttached(lab); err != nil || attached {
		t.Errorf("XDP program on the NIC after refused runs (attached %v, %v)", attached, err)
	}
}

// run's service limits from the command line: with --max-conns 1 a second
// connection from the peer is closed at once, an idle one after
// --idle-timeout, and the metrics count both.
func TestIntegrationRunServiceLimits(t *testing.T) {
	labtest.RequireRoot(t)
	lab := labtest.NewT(t, netlab.Options{})
	r := startCmd(t, "run", "--netns", lab.NS[netlab.Host], "--link", "xdp:"+lab.Link[netlab.Host], "--addr", "198.18.0.3/24",
		"--trust-rx-checksum", "--max-conns", "1", "--idle-timeout", "500ms", "--metrics", "127.0.0.1:0")
	r.waitRunning(t)
	if !strings.Contains(r.out.String(), "limits 1 connections at once, idle 500ms") {
		t.Errorf("banner lacks the limits:\n%s", r.out.String())
	}
	closed := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := io.Copy(io.Discard, c)
		var ne net.Error
		return !(errors.As(err, &ne) && ne.Timeout())
	}
	dial := func() net.Conn {
		t.Helper()
		c, err := lab.DialContext(netlab.Peer)(testCtx(t), "tcp", "198.18.0.3:7")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a := dial()
	if _, err := a.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	_ = a.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(a, make([]byte, 1)); err != nil {
		t.Fatalf("no echo on the first connection: %v", err)
	}
	if !closed(dial()) {
		t.Errorf("a second connection over --max-conns 1 stayed open")
	}
	if !closed(a) {
		t.Errorf("an idle connection stayed open past --idle-timeout")
	}
	m := scrape(t, r.metricsURL(t))
	for _, reason := range []string{"refused", "timed_out"} {
		if v, ok := metricValue(m, "virtif_stack_connections_closed_total", `reason="`+reason+`"`); !ok || v != 1 {
			t.Errorf("connections closed, %s: %v (found %v), want 1", reason, v, ok)
		}
	}
}
