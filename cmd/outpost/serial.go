package main

import (
	"context"
	"io"

	"github.com/outpost-iot/outpost/adapters/serial"
)

// cmdSerial is "outpost serial ports|sniff": the field tool lives with the
// adapter (serial.Tool) so that sniff frames and parses with exactly the
// code the gateway runs.
func cmdSerial(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return serial.Tool(ctx, args, stdout, stderr)
}
