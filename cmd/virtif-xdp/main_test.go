//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// The commands are run in-process through execute, one at a time: they set
// the default slog logger.

// syncBuffer is a bytes.Buffer safe to read while a command writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// result is a finished command.
type result struct {
	code           int
	stdout, stderr string
}

func runCmd(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb syncBuffer
	code := execute(context.Background(), args, &out, &errb)
	return result{code, out.String(), errb.String()}
}

// running is a command started in the background.
type running struct {
	out, err syncBuffer
	cancel   context.CancelFunc
	done     chan int
}

func startCmd(t *testing.T, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan int, 1)}
	go func() { r.done <- execute(ctx, args, &r.out, &r.err) }()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// waitRunning waits until the command logged that its vif is up.
func (r *running) waitRunning(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(r.err.String(), "msg=running") {
		select {
		case code := <-r.done:
			r.done <- code
			t.Fatalf("command ended with %d before running:\n%s", code, r.err.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("command not running after 10s:\n%s", r.err.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitLogged waits until a command run as a process logged to stderr that
// its vif is up.
func waitLogged(t *testing.T, stderr *syncBuffer) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(stderr.String(), "msg=running"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not running:\n%s", stderr.String())
		}
	}
}

// wait waits for the command to end and returns its result.
func (r *running) wait(t *testing.T) result {
	t.Helper()
	select {
	case code := <-r.done:
		r.done <- code
		return result{code, r.out.String(), r.err.String()}
	case <-time.After(30 * time.Second):
		t.Fatalf("command did not end:\n%s", r.err.String())
		return result{}
	}
}

// metricsURL is the address the command logged for --metrics.
func (r *running) metricsURL(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`url=(http://\S+/metrics)`).FindStringSubmatch(r.err.String())
	if m == nil {
		t.Fatalf("no metrics URL logged:\n%s", r.err.String())
	}
	return m[1]
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

// metricValue finds one sample in a scrape: the metric's name with labels
// containing each of labels.
func metricValue(scraped, name string, labels ...string) (float64, bool) {
	for _, line := range strings.Split(scraped, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		var v float64
		if _, err := fmt.Sscanf(line[strings.LastIndexByte(line, ' ')+1:], "%g", &v); err == nil {
			return v, true
		}
	}
	return 0, false
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"--bogus"},
		{"demo", "--bogus"},
		{"demo", "extra"},
		{"demo", "--frames", "0"},
		{"demo", "--keep", "--link", "xdp:eth0"},
		{"demo", "--promisc"},
		{"lab"},
		{"lab", "sideways"},
		{"lab", "up", "extra"},
		{"rxdrop"},
		{"rxdrop", "--link", "tap:x"},
		{"rxdrop", "--link", "xdp:eth0,bogus=1"},
		{"rxdrop", "--link", "xdp:eth0", "--mac", "01:00:5e:00:00:01"},
		{"rxdrop", "--link", "xdp:eth0", "--mac", "nonsense"},
		{"rxdrop", "--link", "xdp:eth0", "--duration", "-1s"},
		{"txonly", "--link", "xdp:eth0", "--size", "10"},
		{"txonly", "--link", "xdp:eth0", "--dst", "zz"},
		{"l2fwd", "--link", "xdp:eth0", "--batch", "0"},
		{"capture", "--link", "xdp:eth0"},
		{"capture", "-w", "/dev/null"},
		{"capture", "--link", "xdp:eth0", "-w", "/dev/null", "--queue", "0"},
		{"run"},
		{"run", "--link", "xdp:eth0"},
		{"run", "--addr", "198.18.0.3/24"},
		{"run", "--link", "xdp:eth0", "--addr", "198.18.0.3"},
		{"run", "--link", "xdp:eth0", "--addr", "nonsense"},
		{"run", "--link", "xdp:eth0", "--addr", "::ffff:198.18.0.3/120"},
		{"run", "--link", "xdp:eth0", "--addr", "224.0.0.1/24"},
		{"run", "--link", "xdp:eth0", "--addr", "198.18.0.3/24", "--addr", "198.18.0.3/16"},
		{"run", "--link", "xdp:eth0", "--addr", "198.18.0.3/24", "--gateway", "fd00::1"},
		{"run", "--link", "xdp:eth0", "--addr", "198.18.0.3/24", "--gateway", "gw"},
		{"run", "--link", "xdp:eth0", "--addr", "198.18.0.3/24", "--echo", "70000"},
		{"run", "--link", "xdp:eth0", "--addr", "198.18.0.3/24", "--http", "80"},
		{"run", "--link", "xdp:eth0", "--addr", "198.18.0.3/24", "--http", "example.com:80"},
		{"run", "--link", "xdp:eth0", "--addr", "198.18.0.3/24", "--http", ":7"},
		{"run", "--link", "xdp:eth0", "--addr", "198.18.0.3/24", "extra"},
	} {
		r := runCmd(t, args...)
		if r.code != exitUsage {
			t.Errorf("%q: exit %d, want %d; stderr:\n%s", args, r.code, exitUsage, r.stderr)
			continue
		}
		if !strings.Contains(r.stderr, "virtif-xdp: ") || !strings.Contains(r.stderr, "--help") {
			t.Errorf("%q: stderr does not say what went wrong and where help is:\n%s", args, r.stderr)
		}
	}
}

func TestHelpEverywhere(t *testing.T) {
	root := newRoot(io.Discard)
	var paths [][]string
	for _, c := range root.Commands() {
		paths = append(paths, []string{c.Name()})
		for _, sub := range c.Commands() {
			paths = append(paths, []string{c.Name(), sub.Name()})
		}
	}
	if len(paths) < 8 {
		t.Fatalf("only %d subcommands: %v", len(paths), paths)
	}
	for _, p := range paths {
		r := runCmd(t, append(p, "--help")...)
		if r.code != exitOK || !strings.Contains(r.stdout, "Usage:") {
			t.Errorf("%v --help: exit %d, stdout:\n%s", p, r.code, r.stdout)
		}
	}
}

// demoChecks is how many checks the lab demo makes.
const demoChecks = 15

func TestIntegrationDemo(t *testing.T) {
	labtest.RequireRoot(t)
	before, err := netlab.List()
	if err != nil {
		t.Fatal(err)
	}
	r := runCmd(t, "demo")
	if r.code != exitOK {
		t.Fatalf("demo exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{
		"ping 198.18.0.1 (the host's address) from the peer: the host kernel answers",
		"ping fd00:198:18::1 (the host's IPv6 address): the host kernel answers",
		"frames to the host's MAC reach the host kernel, not vif0",
		"frames to vif0's MAC reach vif0, not the host kernel",
		"frames to an unrelated MAC go to the host kernel, not vif0",
		"frames vif0 sends reach the peer",
		"ARP request for 198.18.0.3 reaches vif0",
		"ping 198.18.0.3 (vif0's address) from the peer: vif0's userspace stack answers",
		"ping fd00:198:18::3 (vif0's IPv6 address): vif0's userspace stack answers",
		"TCP echo at 198.18.0.3:7",
		"TCP echo at [fd00:198:18::3]:7",
		"HTTP GET http://198.18.0.3:80/?text",
		"HTTP GET http://[fd00:198:18::3]:80/?text",
		"no frame for the host kernel's 198.18.0.1 or fd00:198:18::1 reached vif0",
		"no XDP program left",
		"attach native, bind copy",
		"XDP PROGRAM: frames steered to vif0, per rule",
		"KERNEL XDP SOCKET STATISTICS",
		"USERSPACE STACK ON vif0 answered: ping 3, ping6 3, tcp connections 4 (echo 2), http requests 2",
		fmt.Sprintf("all %d checks passed", demoChecks),
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if n := strings.Count(r.stdout, " PASS "); n != demoChecks || strings.Contains(r.stdout, "FAIL") {
		t.Errorf("%d checks passed, want %d:\n%s", n, demoChecks, r.stdout)
	}
	// Every answer from the userspace stack took the vif0 path, every
	// other one the host kernel's: the PATH column says so.
	for _, row := range []string{
		`ping 198\.18\.0\.1 .*  PASS +host kernel  `,
		`ping fd00:198:18::1 .*  PASS +host kernel  `,
		`ping 198\.18\.0\.3 .*  PASS +vif0  `,
		`ping fd00:198:18::3 .*  PASS +vif0  `,
		`TCP echo at 198\.18\.0\.3:7.*  PASS +vif0  `,
		`TCP echo at \[fd00:198:18::3\]:7.*  PASS +vif0  `,
	} {
		if !regexp.MustCompile(row).MatchString(r.stdout) {
			t.Errorf("demo output has no row matching %q", row)
		}
	}
	if n := len(regexp.MustCompile(`(?m)  PASS +vif0  `).FindAllString(r.stdout, -1)); n != 8 {
		t.Errorf("%d checks went through vif0, want 8:\n%s", n, r.stdout)
	}
	// The lab it made is gone.
	m := regexp.MustCompile(`lab (vx[0-9a-f]{6}),`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("demo output names no lab:\n%s", r.stdout)
	}
	after, _ := netlab.List()
	for _, n := range after {
		if n == m[1] {
			t.Errorf("lab %s left behind (before: %v)", n, before)
		}
	}
	if t.Failed() {
		t.Logf("stdout:\n%s", r.stdout)
	}
}

func TestIntegrationLabCommands(t *testing.T) {
	labtest.RequireRoot(t)
	name := fmt.Sprintf("vxt%05d", os.Getpid()%100000)
	t.Cleanup(func() {
		if l, err := netlab.Open(name); err == nil {
			l.Close()
		}
	})
	r := runCmd(t, "lab", "up", "--name", name)
	if r.code != exitOK || !strings.Contains(r.stdout, "ip netns exec "+name+"-h") {
		t.Fatalf("lab up: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runCmd(t, "lab", "up", "--name", name); r.code != exitFailure || !strings.Contains(r.stderr, "lab down") {
		t.Fatalf("second lab up: %d, want %d with a hint:\n%s", r.code, exitFailure, r.stderr)
	}
	if r := runCmd(t, "lab", "status", "--name", name); r.code != exitOK || !strings.Contains(r.stdout, name+"h") {
		t.Fatalf("lab status: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runCmd(t, "lab", "status"); r.code != exitOK || !strings.Contains(r.stdout, "lab "+name) {
		t.Fatalf("lab status (all): %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := runCmd(t, "lab", "down", "--name", name); r.code != exitOK {
		t.Fatalf("lab down: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, err := netlab.Open(name); err == nil {
		t.Fatal("lab still there after lab down")
	}
	if r := runCmd(t, "lab", "down", "--name", name); r.code != exitOK || !strings.Contains(r.stdout, "nothing to remove") {
		t.Fatalf("lab down of a missing lab: %d, want %d and nothing to remove:\n%s%s", r.code, exitOK, r.stdout, r.stderr)
	}
}

// lab down removes whatever is left of a lab, says what was already gone,
// and succeeds however often it is repeated, even for a lab never made.
func TestIntegrationLabDownIdempotent(t *testing.T) {
	labtest.RequireRoot(t)
	name := fmt.Sprintf("vxd%05d", os.Getpid()%100000)
	t.Cleanup(func() { netlab.Remove(name) })
	if r := runCmd(t, "lab", "up", "--name", name); r.code != exitOK {
		t.Fatalf("lab up: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if out, err := exec.Command("ip", "netns", "exec", name+"-h", "ip", "link", "del", name+"h").CombinedOutput(); err != nil {
		t.Fatalf("deleting the veth by hand: %v\n%s", err, out)
	}
	if r := runCmd(t, "lab", "up", "--name", name); r.code != exitFailure || !strings.Contains(r.stderr, "partly there") {
		t.Errorf("lab up over what is left: %d, want %d saying it is partly there:\n%s", r.code, exitFailure, r.stderr)
	}
	r := runCmd(t, "lab", "down", "--name", name)
	if r.code != exitOK || !strings.Contains(r.stdout, "removed namespace "+name+"-h, namespace "+name+"-p") ||
		!strings.Contains(r.stdout, "already gone: link "+name+"h in "+name+"-h, link "+name+"p in "+name+"-p") {
		t.Fatalf("lab down without its veth: %d, want %d naming the namespaces removed and the links missing:\n%s%s",
			r.code, exitOK, r.stdout, r.stderr)
	}
	for _, ns := range []string{name + "-h", name + "-p"} {
		if _, err := os.Stat("/run/netns/" + ns); err == nil {
			t.Errorf("namespace %s left behind", ns)
		}
	}
	for _, n := range []string{name, "vxnevermade"} {
		if r := runCmd(t, "lab", "down", "--name", n); r.code != exitOK || r.stdout != "lab "+n+": nothing to remove\n" {
			t.Errorf("lab down --name %s of nothing: %d, want %d:\n%s%s", n, r.code, exitOK, r.stdout, r.stderr)
		}
	}
}

// lab down under a running vif takes the veth with its XDP program away,
// though the vif's process holds the namespace; the vif notices.
func TestIntegrationLabDownUnderVif(t *testing.T) {
	labtest.RequireRoot(t)
	bin := commandBinary(t)
	name := fmt.Sprintf("vxv%05d", os.Getpid()%100000)
	t.Cleanup(func() { netlab.Remove(name) })
	if r := runCmd(t, "lab", "up", "--name", name); r.code != exitOK {
		t.Fatalf("lab up: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	cmd, errb := startRunning(t, bin, "rxdrop", "--netns", name+"-h", "--link", "xdp:"+name+"h", "--duration", "0")
	r := runCmd(t, "lab", "down", "--name", name)
	if r.code != exitOK || !regexp.MustCompile(`removed XDP program \d+ on `+name+`h, link `+name+`h in `+name+`-h, `).MatchString(r.stdout) {
		t.Fatalf("lab down: %d, want the XDP program and the link removed:\n%s%s", r.code, r.stdout, r.stderr)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("rxdrop exited 0 after its NIC was removed:\n%s", errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("rxdrop still running after lab down:\n%s", errb.String())
	}
}

// startRunning starts the command binary with args and waits until its vif
// is up; the process is killed when the test ends.
func startRunning(t *testing.T, bin string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	errb := &syncBuffer{}
	cmd.Stderr = errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitLogged(t, errb)
	return cmd, errb
}

// summaryJSON parses the one JSON object a --json run prints.
func summaryJSON(t *testing.T, r result) benchSummary {
	t.Helper()
	var s benchSummary
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("stdout is not a JSON object: %v\n%s", err, r.stdout)
	}
	if dec.More() {
		t.Fatalf("stdout holds more than one JSON value:\n%s", r.stdout)
	}
	return s
}

// binary builds the command once for the tests that signal a real process.
var buildOnce struct {
	sync.Once
	path string
	err  error
}

func commandBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "virtif-xdp-test")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.path = filepath.Join(dir, "virtif-xdp")
		out, err := exec.Command("go", "build", "-o", buildOnce.path, ".").CombinedOutput()
		if err != nil {
			buildOnce.err = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.path
}

func TestMain(m *testing.M) {
	// The commands run inside this process must not take its
	// capabilities: the tests after them need them. The binary drops them
	// (TestIntegrationDropsPrivileges).
	// Address probes wait their interval (1 s) three times: keep the
	// commands run inside the test process quick.
	probeInterval = 100 * time.Millisecond
	dropPrivileges = func() (string, error) { return "unchanged (a command inside the test process)", nil }
	code := m.Run()
	if buildOnce.path != "" {
		os.RemoveAll(filepath.Dir(buildOnce.path))
	}
	os.Exit(code)
}

// SIGTERM ends a long run cleanly: exit 0, the summary printed, the vif
// destroyed and its XDP program gone from the NIC.
func TestIntegrationSIGTERM(t *testing.T) {
	labtest.RequireRoot(t)
	bin := commandBinary(t)
	lab := labtest.NewT(t, netlab.Options{})
	cmd := exec.Command(bin, "rxdrop", "--netns", lab.NS[netlab.Host], "--link", "xdp:"+lab.Link[netlab.Host], "--duration", "0", "--json")
	var out, errb syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitLogged(t, &errb)
	if attached, err := xdpAttached(lab); err != nil || !attached {
		t.Fatalf("no XDP program on the NIC while rxdrop runs (%v)", err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v\n%s", err, errb.String())
	}
	s := summaryJSON(t, result{stdout: out.String()})
	if s.Mode != "rxdrop" || s.Attach == "" || s.Stopped != "signal" || s.StopError != "" {
		t.Fatalf("summary after SIGTERM: %+v", s)
	}
	if attached, err := xdpAttached(lab); err != nil || attached {
		t.Fatalf("XDP program left on the NIC after SIGTERM (attached %v, %v)", attached, err)
	}
}

// demo --link runs vif0 on a NIC the user names: it answers ping for --ip
// and serves metrics until stopped.
func TestIntegrationDemoLink(t *testing.T) {
	labtest.RequireRoot(t)
	lab := labtest.NewT(t, netlab.Options{})
	r := startCmd(t, "demo", "--netns", lab.NS[netlab.Host], "--link", "xdp:"+lab.Link[netlab.Host],
		"--ip", "198.18.0.3", "--duration", "0", "--metrics", "127.0.0.1:0")
	r.waitRunning(t)
	if out, err := lab.Run(netlab.Peer, "ping", "-c", "3", "-i", "0.2", "-W", "2", "198.18.0.3"); err != nil {
		t.Fatalf("ping vif0: %v\n%s", err, out)
	}
	m := scrape(t, r.metricsURL(t))
	if v, ok := metricValue(m, "virtif_xdp_rule_frames_total", `rule="arp"`); !ok || v < 1 {
		t.Errorf("xdp arp rule counter %v (found %v), want >= 1", v, ok)
	}
	if v, ok := metricValue(m, "virtif_info", `mode="demo"`); !ok || v != 1 {
		t.Errorf("virtif_info{mode=demo} %v (found %v)", v, ok)
	}
	r.cancel()
	res := r.wait(t)
	if res.code != exitOK || !strings.Contains(res.stdout, "and 3/3 pings for 198.18.0.3") ||
		!strings.Contains(res.stdout, "XDP PROGRAM: frames steered to vif0") {
		t.Fatalf("demo --link: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if attached, err := xdpAttached(lab); err != nil || attached {
		t.Fatalf("XDP program left on the NIC (attached %v, %v)", attached, err)
	}
}

// SIGTERM in the middle of the lab demo removes the lab it made.
func TestIntegrationDemoSIGTERM(t *testing.T) {
	labtest.RequireRoot(t)
	bin := commandBinary(t)
	cmd := exec.Command(bin, "demo")
	var out, errb syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	re := regexp.MustCompile(`msg="lab up" name=(vx[0-9a-f]{6})`)
	var name string
	for deadline := time.Now().Add(10 * time.Second); name == ""; time.Sleep(time.Millisecond) {
		if m := re.FindStringSubmatch(errb.String()); m != nil {
			name = m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no lab made:\n%s", errb.String())
		}
	}
	t.Cleanup(func() {
		if l, err := netlab.Open(name); err == nil {
			l.Close()
		}
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	// Interrupted before every check was seen: failure, unless it had
	// already finished them all.
	if err == nil && !strings.Contains(out.String(), fmt.Sprintf("all %d checks passed", demoChecks)) {
		t.Fatalf("exit 0 without the checks:\n%s", out.String())
	}
	if _, err := netlab.Open(name); err == nil {
		t.Fatalf("lab %s left behind after SIGTERM:\n%s", name, errb.String())
	}
	t.Logf("after SIGTERM: %v; stderr:\n%s", err, errb.String())
}

// A reader that goes away (virtif-xdp demo | head -1) does not stop the
// demo from tearing its lab down.
func TestIntegrationDemoClosedStdout(t *testing.T) {
	labtest.RequireRoot(t)
	bin := commandBinary(t)
	cmd := exec.Command(bin, "demo")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb syncBuffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("first line: %v", err)
	}
	m := regexp.MustCompile(`lab (vx[0-9a-f]{6})`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no lab named in %q", line)
	}
	t.Cleanup(func() {
		if l, err := netlab.Open(m[1]); err == nil {
			l.Close()
		}
	})
	stdout.Close() // as head does after its line
	_ = cmd.Wait() // the demo may fail its output; it must still clean up
	if _, err := netlab.Open(m[1]); err == nil {
		t.Fatalf("lab %s left behind when stdout closed:\n%s", m[1], errb.String())
	}
}
