//go:build linux

package xdp

import (
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// napiValues reads the host NIC's napiFiles, space-separated.
func napiValues(t testing.TB, lab *netlab.Lab) string {
	t.Helper()
	var vals []string
	for _, f := range napiFiles {
		out, err := lab.Run(netlab.Host, "cat", "/sys/class/net/"+lab.Link[netlab.Host]+"/"+f)
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		vals = append(vals, strings.TrimSpace(string(out)))
	}
	return strings.Join(vals, " ")
}

// setNAPIValues writes the host NIC's napiFiles.
func setNAPIValues(t testing.TB, lab *netlab.Lab, v ...string) {
	t.Helper()
	for i, f := range napiFiles {
		if out, err := lab.Run(netlab.Host, "sh", "-c", "echo "+v[i]+" > /sys/class/net/"+lab.Link[netlab.Host]+"/"+f); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
}

// napi=on sets the NIC's napi_defer_hard_irqs and gro_flush_timeout while
// it is open (through a sysfs of the NIC's own namespace, which the test
// process's /sys does not show) and writes the old values back at close;
// Info says whether busy polling is in effect, which it is once a socket
// has received a frame and so has a NAPI id.
func TestIntegrationBusyPollNAPI(t *testing.T) {
	labtest.RequireRoot(t)
	lab := labtest.NewT(t, netlab.Options{})
	read := func() string { return napiValues(t, lab) }
	// Values of our own, to see that they come back rather than zeros.
	setNAPIValues(t, lab, "1", "1000")
	before := read()
	v := newVif(t, lab, nil, ",busypoll=8,napi=on")
	if got, want := read(), napiDefer+" "+napiFlushTimeout; got != want {
		t.Errorf("while open: napi_defer_hard_irqs and gro_flush_timeout are %q, want %q", got, want)
	}
	if bp := v.b.Info().BusyPoll; !strings.Contains(bp, "no-op so far") || !strings.Contains(bp, "napi_defer_hard_irqs 2") {
		t.Errorf("before any frame: Info().BusyPoll = %q", bp)
	}
	raw := openRaw(t, lab, netlab.Peer)
	raw.send(t, frame(lab, v.ifc.HardwareAddr(), "napi", 64))
	if !waitFor(func() bool { return v.rec.count() > 0 }) {
		t.Fatal("the vif received nothing")
	}
	// veth registers its XDP receive queue before its NAPI has an id, so
	// its frames carry none and busy polling a veth is a no-op (the kernel
	// polls by NAPI id); a NIC with NAPI ids reports them.
	if bp := v.b.Info().BusyPoll; !strings.HasPrefix(bp, "on, budget 8, NAPI id ") && !strings.HasPrefix(bp, "no-op so far") {
		t.Errorf("after a frame: Info().BusyPoll = %q, want on with a NAPI id or a no-op", bp)
	} else {
		t.Logf("after a frame on veth: %s", bp)
	}
	if err := v.ifc.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for read() != before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := read(); got != before {
		t.Errorf("after close: %q, want the values found, %q", got, before)
	}
}

func TestLinkStrNAPI(t *testing.T) {
	if _, err := ParseLinkStr("xdp:eth0,napi=on"); !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "busypoll") {
		t.Errorf("napi=on without busypoll: %v, want EINVAL naming busypoll", err)
	}
	c, err := ParseLinkStr("xdp:eth0,busypoll=8,napi=on")
	if err != nil || !c.NAPI {
		t.Fatalf("%+v, %v", c, err)
	}
	if c2, err := ParseLinkStr(c.String()); err != nil || !c2.NAPI {
		t.Errorf("String %q does not parse back with napi: %v", c.String(), err)
	}
	if _, err := ParseLinkStr("xdp:eth0,busypoll=8,napi=yes"); !errors.Is(err, unix.EINVAL) {
		t.Errorf("napi=yes: %v, want EINVAL", err)
	}
}
