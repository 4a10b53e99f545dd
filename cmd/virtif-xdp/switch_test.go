//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket/pcapgo"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
	"github.com/virtif-xdp/virtif-xdp/internal/switchd"
	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
)

// switchLab is a lab whose host end a `virtif-xdp switch` process owns, and
// tenant namespaces of its own.
type switchLab struct {
	*netlab.Lab
	bin     string
	control string
	sw      *exec.Cmd
	swErr   *syncBuffer
}

func newSwitchLab(t *testing.T) *switchLab {
	t.Helper()
	labtest.RequireRoot(t)
	l := &switchLab{Lab: labtest.NewT(t, netlab.Options{}), bin: commandBinary(t)}
	// What a tenant sends leaves by a redirect into the NIC, here a veth:
	// its peer receives redirected frames only with NAPI (GRO, or XDP).
	if out, err := l.Run(netlab.Peer, "ethtool", "-K", l.Link[netlab.Peer], "gro", "on"); err != nil {
		t.Fatalf("GRO on the peer: %v\n%s", err, out)
	}
	if err := l.SetTxChecksum(netlab.Peer, false); err != nil {
		t.Fatal(err)
	}
	l.startSwitch(t)
	return l
}

// startSwitch starts `virtif-xdp switch` on the lab's host end, killed
// when the test ends.
func (l *switchLab) startSwitch(t testing.TB) {
	t.Helper()
	l.control = filepath.Join(t.TempDir(), "switch.sock")
	l.sw = exec.Command(l.bin, "switch", "--netns", l.NS[netlab.Host], "--link", l.Link[netlab.Host], "--control", l.control)
	l.swErr = &syncBuffer{}
	l.sw.Stderr = l.swErr
	if err := l.sw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.sw.Process.Kill(); l.sw.Wait() })
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(l.swErr.String(), `msg="switch running"`); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("switch not running:\n%s", l.swErr.String())
		}
	}
}

// tenantNS makes a namespace for a tenant, removed when the test ends.
func (l *switchLab) tenantNS(t testing.TB, suffix string) string {
	t.Helper()
	ns := l.Name + "-" + suffix
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", ns, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	return ns
}

// tenant starts `run` as a tenant in ns at addr with mac.
func (l *switchLab) tenant(t *testing.T, ns, addr, mac string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	return startRunning(t, l.bin, "run", "--netns", ns, "--link", "xdp:"+l.Link[netlab.Host]+",switch="+l.control,
		"--addr", addr, "--mac", mac, "--trust-rx-checksum", "--probe", "100ms")
}

