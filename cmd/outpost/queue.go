package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

// cmdQueue implements `outpost queue stats|peek|dead -d DATA_DIR`: it opens
// the store read-only, so it works on a stopped gateway's data dir (a
// running gateway holds the store's lock; use `outpost status` then).
func cmdQueue(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	subs := map[string]string{
		"stats": "depth, bytes, oldest age, counters, pending gap",
		"peek":  "the oldest records, in the order they will be sent",
		"dead":  "dead letters: records the cloud refused, with the reason",
	}
	if len(args) == 0 || subs[args[0]] == "" {
		w, code := stderr, 2
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			w, code = stdout, 0
		}
		fmt.Fprintln(w, "Usage: outpost queue stats|peek|dead -d DATA_DIR [flags]\n\nSubcommands:")
		for _, s := range []string{"stats", "peek", "dead"} {
			fmt.Fprintf(w, "  %-6s %s\n", s, subs[s])
		}
		fmt.Fprintln(w, "\nThe store is opened read-only; stop the gateway first (or use `outpost status`).")
		return code
	}
	sub := args[0]
	fs := newFlags("queue "+sub, "-d DATA_DIR [flags]", stderr)
	dataDir := fs.String("d", "/var/lib/outpost", "the gateway's data_dir (the store is DATA_DIR/queue)")
	n := fs.Int("n", 20, "records to show (peek, dead)")
	asJSON := fs.Bool("json", false, "print JSON")
	full := fs.Bool("payload", false, "print whole payloads (default: the first 60 bytes)")
	if code := parseFlags(fs, args[1:]); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "outpost queue %s: unexpected argument %q\n", sub, fs.Arg(0))
		return 2
	}
	q, err := store.OpenReadOnly(*dataDir)
	if err != nil {
		fmt.Fprintf(stderr, "outpost queue: %v\n", err)
		if strings.Contains(err.Error(), "lock") {
			fmt.Fprintln(stderr, "(is the gateway running? `outpost status` shows a running gateway's queue)")
		}
		return 1
	}
	defer q.Close()
	switch sub {
	case "stats":
		return queueStats(q, *asJSON, stdout)
	case "peek":
		recs, err := q.Peek(*n)
		if err != nil {
			fmt.Fprintf(stderr, "outpost queue peek: %v\n", err)
			return 1
		}
		return queueRecords(recs, nil, *asJSON, *full, stdout)
	default:
		dead, err := q.Dead(0, *n)
		if err != nil {
			fmt.Fprintf(stderr, "outpost queue dead: %v\n", err)
			return 1
		}
		recs := make([]*msg.Record, len(dead))
		for i := range dead {
			recs[i] = dead[i].Record
		}
		return queueRecords(recs, dead, *asJSON, *full, stdout)
	}
}

func queueStats(q *store.Queue, asJSON bool, w io.Writer) int {
	s := q.Stats()
	if asJSON {
		b, _ := json.MarshalIndent(s, "", "  ")
		fmt.Fprintln(w, string(b))
		return 0
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	limit := "unlimited"
	if s.MaxBytes > 0 {
		limit = fmt.Sprint(s.MaxBytes)
	}
	fmt.Fprintf(tw, "depth\t%d records\n", s.Depth)
	fmt.Fprintf(tw, "bytes\t%d (max %s)\n", s.Bytes, limit)
	for c, cs := range s.Classes {
		fmt.Fprintf(tw, "  %s\t%d records, %d bytes\n", msg.Priority(c), cs.Depth, cs.Bytes)
	}
	if s.Oldest.IsZero() {
		fmt.Fprintf(tw, "oldest\t-\n")
	} else {
		fmt.Fprintf(tw, "oldest\t%s (%s ago)\n", s.Oldest.UTC().Format(time.RFC3339), s.OldestAge.Round(time.Second))
	}
	fmt.Fprintf(tw, "next seq\t%d\n", s.NextSeq)
	fmt.Fprintf(tw, "appended\t%d\n", s.Appends)
	fmt.Fprintf(tw, "acked\t%d\n", s.Acks)
	fmt.Fprintf(tw, "dropped\t%d (drop-oldest)\n", s.Dropped)
	fmt.Fprintf(tw, "expired\t%d (ttl)\n", s.Expired)
	fmt.Fprintf(tw, "dead letters\t%d kept, %d ever, %d trimmed\n", s.DeadDepth, s.Dead, s.DeadDropped)
	for _, g := range []store.Gap{s.GapOut, s.Gap} {
		if !g.Empty() {
			fmt.Fprintf(tw, "gap to report\t%d dropped, %d expired, seqs %d-%d\n", g.Dropped, g.Expired, g.FirstSeq, g.LastSeq)
		}
	}
	tw.Flush()
	return 0
}

func queueRecords(recs []*msg.Record, dead []store.DeadLetter, asJSON, full bool, w io.Writer) int {
	if asJSON {
		type jrec struct {
			Seq      uint64    `json:"seq"`
			ID       string    `json:"id"`
			Device   string    `json:"device"`
			Priority string    `json:"priority"`
			Enqueued time.Time `json:"enqueued"`
			Size     int       `json:"size"`
			Props    msg.Props `json:"props,omitempty"`
			Payload  string    `json:"payload"`
			Reason   string    `json:"reason,omitempty"`
			DeadAt   time.Time `json:"dead_at,omitzero"`
		}
		out := make([]jrec, len(recs))
		for i, r := range recs {
			out[i] = jrec{Seq: r.Seq, ID: r.ID, Device: r.Device, Priority: r.Priority.String(),
				Enqueued: r.Enqueued.UTC(), Size: r.Size(), Props: r.Props, Payload: string(r.Payload)}
			if dead != nil {
				out[i].Reason, out[i].DeadAt = dead[i].Reason, dead[i].At.UTC()
			}
		}
		b, _ := json.MarshalIndent(out, "", "  ")
		fmt.Fprintln(w, string(b))
		return 0
	}
	if len(recs) == 0 {
		fmt.Fprintln(w, "(none)")
		return 0
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	head := "SEQ\tPRIO\tENQUEUED\tDEVICE\tID\tSIZE\tPAYLOAD"
	if dead != nil {
		head = "SEQ\tPRIO\tENQUEUED\tDEVICE\tID\tSIZE\tREASON\tPAYLOAD"
	}
	fmt.Fprintln(tw, head)
	for i, r := range recs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t", r.Seq, r.Priority, r.Enqueued.UTC().Format(time.RFC3339), r.Device, r.ID, r.Size())
		if dead != nil {
			fmt.Fprintf(tw, "%s\t", dead[i].Reason)
		}
		fmt.Fprintln(tw, preview(r.Payload, full))
	}
	tw.Flush()
	return 0
}

// preview shows a payload as text when it is UTF-8, else as hex.
func preview(p []byte, full bool) string {
	const max = 60
	cut := !full && len(p) > max
	if cut {
		p = p[:max]
	}
	var s string
	if utf8.Valid(p) {
		s = fmt.Sprintf("%q", p)
	} else {
		s = fmt.Sprintf("0x%x", p)
	}
	if cut {
		s += "..."
	}
	return s
}
