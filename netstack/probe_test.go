package netstack

import (
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	// Probing waits its interval after the last probe: keep the tests quick.
	defaultProbeInterval = 50 * time.Millisecond
	os.Exit(m.Run())
}

// A host does not take an address someone on the segment answers for: ARP
// probes find an IPv4 holder, duplicate address detection an IPv6 one, and
// NewHost fails with EADDRINUSE naming the holder's MAC, leaving nothing
// registered. A free address is taken as before.
func TestHostProbesAddresses(t *testing.T) {
	c := newCloner(t)
	seg := segName(t)
	holderIfc, ifc := memIfc(t, c, seg), memIfc(t, c, seg)
	holder, err := NewHost(holderIfc, HostConfig{Addrs: []netip.Prefix{srv4, srv6}})
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	for _, taken := range []netip.Prefix{srv4, srv6} {
		h, err := NewHost(ifc, HostConfig{Addrs: []netip.Prefix{cli4, taken}})
		var ce *ConflictError
		if !errors.As(err, &ce) || !errors.Is(err, unix.EADDRINUSE) || ce.Addr != taken.Addr() ||
			ce.Holder.String() != holderIfc.HardwareAddr().String() {
			t.Errorf("taking %s, held by %s: %v, want a conflict naming the holder", taken, holderIfc.HardwareAddr(), err)
		}
		if h != nil {
			h.Close()
		}
		if got := ifc.IPv4(); len(got) != 0 {
			t.Errorf("a refused host left %v registered", got)
		}
	}
	h, err := NewHost(ifc, HostConfig{Addrs: []netip.Prefix{cli4, cli6}})
	if err != nil {
		t.Fatalf("free addresses: %v", err)
	}
	h.Close()
	// Off: no probe, the address is taken.
	h, err = NewHost(ifc, HostConfig{Addrs: []netip.Prefix{srv4}, Probe: ProbeConfig{Off: true}})
	if err != nil {
		t.Fatalf("probe off: %v", err)
	}
	h.Close()
}
