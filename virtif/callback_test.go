package virtif

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/virtif-xdp/virtif-xdp/virtif/internal/testutil"
	"golang.org/x/sys/unix"
)

// getterTap calls, from inside a tap, everything the Tap documentation
// says a tap may call: the lock-free getters and the cloner's lookups.
func getterTap(c *Cloner, ifp *Interface, calls *atomic.Uint64) Tap {
	return tapFunc(func([]byte, Direction) {
		_ = ifp.HardwareAddr()
		_, _ = ifp.LinkStr()
		_, _ = ifp.LinkStrLen()
		_ = ifp.Stats()
		_ = ifp.Backend()
		_, _ = ifp.Flags(), ifp.MTU()
		_, _ = c.Interface(ifp.Name())
		_ = c.Interfaces()
		calls.Add(1)
	})
}

// A tap that calls the getters while Down, then destroy, wait for the send
// lock does not deadlock: Down and destroy no longer hold the control lock
// (or the cloner's) while they wait, and the getters take no lock. Each
// round closes an interface while its senders still run.
func TestTapCallsGettersDuringDownAndClose(t *testing.T) {
	c, err := NewCloner(ClonerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Uint64
	ok := testutil.Within(t, "Down/Up and Close under traffic", func() {
		for range 20 {
			tapGettersRound(t, c, &calls)
		}
	})
	if !ok {
		return // goroutines are stuck: closing the cloner would hang too
	}
	if err := c.Close(); err != nil {
		t.Error(err)
	}
	t.Logf("the tap ran %d times", calls.Load())
}

func tapGettersRound(t *testing.T, c *Cloner, calls *atomic.Uint64) {
	ifp, _ := c.Create()
	if err := ifp.SetLinkStr("rec:tapgetters"); err != nil {
		t.Error(err)
		return
	}
	b := ifp.Backend().(*recBackend)
	ifp.SetInput(func([]byte, bool) {})
	if err := ifp.AddTap(getterTap(c, ifp, calls)); err != nil {
		t.Error(err)
	}
	_ = ifp.Up()
	var wg sync.WaitGroup
	var stop atomic.Bool
	for g := range 3 {
		wg.Add(1)
		go func() { // two senders (Out taps under the send lock), one receiver
			defer wg.Done()
			f := frameTo(bcast, 60)
			for !stop.Load() {
				if g == 2 {
					b.cfg.Deliver(f)
				} else if err := ifp.Output([][]byte{f}); isErrno(err, unix.ENXIO) { // destroyed
					return
				}
			}
		}()
	}
	start := calls.Load()
	for range 30 {
		_ = ifp.Down()
		_ = ifp.Up()
	}
	for calls.Load() < start+100 { // traffic through the tap surely flows
		runtime.Gosched()
	}
	if err := ifp.Close(); err != nil { // senders still sending
		t.Error(err)
	}
	stop.Store(true)
	wg.Wait()
}
