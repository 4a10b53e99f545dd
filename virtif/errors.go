package virtif

import "golang.org/x/sys/unix"

// Error is an interface operation that failed: "vif0: set link string:
// device or resource busy". errors.Is(err, unix.EBUSY) sees the errno.
type Error struct {
	Name string // interface (or cloner prefix) name
	Op   string // operation, e.g. "set link string"
	Err  error  // usually a unix.Errno
}

func (e *Error) Error() string { return e.Name + ": " + e.Op + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

func opErr(name, op string, err error) error { return &Error{Name: name, Op: op, Err: err} }

// sendErrors are preallocated so that overload (ENOBUFS) and a down
// interface do not allocate on the send path.
type sendErrors struct {
	nobufs, netdown, nxio, inval, msgsize error
}

func newSendErrors(name string) sendErrors {
	return sendErrors{
		nobufs:  opErr(name, "output", unix.ENOBUFS),
		netdown: opErr(name, "output", unix.ENETDOWN),
		nxio:    opErr(name, "output", unix.ENXIO),
		inval:   opErr(name, "output: empty frame", unix.EINVAL),
		msgsize: opErr(name, "output: frame longer than MTU", unix.EMSGSIZE),
	}
}
