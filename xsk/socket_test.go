package xsk

import (
	"bytes"
	"errors"
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
)

func TestIntegrationReceive(t *testing.T) {
	l := newXSKLab(t, netlab.Options{})
	s := l.open(t, 0, nil)
	if s.Mode() != ModeCopy {
		t.Errorf("veth with ModeAuto bound %v, want copy", s.Mode())
	}
	p := l.packet(t, netlab.Peer)
	for i, size := range []int{60, 61, 128, 1000, 1514} {
		want := testFrame(l.MAC[netlab.Host], l.MAC[netlab.Peer], uint32(i), size)
		p.send(t, want)
		got := receiveOne(t, s)
		if !bytes.Equal(got, want) {
			t.Fatalf("frame %d (%d bytes): received %d bytes, differ:\n got %x\nwant %x", i, size, len(got), got, want)
		}
	}
}

func TestIntegrationTransmit(t *testing.T) {
	l := newXSKLab(t, netlab.Options{})
	s := l.open(t, 0, nil)
	p := l.packet(t, netlab.Peer)
	buf := make([]byte, 2048)
	for i, size := range []int{60, 64, 512, 1514} {
		want := testFrame(l.MAC[netlab.Peer], l.MAC[netlab.Host], uint32(i), size)
		addr, frame, ok := s.NextFrame()
		if !ok {
			t.Fatal("NextFrame: no free frame")
		}
		n := copy(frame, want)
		sent, err := s.Transmit([]Desc{{Addr: addr, Len: uint32(n)}})
		if err != nil || sent != 1 {
			t.Fatalf("Transmit = %d, %v", sent, err)
		}
		got := p.recv(t, buf)
		if !bytes.Equal(got, want) {
			t.Fatalf("frame %d: peer received\n %x\nwant %x", i, got, want)
		}
	}
	for s.InFlight() > 0 {
		if s.Complete() == 0 {
			if err := s.Kick(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestIntegrationZeroCopyRefused(t *testing.T) {
	l := newXSKLab(t, netlab.Options{})
	err := l.Do(netlab.Host, func() error {
		s, err := Open(l.Index[netlab.Host], 0, &Config{Mode: ModeZeroCopy})
		if err == nil {
			s.Close()
		}
		return err
	})
	if !errors.Is(err, unix.EOPNOTSUPP) {
		t.Fatalf("ModeZeroCopy on veth: %v, want EOPNOTSUPP", err)
	}
	t.Logf("refused as expected: %v", err)
	// The queue must still be usable afterwards.
	s := l.open(t, 0, &Config{Mode: ModeCopy})
	if s.Mode() != ModeCopy {
		t.Fatalf("mode %v", s.Mode())
	}
}

func TestIntegrationCloseTwice(t *testing.T) {
	l := newXSKLab(t, netlab.Options{})
	s := l.open(t, 0, nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Stats(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Stats after Close: %v", err)
	}
	if _, err := s.Wait(0); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Wait after Close: %v", err)
	}
	if n := s.Receive(make([]Desc, 4)); n != 0 {
		t.Fatalf("Receive after Close: %d", n)
	}
}
