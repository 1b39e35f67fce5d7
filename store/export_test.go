package store

import "context"

// SweepCommands runs the inbox retention sweep now (tests only).
func SweepCommands(q *Queue, ctx context.Context) error { return q.sweepCommands(ctx, q.opt.Now()) }

// SetCommitHook makes f run after every Badger commit of a store opened with
// opt; its error is taken as a failed sync of that commit (tests only).
func SetCommitHook(opt *Options, f func() error) { opt.commitHook = f }
