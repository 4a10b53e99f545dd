package depcheck

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The fresh-machine item of issue 8: `make bpfcheck` (bpf/generate.sh
// --check) must pass in a clean clone on a machine where asm/types.h is
// reachable only in Debian's multiarch folder, as on a fresh Debian 12
// (clang -target bpf does not search it; a /usr/include/asm that gcc-multilib
// or a kernel header install leaves behind hid that on the machine it was
// developed on). Where /usr/include/asm exists the check runs in a mount
// namespace of its own with an empty folder over it.
func TestBPFCheckCleanClone(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (a mount namespace hides /usr/include/asm)")
	}
	for _, tool := range []string{"clang-14", "llvm-strip-14", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: make bpfcheck installs clang-14 and llvm-14 (%v)", tool, err)
		}
	}
	root := repoRoot(t)
	clone := filepath.Join(t.TempDir(), "clone")
	if out, err := exec.Command("git", "clone", "-q", "--no-hardlinks", root, clone).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	script := "bpf/generate.sh --check" // as make bpfcheck runs it
	if _, err := os.Stat("/usr/include/asm"); err == nil {
		script = "mount -t tmpfs none /usr/include/asm && " + script
	}
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script)
	cmd.Dir = clone
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bpf/generate.sh --check in a clean clone, asm/types.h only in the multiarch folder: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
