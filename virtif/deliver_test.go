package virtif

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"testing"
)

// Mirrors VIF_DELIVERPKT: drop unless RUNNING, runts are input errors,
// accept our MAC, multicast/broadcast, or anything when promiscuous
// (marked M_PROMISC); otherwise drop.
func TestDeliver(t *testing.T) {
	other := net.HardwareAddr{2, 9, 9, 9, 9, 9}
	for _, tc := range []struct {
		name          string
		running       bool
		promisc       bool
		noHandler     bool
		frame         func(own net.HardwareAddr) []byte
		delivered     bool
		markedPromisc bool
		want          Stats
	}{
		{"own MAC", true, false, false, func(m net.HardwareAddr) []byte { return frameTo(m, 60) },
			true, false, Stats{IPackets: 1, IBytes: 60}},
		{"not running", false, false, false, func(m net.HardwareAddr) []byte { return frameTo(m, 60) },
			false, false, Stats{IDrops: 1}},
		{"broadcast", true, false, false, func(net.HardwareAddr) []byte { return frameTo(bcast, 64) },
			true, false, Stats{IPackets: 1, IBytes: 64, IMcasts: 1}},
		{"multicast", true, false, false, func(net.HardwareAddr) []byte { return frameTo(net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}, 64) },
			true, false, Stats{IPackets: 1, IBytes: 64, IMcasts: 1}},
		{"other unicast", true, false, false, func(net.HardwareAddr) []byte { return frameTo(other, 60) },
			false, false, Stats{IDrops: 1, IFiltered: 1}},
		{"other unicast, promiscuous", true, true, false, func(net.HardwareAddr) []byte { return frameTo(other, 60) },
			true, true, Stats{IPackets: 1, IBytes: 60}},
		{"own MAC, promiscuous", true, true, false, func(m net.HardwareAddr) []byte { return frameTo(m, 60) },
			true, false, Stats{IPackets: 1, IBytes: 60}},
		{"13 bytes", true, true, false, func(m net.HardwareAddr) []byte { return frameTo(m, 13) },
			false, false, Stats{IErrors: 1}},
		{"empty", true, true, false, func(net.HardwareAddr) []byte { return nil },
			false, false, Stats{IErrors: 1}},
		{"14 bytes", true, false, false, func(m net.HardwareAddr) []byte { return frameTo(m, 14) },
			true, false, Stats{IPackets: 1, IBytes: 14}},
		{"no handler", true, false, true, func(m net.HardwareAddr) []byte { return frameTo(m, 60) },
			false, false, Stats{IDrops: 1, INoHandler: 1}},
	} {
		for _, kind := range []string{"Deliver", "NewDeliver"} {
			t.Run(tc.name+"/"+kind, func(t *testing.T) {
				ifp, b := newRec(t, "", tc.running)
				deliver := b.cfg.Deliver
				if kind == "NewDeliver" {
					deliver = b.cfg.NewDeliver()
				}
				if tc.promisc {
					_ = ifp.SetPromisc(true)
				}
				var got [][]byte
				var marks []bool
				if !tc.noHandler {
					ifp.SetInput(func(f []byte, promisc bool) {
						got = append(got, bytes.Clone(f))
						marks = append(marks, promisc)
					})
				}
				var tapped int
				_ = ifp.AddTap(tapFunc(func(f []byte, d Direction) {
					if d == In {
						tapped++
					}
				}))
				f := tc.frame(ifp.HardwareAddr())
				deliver(f)
				if tc.delivered != (len(got) == 1) {
					t.Fatalf("delivered %d frames, want delivered=%v", len(got), tc.delivered)
				}
				if tc.delivered && (!bytes.Equal(got[0], f) || marks[0] != tc.markedPromisc) {
					t.Errorf("handler got %x promisc=%v, want %x promisc=%v", got[0], marks[0], f, tc.markedPromisc)
				}
				// Taps see what passed the filter, handler or not.
				wantTapped := 0
				if tc.delivered || tc.noHandler {
					wantTapped = 1
				}
				if tapped != wantTapped {
					t.Errorf("tap saw %d frames, want %d", tapped, wantTapped)
				}
				st := ifp.Stats()
				st.Backend = nil
				if fmt.Sprint(st) != fmt.Sprint(tc.want) {
					t.Errorf("stats %+v, want %+v", st, tc.want)
				}
				_ = ifp.Down()
			})
		}
	}
}

// Stats is one consistent snapshot while several goroutines deliver (half
// through Deliver, half through their own NewDeliver): every read has
// IBytes == IPackets*len and counts never go backwards.
func TestStatsConsistentUnderLoad(t *testing.T) {
	ifp, b := newRec(t, "", true)
	ifp.SetInput(func([]byte, bool) {})
	const G, N, L = 4, 20000, 100
	var wg sync.WaitGroup
	for g := range G {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := frameTo(ifp.HardwareAddr(), L)
			m := frameTo(bcast, L)
			deliver := b.cfg.Deliver
			if g%2 == 1 {
				deliver = b.cfg.NewDeliver()
			}
			for k := range N {
				if k%2 == 0 {
					deliver(f)
				} else {
					deliver(m)
				}
			}
		}()
	}
	// The reader stops when the writers have, not when it has seen every
	// frame: a lost count then fails below instead of looping forever.
	writing, done := make(chan struct{}), make(chan struct{})
	var reads int
	var bad []string
	go func() {
		defer close(done)
		var last Stats
		for {
			select {
			case <-writing:
				return
			default:
			}
			st := ifp.Stats()
			reads++
			if st.IBytes != st.IPackets*L || st.IMcasts > st.IPackets || st.IPackets < last.IPackets || st.IPackets > G*N {
				bad = append(bad, fmt.Sprintf("%+v after %+v", st, last))
			}
			last = st
		}
	}()
	wg.Wait()
	close(writing)
	<-done
	for _, s := range bad[:min(len(bad), 5)] {
		t.Error("inconsistent snapshot:", s)
	}
	st := ifp.Stats()
	if st.IPackets != G*N || st.IBytes != G*N*L || st.IMcasts != G*N/2 {
		t.Errorf("final stats %+v; want %d packets, %d bytes, %d multicast: counts were lost", st, G*N, G*N*L, G*N/2)
	}
	t.Logf("%d consistent snapshots read while %d goroutines delivered", reads, G)
	_ = ifp.Down()
}

// An upper layer that answers from its input handler (deliver -> Output on
// the same interface) must not deadlock.
func TestDeliverReplies(t *testing.T) {
	ifp, b := newRec(t, "", true)
	ifp.SetInput(func(f []byte, _ bool) {
		if err := ifp.Output([][]byte{f[6:12], f[0:6], f[12:]}); err != nil {
			t.Error(err)
		}
	})
	b.cfg.Deliver(frameTo(ifp.HardwareAddr(), 60))
	if len(b.frames) != 1 || !bytes.Equal(b.frames[0][:6], []byte{2, 0xee, 0, 0, 0, 1}) {
		t.Errorf("reply not sent: %x", b.frames)
	}
	_ = ifp.Down()
}
