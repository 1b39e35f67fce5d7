package store

import "context"

// SweepCommands runs the inbox retention sweep now (tests only).
func SweepCommands(q *Queue, ctx context.Context) error { return q.sweepCommands(ctx, q.opt.Now()) }
