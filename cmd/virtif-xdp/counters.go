//go:build linux

package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/virtif-xdp/virtif-xdp/virtif"
)

// backendStat is the backend counter called name, 0 if there is none.
func backendStat(st virtif.Stats, name string) uint64 {
	v, _ := virtif.LookupStat(st.Backend, name)
	return v
}

// printChecks writes the checks table and returns how many failed.
func printChecks(w io.Writer, checks []check) int {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tRESULT\tPATH\tSEEN")
	failed := 0
	for _, c := range checks {
		res := "PASS"
		if !c.pass {
			res = "FAIL"
			failed++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.name, res, c.path, c.detail)
	}
	tw.Flush()
	return failed
}

// printCounters writes the interface counters, the XDP program's per-rule
// counters, the kernel's socket statistics and the backend's own.
func printCounters(w io.Writer, name string, st virtif.Stats) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "INTERFACE %s\tPACKETS\tBYTES\tERRORS\tDROPS\tMULTICAST\n", name)
	fmt.Fprintf(tw, "  received\t%d\t%d\t%d\t%d (filtered %d, no handler %d)\t%d\n",
		st.IPackets, st.IBytes, st.IErrors, st.IDrops, st.IFiltered, st.INoHandler, st.IMcasts)
	fmt.Fprintf(tw, "  sent\t%d\t%d\t%d\t%d\t%d\n", st.OPackets, st.OBytes, st.OErrors, st.ODrops, st.OMcasts)
	tw.Flush()

	groups := []struct{ title, prefix string }{
		{"XDP PROGRAM: frames steered to " + name + ", per rule", "xdp_"},
		{"XDP PROGRAM: frames left to the host kernel (whole NIC)", "xdp_host_"},
		{"KERNEL XDP SOCKET STATISTICS (whole NIC)", "xsk_"},
		{"AF_XDP BACKEND", ""},
	}
	for _, g := range groups {
		var rows []virtif.Stat
		for _, s := range st.Backend {
			match := strings.HasPrefix(s.Name, g.prefix)
			if g.prefix == "xdp_" {
				match = match && !strings.HasPrefix(s.Name, "xdp_host_")
			}
			if g.prefix == "" {
				match = !strings.HasPrefix(s.Name, "xdp_") && !strings.HasPrefix(s.Name, "xsk_")
			}
			if match {
				rows = append(rows, s)
			}
		}
		if len(rows) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s\n", g.title)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, s := range rows {
			fmt.Fprintf(tw, "  %s\t%d\n", strings.TrimPrefix(strings.TrimPrefix(s.Name, g.prefix), "xsk_"), s.Value)
		}
		tw.Flush()
	}
}
