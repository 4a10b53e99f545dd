//go:build linux

package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/virtif-xdp/virtif-xdp/virtif/xdp"
)

func newCleanupCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cleanup",
		Short: "Remove what killed virtif-xdp processes left on NICs' address lists",
		Long: `cleanup removes the NIC address-list entries (the vifs' MACs and joined
multicast groups, as 'bridge fdb show dev NIC self' lists them) that
virtif-xdp processes which are no longer running left behind, e.g. after a
SIGKILL. Each process records the entries it added in a state file under
/run/virtif-xdp (VIRTIF_XDP_STATE_DIR overrides it); an entry is removed
only when such a file of a dead process names it, for the same namespace,
ifindex and NIC name. NICs of this namespace and of those 'ip netns' names
are reached. The next open of a NIC does the same for that NIC; 'lab down'
runs it too. The XDP program itself needs no cleaning: it goes with the
process that attached it.`,
		Args: cobraArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCleanup(cmd.OutOrStdout(), true)
		},
	}
}

// runCleanup removes leftovers and says what it did; quiet when there was
// nothing and verbose is off.
func runCleanup(w io.Writer, verbose bool) error {
	los, err := xdp.CleanLeftovers()
	if err != nil {
		return withRootHint(fmt.Errorf("cleanup: %w", err))
	}
	if len(los) == 0 && verbose {
		fmt.Fprintln(w, "cleanup: nothing left by dead processes")
	}
	var errs []error
	for _, lo := range los {
		switch {
		case lo.Err != nil:
			fmt.Fprintf(w, "cleanup: pid %d on %s: %v\n", lo.PID, lo.Ifname, lo.Err)
			errs = append(errs, lo.Err)
		case lo.Gone:
			fmt.Fprintf(w, "cleanup: pid %d on %s: the NIC is gone, and its %d entries with it\n", lo.PID, lo.Ifname, len(lo.MACs))
		default:
			fmt.Fprintf(w, "cleanup: pid %d on %s: removed %d of its %d address-list entries %v\n", lo.PID, lo.Ifname, lo.Removed, len(lo.MACs), lo.MACs)
		}
	}
	return withRootHint(errors.Join(errs...))
}
