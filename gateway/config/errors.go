package config

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Error is one problem in a config file, at the key or value it concerns.
// Line and Col are 1-based; both are 0 when the problem has no position
// (a config built in code).
type Error struct {
	File string
	Line int
	Col  int
	// Path is the key path, such as "hub.clients[1].password_hash" ("" for
	// the whole file). Msg usually names it too.
	Path string
	Msg  string
}

// Error prints FILE:LINE:COL: message.
func (e *Error) Error() string {
	if e.Line == 0 {
		if e.File == "" {
			return e.Msg
		}
		return e.File + ": " + e.Msg
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
}

// Errors is every problem found in one config file, sorted by position.
type Errors []*Error

// Error prints one "FILE:LINE:COL: message" per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find each *Error.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// sorted returns es sorted by position with exact duplicates removed.
func (es Errors) sorted() Errors {
	out := slices.Clone(es)
	slices.SortStableFunc(out, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
	})
	return slices.CompactFunc(out, func(a, b *Error) bool { return *a == *b })
}
