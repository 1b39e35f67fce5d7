package main

import (
	"context"
	"fmt"
	"io"

	"github.com/outpost-iot/outpost/gateway/demo"
)

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("demo", "[--for DURATION]\n\nRuns the whole job on this machine with no hardware and no config: simulated meters and an\nMQTT leaf feed the local hub, every message is stored on disk, and the cloud link forwards\nto a stand-in cloud broker on loopback. A summary line is printed every second.", stderr)
	dur := fs.Duration("for", 0, "stop after this long (0: until interrupted)")
	level := fs.String("log-level", "error", "gateway log level: debug, info, warn or error")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	log, err := newLogger(stderr, *level, "text")
	if err != nil {
		fmt.Fprintf(stderr, "outpost demo: %v\n", err)
		return 2
	}
	s, err := demo.Run(ctx, demo.Options{For: *dur, Out: stdout, Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "outpost demo: %v\n", err)
		return 1
	}
	if s.Delivered == 0 {
		fmt.Fprintln(stderr, "outpost demo: nothing was delivered")
		return 1
	}
	return 0
}
