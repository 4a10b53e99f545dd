//go:build linux

package xdp

import (
	"fmt"
	"testing"
	"time"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
	"github.com/virtif-xdp/virtif-xdp/internal/netlab/labtest"
)

// A vif that answers each request it receives (ping, an echo, l2fwd's
// ping-pong) is not a transmit-only NIC: its poll-mode RX goroutine keeps
// waiting in poll(2) between requests and never naps, so a request that
// comes after a quiet spell is not held up to maxNap (the ~1 ms outliers
// of poll mode).
func TestIntegrationRequestResponseNoNap(t *testing.T) {
	labtest.RequireRoot(t)
	lab := labtest.NewT(t, netlab.Options{})
	v := newVif(t, lab, nil, ",rxwait=poll")
	reply := make([]byte, 2048)
	v.ifc.SetInput(func(f []byte, _ bool) {
		b := reply[:len(f)]
		copy(b, f)
		copy(b[0:6], f[6:12])
		copy(b[6:12], f[0:6])
		_ = v.ifc.Output([][]byte{b})
	})
	raw := openRaw(t, lab, netlab.Peer)
	naps := rxNaps.Load()
	const rounds = 40
	answered := 0
	for i := range rounds {
		marker := fmt.Sprintf("req-%03d", i)
		raw.send(t, frame(lab, v.ifc.HardwareAddr(), marker, 64))
		if len(raw.collect([]byte(marker), 1, 5*time.Second)) == 1 {
			answered++
		}
		// Longer than rxQuiet, shorter than quietTime: the window in
		// which the goroutine used to nap.
		time.Sleep(3 * time.Millisecond)
	}
	if answered != rounds {
		t.Fatalf("%d of %d requests answered", answered, rounds)
	}
	if n := rxNaps.Load() - naps; n != 0 {
		t.Errorf("the RX goroutine napped %d times between requests it answered", n)
	}
}
