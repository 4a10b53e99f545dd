package virtif

import (
	"errors"
	"runtime"

	"golang.org/x/sys/unix"
)

// tapFunc adapts a function to Tap (a func type is not comparable, which
// also tests that RemoveTap copes with that).
type tapFunc func(frame []byte, dir Direction)

func (f tapFunc) Tap(frame []byte, dir Direction) { f(frame, dir) }

func isErrno(err error, e unix.Errno) bool { return errors.Is(err, e) }

func runtimeGosched() { runtime.Gosched() }
