//go:build linux

package netlab

import (
	"strings"
	"testing"
)

// A value that is not a number is reported, not read as 0.
func TestParseSNMPErrors(t *testing.T) {
	into := map[string]int64{}
	if err := parseSNMP("Icmp: InMsgs OutEchoReps\nIcmp: 3 4\n", into); err != nil || into["Icmp:OutEchoReps"] != 4 {
		t.Fatalf("good input: %v, %v", into, err)
	}
	for _, in := range []string{
		"Icmp: InMsgs OutEchoReps\nIcmp: 3 x\n", // not a number
		"Icmp: InMsgs OutEchoReps\nIcmp: 3\n",   // a value short
		"Icmp: InMsgs\n",                        // names without values
		"Icmp: InMsgs\nTcp: 3\n",                // values of another group
	} {
		if err := parseSNMP(in, map[string]int64{}); err == nil || !strings.Contains(err.Error(), "line") {
			t.Errorf("%q: %v, want an error naming the line", in, err)
		}
	}
	if err := parseSNMP6("Icmp6OutEchoReplies 2\nIcmp6InMsgs\n", map[string]int64{}); err == nil {
		t.Error("snmp6 line without a value: no error")
	}
}
