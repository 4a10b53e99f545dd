package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
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
	netlab.RequireRoot(t)
	lab := netlab.NewT(t, netlab.Options{})
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
