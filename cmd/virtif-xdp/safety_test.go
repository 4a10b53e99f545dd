package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
