package xdp

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/bpf"
	"github.com/virtif-xdp/virtif-xdp/xsk"
)

func TestParseLinkStr(t *testing.T) {
	full, err := ParseLinkStr("xdp:eth0,queues=0-3,mode=copy,attach=generic,frame=4096,frames=8192,ring=1024,wakeup=off,busypoll=64,rxwait=spin")
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{Ifname: "eth0", Queues: []int{0, 1, 2, 3}, Mode: xsk.ModeCopy, Attach: bpf.AttachGeneric,
		FrameSize: 4096, Frames: 8192, Ring: 1024, Wakeup: false, BusyPoll: 64, RXWait: RXWaitSpin, SG: xsk.SGAuto}
	if !reflect.DeepEqual(full, want) {
		t.Fatalf("got %+v\nwant %+v", full, want)
	}
	def, err := ParseLinkStr("xdp:veth0")
	if err != nil {
		t.Fatal(err)
	}
	if def.Queues != nil || def.Mode != xsk.ModeAuto || def.Attach != bpf.AttachAuto || def.FrameSize != 2048 ||
		def.Frames != 4096 || def.Ring != 2048 || !def.Wakeup || def.BusyPoll != 0 || def.RXWait != RXWaitPoll {
		t.Fatalf("defaults: %+v", def)
	}
	one, err := ParseLinkStr("xdp:veth0,queues=2")
	if err != nil || !reflect.DeepEqual(one.Queues, []int{2}) {
		t.Fatalf("queues=2: %+v, %v", one, err)
	}
	sw, err := ParseLinkStr("xdp:eth0,switch=/run/virtif-xdp/switch.sock")
	if err != nil || sw.Switch != "/run/virtif-xdp/switch.sock" || sw.Ifname != "eth0" {
		t.Fatalf("switch=: %+v, %v", sw, err)
	}
	if again, err := ParseLinkStr(sw.String()); err != nil || !reflect.DeepEqual(again, sw) {
		t.Fatalf("round trip %q: %+v, %v", sw.String(), again, err)
	}
	if _, err := ParseLinkStr("xdp:eth0,switch="); !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), `"switch"`) {
		t.Fatalf("empty switch=: %v", err)
	}
	// String round-trips.
	again, err := ParseLinkStr(full.String())
	if err != nil || !reflect.DeepEqual(again, full) {
		t.Fatalf("round trip %q: %+v, %v", full.String(), again, err)
	}
}

func TestParseLinkStrErrors(t *testing.T) {
	for _, tc := range []struct{ in, mention string }{
		{"eth0", "xdp:IFNAME"},
		{"xdp:", "interface name"},
		{"xdp:averyveryverylongname", "interface name"},
		{"xdp:eth0,color=blue", `unknown key "color"`},
		{"xdp:eth0,queues", "not key=value"},
		{"xdp:eth0,queues=3-1", `key "queues"`},
		{"xdp:eth0,queues=x", `key "queues"`},
		{"xdp:eth0,mode=fast", `key "mode"`},
		{"xdp:eth0,attach=offload", `key "attach"`},
		{"xdp:eth0,frame=1000", `key "frame"`},
		{"xdp:eth0,frames=1000", `key "frames"`},
		{"xdp:eth0,ring=3", `key "ring"`},
		{"xdp:eth0,wakeup=maybe", `key "wakeup"`},
		{"xdp:eth0,busypoll=-1", `key "busypoll"`},
		{"xdp:eth0,rxwait=sometimes", `key "rxwait"`},
		{"xdp:eth0,sg=yes", `key "sg"`},
		{"xdp:eth0,mode=copy,mode=copy", "given twice"},
		{"xdp:eth0,frames=1024,ring=1024", "at least twice"},
	} {
		_, err := ParseLinkStr(tc.in)
		if !errors.Is(err, unix.EINVAL) {
			t.Errorf("%q: err %v, want EINVAL", tc.in, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("%q: error %q does not mention %q", tc.in, err, tc.mention)
		}
	}
}

func FuzzParseLinkStr(f *testing.F) {
	f.Add("xdp:eth0,queues=0-3,mode=auto,attach=auto,frame=2048,frames=4096,ring=2048,wakeup=on,busypoll=64")
	f.Add("xdp:eth0,queues=all")
	f.Add("xdp:,=,")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseLinkStr(s)
		if err != nil {
			if !errors.Is(err, unix.EINVAL) {
				t.Fatalf("%q: error without EINVAL: %v", s, err)
			}
			return
		}
		if c.Ifname == "" || c.Frames < 2*c.Ring || len(c.Queues) > maxQueue+1 {
			t.Fatalf("%q: accepted a bad config %+v", s, c)
		}
		again, err := ParseLinkStr(c.String())
		if err != nil || !reflect.DeepEqual(again, c) {
			t.Fatalf("%q: round trip %q: %+v, %v", s, c.String(), again, err)
		}
	})
}
