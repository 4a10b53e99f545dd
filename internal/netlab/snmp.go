//go:build linux

package netlab

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// SNMP reads the SNMP counters of the kernel on one side of the lab, as its
// namespace sees them (/proc/thread-self/net, not /proc/net: that is the
// namespace of the process's main thread). Counters of /proc/net/snmp are
// keyed by group and name ("Icmp:OutEchoReps", "Tcp:OutSegs"), those of
// snmp6 by their name ("Icmp6OutEchoReplies"). A file that does not parse
// is an error naming the line.
func (l *Lab) SNMP(side int) (map[string]int64, error) {
	c := map[string]int64{}
	err := l.Do(side, func() error {
		for _, file := range []string{"snmp", "snmp6"} {
			path := "/proc/thread-self/net/" + file
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			parse := parseSNMP
			if file == "snmp6" {
				parse = parseSNMP6
			}
			if err := parse(string(b), c); err != nil {
				return fmt.Errorf("netlab: %s: %w", path, err)
			}
		}
		return nil
	})
	return c, err
}

// parseSNMP reads /proc/net/snmp: pairs of lines "Icmp: Name1 Name2 ..."
// and "Icmp: 1 2 ...".
func parseSNMP(s string, into map[string]int64) error {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines)%2 != 0 {
		return fmt.Errorf("%d lines, want pairs of names and values", len(lines))
	}
	for i := 0; i < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || len(names) != len(values) || names[0] != values[0] {
			return fmt.Errorf("line %d: %q does not match the names %q", i+2, lines[i+1], lines[i])
		}
		for j := 1; j < len(names); j++ {
			v, err := strconv.ParseInt(values[j], 10, 64)
			if err != nil {
				return fmt.Errorf("line %d: %s: %w", i+2, names[j], err)
			}
			into[names[0]+names[j]] = v
		}
	}
	return nil
}

// parseSNMP6 reads /proc/net/snmp6: "Name value" lines.
func parseSNMP6(s string, into map[string]int64) error {
	for i, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			return fmt.Errorf("line %d: %q is not a name and a value", i+1, line)
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return fmt.Errorf("line %d: %s: %w", i+1, f[0], err)
		}
		into[f[0]] = v
	}
	return nil
}
