//go:build linux

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"kernel.org/pub/linux/libs/security/libcap/cap"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// threadCaps reads, for every thread of pid, the capability lines and
// NoNewPrivs of /proc/PID/task/TID/status.
func threadCaps(t *testing.T, pid int) map[string]map[string]string {
	t.Helper()
	tasks, err := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/status")
	if err != nil || len(tasks) == 0 {
		t.Fatalf("no threads of %d: %v", pid, err)
	}
	out := map[string]map[string]string{}
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the thread ended
		}
		m := map[string]string{}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if ok && (strings.HasPrefix(k, "Cap") || k == "NoNewPrivs") {
				m[k] = strings.TrimSpace(v)
			}
		}
		out[f] = m
	}
	return out
}

// After setup, run, rxdrop, txonly, l2fwd and capture keep CAP_NET_ADMIN
// alone, in every thread (effective, permitted, bounding; nothing
// inheritable or ambient; no_new_privs). They still receive and send
// (run answers ping), and the teardown still works: SIGTERM ends them
// with exit 0, the XDP program gone, the vif's MACs off the NIC's address
// list, the state file removed.
//
// Both builds: with cgo (psx's C side changes every thread) and static,
// CGO_ENABLED=0, as the kernel lab builds it (syscall.AllThreadsSyscall).
func TestIntegrationDropsPrivileges(t *testing.T) {
	labtest.RequireRoot(t)
	static := filepath.Join(t.TempDir(), "virtif-xdp-static")
	build := exec.Command("go", "build", "-o", static, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, out)
	}
	for _, bin := range []string{commandBinary(t), static} {
		t.Run(filepath.Base(bin), func(t *testing.T) { testDropsPrivileges(t, bin) })
	}
}

func testDropsPrivileges(t *testing.T, bin string) {
	lab := labtest.NewT(t, netlab.Options{})
	nic := lab.Link[netlab.Host]
	const netAdmin = "0000000000001000" // bit 12, CAP_NET_ADMIN
	pcap := filepath.Join(t.TempDir(), "cap.pcap")
	for _, args := range [][]string{
		{"run", "--addr", "198.18.0.3/24", "--trust-rx-checksum"},
		{"rxdrop"},
		{"txonly", "--dst", lab.MAC[netlab.Peer].String()},
		{"l2fwd"},
		{"capture", "-w", pcap},
	} {
		t.Run(args[0], func(t *testing.T) {
			stateDir := t.TempDir()
			cmd := exec.Command(bin, append([]string{args[0], "--netns", lab.NS[netlab.Host], "--link", "xdp:" + nic,
				"--mac", testMAC}, args[1:]...)...)
			cmd.Env = append(os.Environ(), "VIRTIF_XDP_STATE_DIR="+stateDir)
			var out, errb syncBuffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-done
			})
			waitLogged(t, &errb)
			if !strings.Contains(errb.String(), `caps="cap_net_admin=ep"`) {
				t.Errorf("the running line does not give the capabilities kept:\n%s", errb.String())
			}
			threads := threadCaps(t, cmd.Process.Pid)
			for f, m := range threads {
				if m["CapEff"] != netAdmin || m["CapPrm"] != netAdmin || m["CapBnd"] != netAdmin ||
					m["CapInh"] != "0000000000000000" || m["CapAmb"] != "0000000000000000" || m["NoNewPrivs"] != "1" {
					t.Errorf("%s: %v, want CAP_NET_ADMIN alone and no_new_privs", f, m)
				}
			}
			t.Logf("%d threads checked", len(threads))
			if args[0] == "run" {
				if !strings.Contains(out.String(), "capabilities cap_net_admin=ep in every thread") {
					t.Errorf("banner does not give the capabilities kept:\n%s", out.String())
				}
				if o, err := lab.Run(netlab.Peer, "ping", "-n", "-c", "2", "-i", "0.2", "-W", "5", "198.18.0.3"); err != nil {
					t.Errorf("ping after the drop: %v\n%s", err, o)
				}
				body, err := peerHTTPGet(testCtx(t), lab, "http://198.18.0.3/?text")
				if err != nil || !strings.Contains(body, "capabilities cap_net_admin=ep") {
					t.Errorf("status page after the drop (%v):\n%s", err, body)
				}
			}
			if fdb, err := lab.Run(netlab.Host, "bridge", "fdb", "show", "dev", nic, "self"); err != nil || !strings.Contains(string(fdb), testMAC) {
				t.Errorf("the vif's MAC is not on the NIC's address list while running (%v):\n%s", err, fdb)
			}
			if files, _ := filepath.Glob(filepath.Join(stateDir, "addrs-*.json")); len(files) != 1 {
				t.Errorf("state files while running: %v, want 1", files)
			}
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-done:
				done <- err
				if err != nil {
					t.Errorf("after SIGTERM: %v\n%s%s", err, out.String(), errb.String())
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("did not end after SIGTERM:\n%s", errb.String())
			}
			if attached, err := xdpAttached(lab); err != nil || attached {
				t.Errorf("XDP program left on the NIC (attached %v, %v)", attached, err)
			}
			fdb, err := lab.Run(netlab.Host, "bridge", "fdb", "show", "dev", nic, "self")
			if err != nil || strings.Contains(string(fdb), testMAC) || strings.Contains(string(fdb), "33:33:ff:00:00:03") {
				t.Errorf("the vif's MACs left on the NIC's address list (%v):\n%s", err, fdb)
			}
			if files, _ := filepath.Glob(filepath.Join(stateDir, "addrs-*.json")); len(files) != 0 {
				t.Errorf("state files left: %v", files)
			}
		})
	}
}

