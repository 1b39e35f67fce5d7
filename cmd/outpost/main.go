// Command outpost is the edge gateway: one static binary that runs the
// daemon, checks configs, runs the demo, and carries the field tools.
// This package only wires parts together; the work is done in gateway,
// store, cloudlink and adapters.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
)

// Stamped by `make build` with -ldflags -X.
var (
	version = "dev"
	commit  = ""
	date    = ""
)

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"run", "run the gateway daemon (-c FILE)", cmdRun},
		{"check", "validate a config file (-c FILE)", cmdCheck},
		{"demo", "run the whole job on this machine with simulated devices and a local stand-in cloud", cmdDemo},
		{"status", "show what the running daemon is doing", cmdStatus},
		{"queue", "inspect the store: stats, peek, dead (-d DATA_DIR)", cmdQueue},
		{"modbus", "Modbus field tools: read, write, scan", cmdModbus},
		{"serial", "serial field tools: ports, sniff", cmdSerial},
		{"bench", "measure this hardware: store, ingest, drain, restart", cmdBench},
		{"passwd", "read a password on stdin, print its bcrypt hash for hub.clients", cmdPasswd},
		{"version", "print version, commit and build date", cmdVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := realMain(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func realMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "outpost: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "outpost: an edge gateway that never loses an acknowledged message.")
	fmt.Fprintln(w, "\nUsage: outpost COMMAND [flags]   (outpost COMMAND --help for its flags)")
	fmt.Fprintln(w, "\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
}

// newFlags returns a FlagSet that prints its usage to stderr and reports
// errors instead of exiting, with a one-line description.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("outpost "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: outpost %s %s\n", name, synopsis)
		var any bool
		fs.VisitAll(func(*flag.Flag) { any = true })
		if any {
			fmt.Fprintln(stderr, "\nFlags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseFlags parses args; it returns -1 to go on, or the exit code
// (0 for --help, 2 for bad flags).
func parseFlags(fs *flag.FlagSet, args []string) int {
	switch err := fs.Parse(args); err {
	case nil:
		return -1
	case flag.ErrHelp:
		return 0
	default:
		return 2
	}
}

func cmdVersion(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("version", "", stderr)
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	fmt.Fprintln(stdout, versionString())
	return 0
}

func versionString() string {
	c, d := commit, date
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && c == "":
				c = s.Value
			case s.Key == "vcs.time" && d == "":
				d = s.Value
			}
		}
	}
	if len(c) > 12 {
		c = c[:12]
	}
	parts := []string{"outpost " + version}
	if c != "" {
		parts = append(parts, "commit "+c)
	}
	if d != "" {
		parts = append(parts, "built "+d)
	}
	return strings.Join(parts, ", ")
}
