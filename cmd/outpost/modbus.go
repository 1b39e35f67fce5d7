package main

import (
	"context"
	"io"

	"github.com/outpost-iot/outpost/adapters/modbus"
)

// cmdModbus is "outpost modbus read|write|scan": the field tool lives with
// the adapter (modbus.Tool) so that it shares its transports, types and
// byte orders.
func cmdModbus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return modbus.Tool(ctx, args, stdout, stderr)
}
