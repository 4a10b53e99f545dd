//go:build linux

package netlab

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// MaxNamespaceName is the longest name `ip netns` accepts: a file name in
// /run/netns (NAME_MAX).
const MaxNamespaceName = 255

// MaxLabName is the longest lab name: its links are NAMEh and NAMEp, and a
// link name has at most 15 bytes; 10 leaves room.
const MaxLabName = 10

// CheckNamespaceName accepts the names `ip netns add` accepts: not empty,
// at most MaxNamespaceName bytes, no '/', not "." or "..", no NUL. A name
// is a file in /run/netns: anything else would reach outside it. The error
// wraps EINVAL.
func CheckNamespaceName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("netlab: namespace name is empty: %w", unix.EINVAL)
	case len(name) > MaxNamespaceName:
		return fmt.Errorf("netlab: namespace name of %d bytes, longer than %d: %w", len(name), MaxNamespaceName, unix.EINVAL)
	case name == "." || name == "..":
		return fmt.Errorf("netlab: namespace name %q is a directory, not a name: %w", name, unix.EINVAL)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("netlab: namespace name %q has a '/' or NUL: %w", name, unix.EINVAL)
	}
	return nil
}

// CheckLabName accepts a name a lab can be created with: 1..MaxLabName
// bytes of letters, digits, '_', '-' and '.' (not "." or ".."), since it
// names namespaces (NAME-h, NAME-p) and links (NAMEh, NAMEp), and a link
// name has no '/', ':' or white space. The error wraps EINVAL.
func CheckLabName(name string) error {
	if len(name) > MaxLabName {
		return fmt.Errorf("netlab: lab name %q: must be 1..%d bytes: %w", name, MaxLabName, unix.EINVAL)
	}
	return CheckLabLookupName(name)
}

// CheckLabLookupName accepts a name to look a lab up by (Open, Remove, `lab
// down` and `lab status`): what CheckLabName accepts, but of any length its
// namespace names may have, so that removing a lab that cannot exist finds
// nothing rather than failing. The error wraps EINVAL.
func CheckLabLookupName(name string) error {
	if name == "" || len(name) > MaxNamespaceName-2 {
		return fmt.Errorf("netlab: lab name %q: must be 1..%d bytes: %w", name, MaxNamespaceName-2, unix.EINVAL)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("netlab: lab name %q: not a name: %w", name, unix.EINVAL)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return fmt.Errorf("netlab: lab name %q: only letters, digits, '_', '-' and '.': %w", name, unix.EINVAL)
		}
	}
	return nil
}
