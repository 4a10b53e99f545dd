//go:build linux

package main

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// A SIGKILLed rxdrop leaves its vif's MAC on the NIC's unicast list
// ('bridge fdb show dev NIC self'); 'cleanup' removes it, names the dead
// process, and has nothing more to do the second time.
func TestIntegrationCleanupAfterKill(t *testing.T) {
	labtest.RequireRoot(t)
	t.Setenv("VIRTIF_XDP_STATE_DIR", t.TempDir())
	bin := commandBinary(t)
	lab := labtest.NewT(t, netlab.Options{})
	const mac = "b2:0a:42:0b:0e:07"
	cmd, _ := startRunning(t, bin, "rxdrop", "--netns", lab.NS[netlab.Host], "--link", "xdp:"+lab.Link[netlab.Host], "--mac", mac, "--duration", "0")
	listed := func() bool {
		out, err := lab.Run(netlab.Host, "bridge", "fdb", "show", "dev", lab.Link[netlab.Host], "self")
		if err != nil {
			t.Fatalf("bridge fdb show: %v: %s", err, out)
		}
		return strings.Contains(string(out), mac+" ")
	}
	if !listed() {
		t.Fatalf("the vif's MAC %s is not on the NIC's list while rxdrop runs", mac)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if !listed() {
		t.Fatal("the MAC went with the killed process: nothing to test")
	}
	r := runCmd(t, "cleanup")
	want := fmt.Sprintf(`cleanup: pid %d on %s: removed 1 of its 1 address-list entries \[%s\]`, cmd.Process.Pid, lab.Link[netlab.Host], mac)
	if r.code != exitOK || !regexp.MustCompile(want).MatchString(r.stdout) {
		t.Fatalf("cleanup: exit %d, want 0 and %q:\n%s%s", r.code, want, r.stdout, r.stderr)
	}
	if listed() {
		t.Errorf("cleanup left %s on the NIC's list", mac)
	}
	if r := runCmd(t, "cleanup"); r.code != exitOK || !strings.Contains(r.stdout, "nothing left") {
		t.Errorf("second cleanup: exit %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
}
