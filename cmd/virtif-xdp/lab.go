//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/virtif-xdp/virtif-xdp/internal/netlab"
)

const defaultLabName = "vxlab"

func newLabCmd() *cobra.Command {
	var name string
	var queues int
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "A two-namespace veth lab on 198.18.0.0/24 for trying things without a spare NIC",
		Args:  cobraArgs(cobra.NoArgs),
		RunE:  needSubcommand,
	}
	cmd.PersistentFlags().StringVar(&name, "name", defaultLabName, "lab name, 1..10 letters, digits, '_', '-' or '.' (namespaces NAME-h and NAME-p, links NAMEh and NAMEp)")

	up := &cobra.Command{
		Use:   "up",
		Short: "Create the lab and print how to use it",
		Args:  cobraArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkLabName(name, true); err != nil {
				return err
			}
			if _, err := netlab.Open(name); err == nil {
				return fmt.Errorf("lab %q exists already: 'virtif-xdp lab down --name %s' removes it", name, name)
			}
			l, err := netlab.New(netlab.Options{Name: name, Queues: queues})
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("lab %q is partly there (%w): 'virtif-xdp lab down --name %s' removes what is left", name, err, name)
			}
			if err != nil {
				return withRootHint(err)
			}
			printLab(cmd, l)
			return nil
		},
	}
	up.Flags().IntVar(&queues, "queues", 1, "RX/TX queues on each veth end")

	down := &cobra.Command{
		Use:   "down",
		Short: "Remove whatever is left of the lab: its veth pair, XDP programs, namespaces",
		Long: `down removes whatever is left of the lab, however it got there: the veth
pair (and with it any XDP program on it), then both namespaces. It says
what it removed and what was already gone, and succeeds (exit 0) whatever
was missing, so it can be repeated; of a lab of which nothing is left it
says "nothing to remove". It fails (exit 1) only when something that is
there cannot be removed. Then it runs 'virtif-xdp cleanup', which forgets
the address-list records of killed processes whose NICs went with the lab.`,
		Args: cobraArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkLabName(name, false); err != nil {
				return err
			}
			r, err := netlab.Remove(name)
			w := cmd.OutOrStdout()
			switch {
			case r.Nothing() && err == nil:
				fmt.Fprintf(w, "lab %s: nothing to remove\n", name)
			case len(r.Removed) > 0:
				fmt.Fprintf(w, "lab %s: removed %s\n", name, strings.Join(r.Removed, ", "))
				if len(r.Missing) > 0 {
					fmt.Fprintf(w, "lab %s: already gone: %s\n", name, strings.Join(r.Missing, ", "))
				}
			}
			return errors.Join(withRootHint(err), runCleanup(w, false))
		},
	}

	status := &cobra.Command{
		Use:   "status",
		Short: "Show the lab, or list the labs present when none is named",
		Args:  cobraArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("name") {
				names, err := netlab.List()
				if err != nil {
					return err
				}
				if len(names) == 0 {
					fmt.Fprintln(cmd.OutOrStdout(), "no labs")
					return nil
				}
				for _, n := range names {
					if l, err := netlab.Open(n); err == nil {
						printLab(cmd, l)
					}
				}
				return nil
			}
			if err := checkLabName(name, false); err != nil {
				return err
			}
			l, err := netlab.Open(name)
			if err != nil {
				return fmt.Errorf("lab %q: %w ('virtif-xdp lab up --name %s' creates it)", name, err, name)
			}
			printLab(cmd, l)
			return nil
		},
	}
	cmd.AddCommand(up, down, status)
	return cmd
}

// checkLabName refuses, as a usage error, a --name that cannot name a lab
// (it becomes namespace and link names: netlab.CheckLabName), or, to look
// one up (down, status), one that would reach outside /run/netns.
func checkLabName(name string, creating bool) error {
	check := netlab.CheckLabLookupName
	if creating {
		check = netlab.CheckLabName
	}
	if err := check(name); err != nil {
		return usageError{fmt.Errorf("--name: %w", err)}
	}
	return nil
}

func printLab(cmd *cobra.Command, l *netlab.Lab) {
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "lab %s\n", l.Name)
	for i, side := range []string{"host", "peer"} {
		fmt.Fprintf(w, "  %-4s  namespace %-12s link %-10s mac %s  addr %s\n",
			side, l.NS[i], l.Link[i], l.MAC[i], l.Addr[i])
	}
	fmt.Fprintf(w, "enter:   ip netns exec %s bash   (the NIC side: run vifs here on link %s)\n", l.NS[0], l.Link[0])
	fmt.Fprintf(w, "         ip netns exec %s bash   (the far end of the wire)\n", l.NS[1])
	fmt.Fprintf(w, "try:     ip netns exec %s virtif-xdp rxdrop --link xdp:%s --promisc\n", l.NS[0], l.Link[0])
	fmt.Fprintf(w, "         virtif-xdp run --netns %s --link xdp:%s --addr 198.18.0.3/24 --trust-rx-checksum\n", l.NS[0], l.Link[0])
	fmt.Fprintf(w, "         ip netns exec %s ping 198.18.0.3   (answered by run's userspace stack)\n", l.NS[1])
	fmt.Fprintf(w, "remove:  virtif-xdp lab down --name %s\n", l.Name)
}

// withRootHint adds what to do when the kernel refuses for lack of
// privilege, or has no AF_XDP: the libraries report the operation and the
// errno, the command says the remedy, once.
func withRootHint(err error) error {
	switch {
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w (run as root, or with CAP_NET_ADMIN, CAP_BPF and CAP_NET_RAW)", err)
	case errors.Is(err, unix.EAFNOSUPPORT):
		return fmt.Errorf("%w (this kernel has no AF_XDP: it needs CONFIG_XDP_SOCKETS)", err)
	}
	return err
}
