package main

import (
	"strings"
	"testing"
)

func TestParseCountsTopLevelTests(t *testing.T) {
	out := `=== RUN   TestA
--- PASS: TestA (0.01s)
=== RUN   TestB
    b_test.go:9: vif received 0 of 20 frames
--- FAIL: TestB (1.00s)
=== RUN   TestC
=== RUN   TestC/sub
    c_test.go:3: needs veth
    --- SKIP: TestC/sub (0.00s)
--- PASS: TestC (0.00s)
=== RUN   TestD
    d_test.go:1: netlab: mq0 has at most 4 queues
--- SKIP: TestD (0.00s)
FAIL
`
	var r Row
	parse(strings.NewReader(out), &r)
	if r.Passed != 2 || r.Failed != 1 || r.Skipped != 1 {
		t.Fatalf("passed %d failed %d skipped %d, want 2 1 1", r.Passed, r.Failed, r.Skipped)
	}
	if r.Failures[0].Test != "TestB" || !strings.Contains(r.Failures[0].Message, "0 of 20") {
		t.Errorf("failure %+v", r.Failures[0])
	}
	if !strings.Contains(r.Skips[0].Message, "at most 4 queues") {
		t.Errorf("skip %+v", r.Skips[0])
	}
	if crash([]byte(out)) != "" {
		t.Error("a binary that printed FAIL at its end did not crash")
	}
}

func TestCrashNamesThePanicAndTest(t *testing.T) {
	out := "=== RUN   TestSteering\npanic: runtime error: nil pointer dereference\n\ngoroutine 1 [running]:\nsync/atomic.(*Bool).Store(...)\ngithub.com/virtif-xdp/virtif-xdp/virtif/xdp.(*nic).shutdown(0x0)\n\t/x/nic.go:448\n"
	got := crash([]byte(out))
	for _, want := range []string{"nil pointer", "(*nic).shutdown", "during TestSteering"} {
		if !strings.Contains(got, want) {
			t.Errorf("crash %q lacks %q", got, want)
		}
	}
}

func TestParseDemoCountsChecks(t *testing.T) {
	out := `CHECK                                   RESULT  PATH          SEEN
frames vif0 sends reach the peer        PASS    vif0 -> peer  100/100 at the peer
frames to vif0's MAC reach vif0         FAIL    neither       0/100 at vif0, 0 at host kernel
`
	var r Row
	parseDemo(strings.NewReader(out), &r)
	if r.Passed != 1 || r.Failed != 1 || r.Failures[0].Message != "0/100 at vif0, 0 at host kernel" {
		t.Fatalf("%+v", r)
	}
}
