//go:build linux

package main

import (
	"errors"
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
// With napi=on (run), the NIC's NAPI values are napi=on's while it runs
// and those found once it ends, also when it runs as the user nobody with
// the capabilities setup needs (ambient, and no CAP_SETPCAP: the bounding
// set stays): the NAPI files are written back through descriptors opened
// before the drop, CAP_DAC_OVERRIDE being gone by then.
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

// nobodyCaps are the capabilities a non-root user is given (ambient) to
// set a vif up: no CAP_SETPCAP, so the bounding set stays; with
// CAP_DAC_OVERRIDE, for opening the NIC's root-owned NAPI sysfs files.
const nobodyCaps = "cap_net_admin,cap_net_raw,cap_bpf,cap_sys_admin,cap_ipc_lock,cap_dac_override"

// dropCase is one command testDropsPrivileges runs.
type dropCase struct {
	name   string
	args   []string // the subcommand and its flags, but --netns, --link and --mac
	link   string   // after xdp:NIC
	nobody bool     // run as the user nobody with nobodyCaps, not root
}

func testDropsPrivileges(t *testing.T, bin string) {
	lab := labtest.NewT(t, netlab.Options{})
	nic := lab.Link[netlab.Host]
	const netAdmin = "0000000000001000" // bit 12, CAP_NET_ADMIN
	pcap := filepath.Join(t.TempDir(), "cap.pcap")
	runArgs := []string{"run", "--addr", "198.18.0.3/24", "--trust-rx-checksum"}
	cases := []dropCase{
		{name: "run", args: runArgs},
		{name: "rxdrop", args: []string{"rxdrop"}},
		{name: "txonly", args: []string{"txonly", "--dst", lab.MAC[netlab.Peer].String()}},
		{name: "l2fwd", args: []string{"l2fwd"}},
		{name: "capture", args: []string{"capture", "-w", pcap}},
		// napi=on writes the NIC's NAPI values back at the end, with
		// CAP_NET_ADMIN alone; as nobody, without CAP_DAC_OVERRIDE by then.
		{name: "run-napi", args: runArgs, link: ",busypoll=8,napi=on"},
	}
	if _, err := exec.LookPath("capsh"); err == nil {
		cases = append(cases, dropCase{name: "run-napi-nobody", args: runArgs, link: ",busypoll=8,napi=on", nobody: true})
	} else if os.Getenv("CI") != "" {
		t.Fatal("no capsh: make deps installs libcap2-bin, which the run as nobody needs")
	} else {
		t.Log("no capsh (libcap2-bin, which make deps installs): the run as nobody is left out")
	}
	ownBound := threadCaps(t, os.Getpid())
	var bound string
	for _, m := range ownBound {
		bound = m["CapBnd"]
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := c.args
			napi := strings.Contains(c.link, "napi=on")
			var napiBefore string
			if napi {
				napiBefore = setNAPIValues(t, lab, "1", "1000")
			}
			stateDir := t.TempDir()
			if c.nobody {
				stateDir = "" // made below, where nobody can reach it
			}
			argv := append([]string{bin, args[0], "--netns", lab.NS[netlab.Host], "--link", "xdp:" + nic + c.link,
				"--mac", testMAC}, args[1:]...)
			wantBound := netAdmin
			if c.nobody {
				// The binary where nobody may run it; the state directory
				// root's, 0700, as a root run before would have left it:
				// nobody keeps its files in uid-N inside, made while it
				// still has CAP_DAC_OVERRIDE, and removes them after the
				// drop through the directory it opened then.
				dir, err := os.MkdirTemp("", "virtif-xdp-nobody")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { os.RemoveAll(dir) })
				stateDir = filepath.Join(dir, "state")
				b, err := os.ReadFile(bin)
				if err == nil {
					err = os.WriteFile(filepath.Join(dir, "virtif-xdp"), b, 0o755)
				}
				if err == nil {
					err = errors.Join(os.Chmod(dir, 0o755), os.Mkdir(stateDir, 0o700))
				}
				if err != nil {
					t.Fatal(err)
				}
				argv = append([]string{"capsh", "--caps=" + nobodyCaps + "+eip cap_setuid,cap_setgid+ep", "--keep=1", "--user=nobody",
					"--addamb=" + nobodyCaps, "--shell=" + filepath.Join(dir, "virtif-xdp"), "--"}, argv[1:]...)
				wantBound = bound // without CAP_SETPCAP it stays
			}
			cmd := exec.Command(argv[0], argv[1:]...)
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
				if m["CapEff"] != netAdmin || m["CapPrm"] != netAdmin || m["CapBnd"] != wantBound ||
					m["CapInh"] != "0000000000000000" || m["CapAmb"] != "0000000000000000" || m["NoNewPrivs"] != "1" {
					t.Errorf("%s: %v, want CAP_NET_ADMIN alone (bounding set %s) and no_new_privs", f, m, wantBound)
				}
			}
			t.Logf("%d threads checked", len(threads))
			if napi {
				if got := readNAPIValues(t, lab); got != napiDefer {
					t.Errorf("NAPI values while running: %q, want %q", got, napiDefer)
				}
			}
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
			stateFiles := func() []string {
				own, _ := filepath.Glob(filepath.Join(stateDir, "addrs-*.json"))
				users, _ := filepath.Glob(filepath.Join(stateDir, "uid-*", "addrs-*.json"))
				return append(own, users...)
			}
			if files := stateFiles(); len(files) != 1 {
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
			if files := stateFiles(); len(files) != 0 {
				t.Errorf("state files left: %v", files)
			}
			if napi {
				if got := readNAPIValues(t, lab); got != napiBefore {
					t.Errorf("NAPI values after the run: %q, want those found, %q:\n%s", got, napiBefore, errb.String())
				}
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

// napiDefer is what napi=on sets napi_defer_hard_irqs and
// gro_flush_timeout to (virtif/xdp/napi.go).
const napiDefer = "2 200000"

// readNAPIValues reads the host NIC's napi_defer_hard_irqs and
// gro_flush_timeout, as "N N".
func readNAPIValues(t *testing.T, lab *netlab.Lab) string {
	t.Helper()
	var vals []string
	for _, f := range []string{"napi_defer_hard_irqs", "gro_flush_timeout"} {
		out, err := lab.Run(netlab.Host, "cat", "/sys/class/net/"+lab.Link[netlab.Host]+"/"+f)
		if err != nil {
			t.Fatal(err)
		}
		vals = append(vals, strings.TrimSpace(string(out)))
	}
	return strings.Join(vals, " ")
}

// setNAPIValues sets them (values of the test's own, to see them come
// back rather than the kernel's zeros) and returns them as read.
func setNAPIValues(t *testing.T, lab *netlab.Lab, deferIRQs, flush string) string {
	t.Helper()
	for f, v := range map[string]string{"napi_defer_hard_irqs": deferIRQs, "gro_flush_timeout": flush} {
		if _, err := lab.Run(netlab.Host, "sh", "-c", "echo "+v+" > /sys/class/net/"+lab.Link[netlab.Host]+"/"+f); err != nil {
			t.Fatal(err)
		}
	}
	return readNAPIValues(t, lab)
}
