package trafficgen

import (
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A receive with SO_RCVTIMEO that a signal interrupts is not restarted by
// the kernel; Recvfrom must try again rather than fail the caller with EINTR
// (the flake CI met on the 6.1 guest: "AF_PACKET receive: interrupted system
// call"). The receiving thread is sent SIGURG, which Go's runtime uses for
// preemption, while it waits.
func TestRecvfromRetriesEINTR(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	if err := unix.SetsockoptTimeval(fds[0], unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	type result struct {
		n   int
		err error
	}
	tid := make(chan int)
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid <- unix.Gettid()
		buf := make([]byte, 64)
		n, _, err := Recvfrom(fds[0], buf)
		done <- result{n, err}
	}()
	id := <-tid
	for i := 0; i < 20; i++ {
		time.Sleep(5 * time.Millisecond)
		if err := unix.Tgkill(unix.Getpid(), id, unix.SIGURG); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case r := <-done:
		t.Fatalf("Recvfrom returned before any frame was sent: %d, %v", r.n, r.err)
	default:
	}
	if _, err := unix.Write(fds[1], []byte("frame")); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.n != len("frame") {
		t.Fatalf("Recvfrom = %d, %v; want %d, nil", r.n, r.err, len("frame"))
	}
}
