package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

func TestInbox(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	ctx := context.Background()
	q, err := store.Open(dir, store.Options{Now: clock, CommandRetention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { q.Close() }()

	put := func(id, dev, body string) bool {
		t.Helper()
		c := &store.Command{ID: id, Device: dev, Payload: []byte(body),
			Props: msg.Props{{Key: "$.ct", Value: "application/json"}}, Deadline: now.Add(time.Minute)}
		dup, err := q.PutCommand(ctx, c)
		if err != nil {
			t.Fatalf("put %s: %v", id, err)
		}
		if !dup && (c.Seq == 0 || c.State != store.CmdPending || !c.Received.Equal(now)) {
			t.Fatalf("put %s: fields not set: %+v", id, c)
		}
		return dup
	}
	if put("c1", "meter-1", `{"write":{"a":1}}`) || put("c2", "door-1", "b") || put("c3", "meter-1", "c") {
		t.Fatal("first put reported duplicate")
	}
	if !put("c1", "meter-1", "changed") {
		t.Fatal("second put of c1 not reported as duplicate")
	}
	c1, err := q.Command("c1")
	if err != nil || string(c1.Payload) != `{"write":{"a":1}}` || c1.Device != "meter-1" || !c1.Deadline.Equal(now.Add(time.Minute)) {
		t.Fatalf("c1 after duplicate put: %+v %v", c1, err)
	}
	ids := func(cs []store.Command) (out []string) {
		for _, c := range cs {
			out = append(out, c.ID)
		}
		return out
	}
	pend, err := q.PendingCommands("meter-1", 0)
	if err != nil || len(pend) != 2 || pend[0].ID != "c1" || pend[1].ID != "c3" {
		t.Fatalf("pending meter-1: %v %v", ids(pend), err)
	}
	all, _ := q.PendingCommands("", 0)
	if got := ids(all); len(got) != 3 || got[0] != "c1" || got[1] != "c2" || got[2] != "c3" {
		t.Fatalf("pending all: %v", got)
	}

	if err := q.SetCommandState(ctx, "c1", store.CmdExecuting, ""); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Second)
	if err := q.SetCommandState(ctx, "c1", store.CmdDone, `{"values":{"a":1}}`); err != nil {
		t.Fatal(err)
	}
	if err := q.SetCommandState(ctx, "c1", store.CmdDone, ""); err != nil {
		t.Fatalf("repeating the final state: %v", err)
	}
	if err := q.SetCommandState(ctx, "c1", store.CmdFailed, ""); !errors.Is(err, store.ErrCommandFinal) {
		t.Fatalf("changing a final state: %v, want ErrCommandFinal", err)
	}
	if err := q.SetCommandState(ctx, "nope", store.CmdDone, ""); !errors.Is(err, store.ErrNoCommand) {
		t.Fatalf("unknown command: %v, want ErrNoCommand", err)
	}

	// Durable across a restart.
	q.Close()
	q, err = store.Open(dir, store.Options{Now: clock, CommandRetention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c1, _ = q.Command("c1")
	if c1.State != store.CmdDone || c1.Detail != `{"values":{"a":1}}` || !c1.Updated.Equal(now) {
		t.Fatalf("c1 after reopen: %+v", c1)
	}
	pend, _ = q.PendingCommands("meter-1", 0)
	if got := ids(pend); len(got) != 1 || got[0] != "c3" {
		t.Fatalf("pending meter-1 after c1 finished: %v", got)
	}
	if !put("c1", "meter-1", "again") {
		t.Fatal("finished command within retention not reported as duplicate")
	}

	// Retention: finished commands go after CommandRetention, open ones stay.
	now = now.Add(2 * time.Hour)
	if err := store.SweepCommands(q, ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Command("c1"); !errors.Is(err, store.ErrNoCommand) {
		t.Fatalf("c1 after retention: %v, want ErrNoCommand", err)
	}
	if _, err := q.Command("c2"); err != nil {
		t.Fatalf("open command c2 removed by the sweep: %v", err)
	}
}

// FinishCommand makes a command final and queues its result in one
// transaction; it never queues a result twice, and a full outbox under the
// reject policy leaves the command open.
func TestFinishCommand(t *testing.T) {
	ctx := context.Background()
	q, err := store.Open(t.TempDir(), store.Options{Config: store.Config{MaxBytes: 600, WhenFull: store.Reject}})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for _, id := range []string{"c1", "c2"} {
		if _, err := q.PutCommand(ctx, &store.Command{ID: id, Device: "d", State: store.CmdAccepted}); err != nil {
			t.Fatal(err)
		}
	}
	res := func(id string, n int) *msg.Record {
		return &msg.Record{ID: id + "/result", Device: "d", Priority: msg.High, Payload: make([]byte, n)}
	}
	if err := q.FinishCommand(ctx, "c1", store.CmdDone, `{"status":"done"}`, res("c1", 100)); err != nil {
		t.Fatal(err)
	}
	if c, _ := q.Command("c1"); c.State != store.CmdDone {
		t.Fatalf("c1 state %s", c.State)
	}
	if err := q.FinishCommand(ctx, "c1", store.CmdDone, "", res("c1", 100)); err != nil {
		t.Fatalf("finishing twice in the same state: %v", err)
	}
	if err := q.FinishCommand(ctx, "c1", store.CmdFailed, "", res("c1", 100)); !errors.Is(err, store.ErrCommandFinal) {
		t.Fatalf("finishing in another state = %v, want ErrCommandFinal", err)
	}
	if d := q.Stats().Depth; d != 1 {
		t.Fatalf("depth %d, want exactly one result queued", d)
	}
	// The outbox is full: the command stays open, nothing is queued.
	if err := q.FinishCommand(ctx, "c2", store.CmdDone, "", res("c2", 1000)); !errors.Is(err, store.ErrFull) {
		t.Fatalf("finish into a full outbox = %v, want ErrFull", err)
	}
	if c, _ := q.Command("c2"); c.State != store.CmdAccepted {
		t.Fatalf("c2 state %s after a refused finish, want accepted", c.State)
	}
	if open, _ := q.PendingCommands("d", 0); len(open) != 1 || open[0].ID != "c2" {
		t.Fatalf("pending %+v, want c2", open)
	}
	recs, err := q.Lease(ctx, 10)
	if err != nil || len(recs) != 1 || recs[0].ID != "c1/result" {
		t.Fatalf("lease = %v, %v", recs, err)
	}
}