// The --help of every subcommand that drops capabilities ends with a
// Privileges paragraph naming exactly the capabilities dropCapabilities
// keeps (keptCaps: a change there changes the help), and says truthfully
// what happens to the bounding set: it is cut only with CAP_SETPCAP.
// switch drops nothing and says no such thing.
func TestHelpStatesPrivileges(t *testing.T) {
	keptIn := func(help string) []string {
		t.Helper()
		_, para, ok := strings.Cut(help, "\nPrivileges: ")
		if !ok {
			return nil
		}
		para, _, _ = strings.Cut(para, "\n\n")
		_, after, ok := strings.Cut(para, "keeps only ")
		if !ok {
			t.Errorf("Privileges paragraph without \"keeps only\":\n%s", para)
			return nil
		}
		list, _, _ := strings.Cut(after, ", in every thread")
		return regexp.MustCompile(`CAP_[A-Z_]+`).FindAllString(list, -1)
	}
	check := func(want []cap.Value) {
		t.Helper()
		var names []string
		for _, v := range want {
			names = append(names, strings.ToUpper(v.String()))
		}
		for _, mode := range []string{"run", "rxdrop", "txonly", "l2fwd", "capture"} {
			r := runCmd(t, mode, "--help")
			if got := keptIn(r.stdout); strings.Join(got, " ") != strings.Join(names, " ") {
				t.Errorf("%s --help: keeps %v, the code keeps %v:\n%s", mode, got, names, r.stdout)
			}
			flat := strings.Join(strings.Fields(r.stdout), " ")
			for _, want := range []string{"bounding set is cut to the kept ones too if the process has CAP_SETPCAP", "no_new_privs is set"} {
				if !strings.Contains(flat, want) {
					t.Errorf("%s --help does not say %q:\n%s", mode, want, r.stdout)
				}
			}
		}
	}
	var code []cap.Value
	for _, k := range keptCaps {
		code = append(code, k.v)
	}
	if len(code) == 0 {
		t.Fatal("keptCaps is empty")
	}
	check(code)

	// Another choice in the code is another help.
	saved := keptCaps
	t.Cleanup(func() { keptCaps = saved })
	keptCaps = append(append([]keptCap(nil), saved...), keptCap{cap.NET_RAW, "test"})
	check(append(code, cap.NET_RAW))

	if r := runCmd(t, "switch", "--help"); strings.Contains(r.stdout, "Privileges:") || strings.Contains(r.stdout, "keeps only") {
		t.Errorf("switch drops no capability, but its --help says:\n%s", r.stdout)
	}
}
