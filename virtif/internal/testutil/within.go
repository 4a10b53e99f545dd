// Package testutil holds helpers shared by the tests of virtif and its
// backends. It is imported by tests only.
package testutil

import (
	"runtime"
	"testing"
	"time"
)

// HangBound is how long a "must not hang" check waits: generous, since
// test machines are shared and slow, while a deadlock never ends at all.
const HangBound = 20 * time.Second

// Within runs fn and reports whether it returned within HangBound. If not,
// it fails the test, naming what hung and showing every goroutine's stack,
// and leaves fn behind: the caller must then skip whatever would wait for
// it (closing a cloner whose interface is stuck would hang too).
func Within(t testing.TB, what string, fn func()) bool {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
		return true
	case <-time.After(HangBound):
		buf := make([]byte, 1<<20)
		t.Errorf("%s: still running after %v (deadlock?)\n%s", what, HangBound, buf[:runtime.Stack(buf, true)])
		return false
	}
}