// status is `switch status --json`, by tenant name (the vif's).
func (l *switchLab) status(t *testing.T) (switchd.NICInfo, []switchd.TenantInfo) {
	t.Helper()
	out, err := exec.Command(l.bin, "switch", "status", "--control", l.control, "--json").Output()
	if err != nil {
		t.Fatalf("switch status: %v", err)
	}
	var st struct {
		NIC     switchd.NICInfo      `json:"nic"`
		Tenants []switchd.TenantInfo `json:"tenants"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("switch status: %v\n%s", err, out)
	}
	return st.NIC, st.Tenants
}

func byMAC(ts []switchd.TenantInfo, mac string) (switchd.TenantInfo, bool) {
	for _, ti := range ts {
		if len(ti.MACs) > 0 && ti.MACs[0] == mac {
			return ti, true
		}
	}
	return switchd.TenantInfo{}, false
}

func (l *switchLab) ping(t *testing.T, dst string) error {
	t.Helper()
	out, err := l.Run(netlab.Peer, "ping", "-n", "-c", "2", "-i", "0.2", "-W", "5", dst)
	if err != nil {
		return fmt.Errorf("ping %s from the peer: %w\n%s", dst, err, out)
	}
	return nil
}

func (l *switchLab) httpGet(t *testing.T, addr string) error {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: l.DialContext(netlab.Peer)}, Timeout: 10 * time.Second}
	r, err := c.Get("http://" + addr + "/?text")
	if err != nil {
		return err
	}
	defer r.Body.Close()
	body, _ := io.ReadAll(r.Body)
	if r.StatusCode != 200 || !bytes.Contains(body, []byte("inet "+addr)) {
		return fmt.Errorf("GET %s: %d\n%s", addr, r.StatusCode, body)
	}
	return nil
}

// linkExists reports whether ifname is in namespace ns.
func linkExists(t *testing.T, ns, ifname string) bool {
	t.Helper()
	found, err := netlab.LinkExists(ns, ifname)
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// sendFrom sends frames through AF_PACKET on ifname in namespace ns (a
// tenant's veth end: they reach its switch end as the tenant's).
func sendFrom(t *testing.T, ns, ifname string, frames ...[]byte) {
	t.Helper()
	if err := netlab.DoIn(ns, func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		p, err := trafficgen.NewPacket(ifc.Index)
		if err != nil {
			return err
		}
		defer p.Close()
		_, err = p.SendFrames(frames)
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

const (
	macA = "02:00:5e:00:53:0a"
	macB = "02:00:5e:00:53:0b"
	macC = "02:00:5e:00:53:0c"
)

// Two `run` tenants of one switch on one NIC, each in a namespace of its
// own: each answers ping and HTTP from the peer and gets none of the
// other's frames; the host kernel's address on the NIC still answers; a
// frame a tenant sends with a source MAC not its own is dropped and
// counted. SIGKILL of a tenant: its MAC is no longer steered, its veth goes,
// the other is undisturbed. SIGKILL of the switch: the NIC is left without
// a program, and the tenant left exits 1 naming the switch.
func TestIntegrationSwitchTenants(t *testing.T) {
	l := newSwitchLab(t)
	nsA, nsB := l.tenantNS(t, "a"), l.tenantNS(t, "b")
	a, _ := l.tenant(t, nsA, "198.18.0.3/24", macA)
	b, bErr := l.tenant(t, nsB, "198.18.0.4/24", macB)

	for _, dst := range []string{"198.18.0.3", "198.18.0.4", "198.18.0.1"} {
		if err := l.ping(t, dst); err != nil {
			t.Error(err)
		}
	}
	for _, dst := range []string{"198.18.0.3", "198.18.0.4"} {
		if err := l.httpGet(t, dst); err != nil {
			t.Error(err)
		}
	}
	_, ts := l.status(t)
	ta, okA := byMAC(ts, macA)
	tb, okB := byMAC(ts, macB)
	if !okA || !okB || len(ts) != 2 {
		t.Fatalf("switch status: %+v", ts)
	}
	if ta.Counters.FromNIC == 0 || ta.Counters.ToNIC == 0 || tb.Counters.FromNIC == 0 || tb.Counters.ToNIC == 0 {
		t.Errorf("counters after ping and HTTP: a %+v, b %+v", ta.Counters, tb.Counters)
	}
	// b's traffic reaches a not at all.
	for range 3 {
		if err := l.ping(t, "198.18.0.4"); err != nil {
			t.Error(err)
		}
		if err := l.httpGet(t, "198.18.0.4"); err != nil {
			t.Error(err)
		}
	}
	_, ts = l.status(t)
	ta2, _ := byMAC(ts, macA)
	if ta2.Counters.FromNIC != ta.Counters.FromNIC || ta2.Counters.FromTenant != ta.Counters.FromTenant {
		t.Errorf("tenant a received frames while the peer talked to b: %+v then %+v", ta.Counters, ta2.Counters)
	}

	// A spoofed source MAC from a's namespace (its veth end) is dropped and counted.
	spoof := trafficgen.UDPFrame(l.MAC[netlab.Peer], net.HardwareAddr{0x02, 0, 0x5e, 0, 0x53, 0x99},
		netip.MustParseAddr("198.18.0.3"), netip.MustParseAddr("198.18.0.2"), 9, 9, 64)
	before := ta2.Counters.Spoofed
	sendFrom(t, nsA, ta.Ifname, spoof, spoof, spoof, spoof, spoof, spoof, spoof, spoof, spoof, spoof)
	eventually(t, "10 spoofed frames counted", func() bool {
		_, ts := l.status(t)
		ta3, _ := byMAC(ts, macA)
		return ta3.Counters.Spoofed >= before+10
	})

	// SIGKILL of a: its port and veth go, its MAC is not steered, b works.
	a.Process.Kill()
	a.Wait()
	eventually(t, "tenant a's removal", func() bool { _, ts := l.status(t); return len(ts) == 1 })
	if linkExists(t, nsA, ta.Ifname) || linkExists(t, l.NS[netlab.Host], ta.SwitchIf) {
		t.Errorf("tenant a's veth pair left after SIGKILL")
	}
	nic0, _ := l.status(t)
	if err := l.ping(t, "198.18.0.3"); err == nil {
		t.Errorf("the killed tenant's address still answers")
	}
	nic1, _ := l.status(t)
	if nic1.Counters.Pass <= nic0.Counters.Pass {
		t.Errorf("frames for the killed tenant did not pass to the host: %+v then %+v", nic0.Counters, nic1.Counters)
	}
	if err := l.ping(t, "198.18.0.4"); err != nil {
		t.Errorf("b after a was killed: %v", err)
	}
	if err := l.httpGet(t, "198.18.0.4"); err != nil {
		t.Errorf("b after a was killed: %v", err)
	}

	// SIGKILL of the switch: the NIC is clean, b exits 1 naming the switch.
	l.sw.Process.Kill()
	l.sw.Wait()
	done := make(chan error, 1)
	go func() { done <- b.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("tenant b after the switch was killed: %v, want exit 1", err)
		}
		if !strings.Contains(bErr.String(), "switch at "+l.control) {
			t.Errorf("tenant b's exit does not name the switch:\n%s", bErr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("tenant b still running after the switch was killed")
	}
	if attached, err := xdpAttached(l.Lab); err != nil || attached {
		t.Errorf("program left on the NIC after the switch was killed (%v, %v)", attached, err)
	}
	if linkExists(t, nsB, tb.Ifname) {
		t.Errorf("tenant b's veth end left after the switch and b are gone")
	}
	if err := l.ping(t, "198.18.0.1"); err != nil {
		t.Errorf("the host after the switch is gone: %v", err)
	}
}

// Frames from one tenant to another's MAC arrive byte for byte: run as
// tenant a sends, capture as tenant c writes what it got.
func TestIntegrationSwitchTenantToTenant(t *testing.T) {
	l := newSwitchLab(t)
	nsA, nsC := l.tenantNS(t, "a"), l.tenantNS(t, "c")
	l.tenant(t, nsA, "198.18.0.3/24", macA)
	file := filepath.Join(t.TempDir(), "c.pcap")
	capt, _ := startRunning(t, l.bin, "capture", "--netns", nsC, "--link", "xdp:"+l.Link[netlab.Host]+",switch="+l.control,
		"--mac", macC, "-w", file, "--count", "5")
	_, ts := l.status(t)
	ta, _ := byMAC(ts, macA)
	src, _ := net.ParseMAC(macA)
	dst, _ := net.ParseMAC(macC)
	var sent [][]byte
	for i := range 5 {
		f := trafficgen.UDPFrame(dst, src, netip.MustParseAddr("198.18.0.3"), netip.MustParseAddr("198.18.0.5"), 9, 9, 100+i*200)
		trafficgen.SetSeq(f, uint64(i))
		sent = append(sent, f)
	}
	sendFrom(t, nsA, ta.Ifname, sent...)
	done := make(chan error, 1)
	go func() { done <- capt.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("capture: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("capture did not get its 5 frames")
	}
	fh, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	pr, err := pcapgo.NewReader(fh)
	if err != nil {
		t.Fatal(err)
	}
	for i := range sent {
		got, _, err := pr.ReadPacketData()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(got, sent[i]) {
			t.Errorf("frame %d: got % x\nwant % x", i, got, sent[i])
		}
	}
	_, ts = l.status(t)
	if ta, _ := byMAC(ts, macA); ta.Counters.ToTenant < 5 {
		t.Errorf("tenant a's counters: %+v, want 5 to a tenant", ta.Counters)
	}
}

// switch status prints the NIC and a row per tenant.
func TestPrintSwitchStatus(t *testing.T) {
	var b bytes.Buffer
	nic := switchd.NICInfo{Name: "eth0", Ifindex: 2, Attach: "native", Tenants: 1}
	nic.Counters.Pass = 7
	ti := switchd.TenantInfo{Port: 1, Name: "vif0", PID: 42, Ifname: "vs2p1t", MACs: []string{macA}, IPv4s: []string{"198.18.0.3"}}
	ti.Counters.FromNIC, ti.Counters.Spoofed = 5, 3
	if err := printSwitchStatus(&b, nic, []switchd.TenantInfo{ti}, false); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "NIC eth0 (ifindex 2, native): 1 tenants; to the host 7") ||
		!strings.HasPrefix(lines[1], "PORT") || strings.Join(strings.Fields(lines[2]), " ") != "1 vif0 42 vs2p1t "+macA+" 198.18.0.3 - 5 0 0 0 3 0" {
		t.Errorf("status:\n%s", b.String())
	}
}

// switch --metrics serves the counters of the NIC and of each tenant, and
// Ctrl-C stops the switch with exit 0 and the NIC left clean.
func TestIntegrationSwitchMetrics(t *testing.T) {
	labtest.RequireRoot(t)
	lab := labtest.NewT(t, netlab.Options{})
	control := filepath.Join(t.TempDir(), "switch.sock")
	r := startCmd(t, "switch", "--netns", lab.NS[netlab.Host], "--link", lab.Link[netlab.Host], "--control", control, "--metrics", "127.0.0.1:0")
	eventually(t, "the switch running", func() bool { return strings.Contains(r.err.String(), `msg="switch running"`) })
	cl, err := switchd.Dial(control)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := netlab.DoIn(lab.NS[netlab.Peer], func() error { _, err := cl.AddTenant("t1"); return err }); err != nil {
		t.Fatal(err)
	}
	if err := l0ping(lab); err != nil {
		t.Fatal(err)
	}
	m := scrape(t, r.metricsURL(t))
	for _, want := range []string{`virtif_switch_frames_total{port="0",tenant="",what="pass"}`, `virtif_switch_frames_total{port="1",tenant="t1",what="spoofed"}`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s:\n%s", want, m)
		}
	}
	if v, ok := metricValue(m, "virtif_switch_frames_total", `port="0"`, `what="pass"`); !ok || v < 1 {
		t.Errorf("frames passed to the host: %v (found %v), want the ping's", v, ok)
	}
	r.cancel()
	if res := r.wait(t); res.code != 0 {
		t.Errorf("switch after Ctrl-C: exit %d\n%s", res.code, res.stderr)
	}
	if attached, err := xdpAttached(lab); err != nil || attached {
		t.Errorf("program left on the NIC after the switch stopped (%v, %v)", attached, err)
	}
}

func l0ping(lab *netlab.Lab) error {
	if out, err := lab.Run(netlab.Peer, "ping", "-n", "-c", "1", "-W", "5", "198.18.0.1"); err != nil {
		return fmt.Errorf("ping the host: %w\n%s", err, out)
	}
	return nil
}
