//go:build pending

package main

import (
	"context"
	"fmt"
	"io"
)

func pending(name string) func(context.Context, []string, io.Writer, io.Writer) int {
	return func(_ context.Context, _ []string, _, stderr io.Writer) int {
		fmt.Fprintln(stderr, name+": not built in this tree yet")
		return 1
	}
}

var (
	benchDrain = pending("bench drain")
)
