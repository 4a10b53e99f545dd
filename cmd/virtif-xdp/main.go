//go:build linux

// Command virtif-xdp runs virtual interfaces (a Go port of NetBSD's if_virt)
// whose host side is an AF_XDP socket on a real NIC: a lab to try it in, the
// demo, the classic AF_XDP benchmark modes and a capture tap.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the command ran but what it checks did not hold, or it failed
	exitUsage   = 2 // bad flags or arguments
)

// usageError marks errors in what the user typed.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	// A reader that goes away (virtif-xdp demo | head) must not kill the
	// process before it has torn down what it made: writes then fail with
	// EPIPE instead.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return execute(ctx, args, os.Stdout, os.Stderr)
}

// execute runs the command line args with its output going to stdout and
// stderr and returns the exit code; ctx ending (a signal) stops long-running
// subcommands, which then tear down what they built.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stderr)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "virtif-xdp: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(stderr, "run 'virtif-xdp --help' for usage")
		return exitUsage
	}
	return exitFailure
}

func newRoot(stderr io.Writer) *cobra.Command {
	var verbose bool
	root := &cobra.Command{
		Use:   "virtif-xdp",
		Short: "Virtual Ethernet interfaces on AF_XDP (a Go port of NetBSD's if_virt)",
		Long: `virtif-xdp moves Ethernet frames between a NIC and userspace at kernel-bypass
speed. An XDP program on the NIC steers the frames of each virtual interface
(its MAC, its multicast groups, ARP for its addresses) into an AF_XDP socket and
passes everything else to the host kernel.

Start with 'virtif-xdp demo': it builds a two-namespace veth lab, runs a vif on
it, checks traffic both ways and tears everything down.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, _ []string) {
			level := slog.LevelInfo
			if verbose {
				level = slog.LevelDebug
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})))
		},
	}
	root.PersistentFlags().BoolVarP(&verbose, "verbose", "v", false, "log debug detail to stderr")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newLabCmd(), newDemoCmd(), newRunCmd(), newCaptureCmd(), newCleanupCmd(), newSwitchCmd())
	for _, m := range benchModes {
		root.AddCommand(newBenchCmd(m))
	}
	return root
}

// cobraArgs wraps a cobra positional-argument check so that its failures are
// usage errors (exit 2).
func cobraArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

// needSubcommand is the RunE of commands that only group others: called
// bare or with an unknown subcommand, it is a usage error, not a success.
func needSubcommand(cmd *cobra.Command, _ []string) error {
	return usagef("%s needs a subcommand: %s", cmd.CommandPath(), subcommandNames(cmd))
}

func subcommandNames(cmd *cobra.Command) string {
	var s string
	for i, c := range cmd.Commands() {
		if i > 0 {
			s += ", "
		}
		s += c.Name()
	}
	return s
}
