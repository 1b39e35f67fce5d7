package main

import (
	"context"
	"fmt"
	"io"
)

func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	benches := []struct {
		name, summary string
		run           func(context.Context, []string, io.Writer, io.Writer) int
	}{
		{"store", "durable appends/s (1, 16, 64 producers) vs one fsync per append; reopen with 1M records", benchStore},
		{"ingest", "durable QoS 1 msgs/s through the hub, optionally vs Mosquitto", benchIngest},
		{"drain", "a large backlog forwarded to a local Mosquitto", benchDrain},
		{"restart", "time from start to ready with 1,000,000 records queued", benchRestart},
	}
	if len(args) > 0 {
		for _, b := range benches {
			if b.name == args[0] {
				return b.run(ctx, args[1:], stdout, stderr)
			}
		}
	}
	w := stdout
	code := 0
	if len(args) == 0 || (args[0] != "-h" && args[0] != "--help") {
		w, code = stderr, 2
	}
	fmt.Fprintln(w, "Usage: outpost bench NAME [--json] [flags]\n\nBenchmarks:")
	for _, b := range benches {
		fmt.Fprintf(w, "  %-7s %s\n", b.name, b.summary)
	}
	return code
}
