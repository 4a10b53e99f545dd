//go:build linux

package main

import (
	"net"
	"testing"

	"github.com/virtif-xdp/virtif-xdp/internal/trafficgen"
	"github.com/virtif-xdp/virtif-xdp/virtif"
)

// The demo's tap tells its frames apart by parsing them.
func TestDemoTapClassifies(t *testing.T) {
	peer := net.HardwareAddr{2, 0, 0, 0, 0, 2}
	var tap demoTap
	udp := trafficgen.UDPFrame(demoOther, peer, demoPeerIP, demoVifIP, portToHost, portToHost, 100)
	if p := demoPort(udp); p != portToHost-portToVif {
		t.Fatalf("demoPort = %d, want %d", p, portToHost-portToVif)
	}
	if p := demoPort(udp[:30]); p != -1 {
		t.Fatalf("demoPort of a truncated frame = %d, want -1", p)
	}
	tap.Tap(udp, virtif.In)
	tap.Tap(trafficgen.ARPRequest(peer, demoPeerIP, demoVifIP), virtif.In)
	tap.Tap(trafficgen.ARPRequest(peer, demoPeerIP, demoHostIP), virtif.In)
	toHost := trafficgen.UDPFrame(peer, peer, demoPeerIP, demoHostIP, 9, 9, 100)
	tap.Tap(toHost, virtif.In)
	tap.Tap(toHost[:20], virtif.In) // too short to say: not counted
	if tap.byPort[portToHost-portToVif].Load() != 1 || tap.arpReq.Load() != 1 || tap.hostFrames.Load() != 2 {
		t.Fatalf("byPort %d, arpReq %d, hostFrames %d; want 1, 1, 2",
			tap.byPort[portToHost-portToVif].Load(), tap.arpReq.Load(), tap.hostFrames.Load())
	}
	var side sideCounts
	side.frame(trafficgen.ARPRequest(peer, demoPeerIP, demoVifIP))
	if side.arpFor.Load() != 1 {
		t.Fatal("an ARP request for vif0's address not counted at the side")
	}
}
