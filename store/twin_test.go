package store_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

// Twin documents are kept per device, replaced by each PutTwin, and survive
// a reopen next to the outbox they share the database with.
func TestTwinPersists(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	q, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if doc, ok, err := q.Twin("az-1"); err != nil || ok || doc != nil {
		t.Fatalf("Twin of a device never put = %q, %v, %v", doc, ok, err)
	}
	big := bytes.Repeat([]byte("x"), 500<<10) // in the value log
	for _, p := range []struct{ dev, doc string }{
		{"az-1", `{"v":1}`}, {"az-2", string(big)}, {"az-1", `{"v":2}`}, {"az-10", `{"v":10}`},
	} {
		if err := q.PutTwin(ctx, p.dev, []byte(p.doc)); err != nil {
			t.Fatalf("PutTwin %s: %v", p.dev, err)
		}
	}
	if err := q.Append(ctx, &msg.Record{Device: "az-1", Payload: []byte("d2c")}); err != nil {
		t.Fatal(err)
	}
	check := func(q *store.Queue, when string) {
		t.Helper()
		for dev, want := range map[string][]byte{"az-1": []byte(`{"v":2}`), "az-2": big, "az-10": []byte(`{"v":10}`)} {
			doc, ok, err := q.Twin(dev)
			if err != nil || !ok || !bytes.Equal(doc, want) {
				t.Errorf("%s: Twin(%s) = %.40q (%d bytes), %v, %v", when, dev, doc, len(doc), ok, err)
			}
		}
		if _, ok, _ := q.Twin("az"); ok {
			t.Errorf("%s: Twin of a prefix of a device id found a document", when)
		}
	}
	check(q, "open")
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q, err = store.Open(dir, store.Options{})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer q.Close()
	if q.Quarantined() != "" {
		t.Fatalf("store with twins quarantined at reopen: %s", q.Quarantined())
	}
	check(q, "reopened")
	if st := q.Stats(); st.Depth != 1 {
		t.Errorf("outbox depth %d after reopen, want the 1 record (twins are not records)", st.Depth)
	}
}

// A fresh store whose first write is a twin reopens clean.
func TestTwinFirstWrite(t *testing.T) {
	dir := t.TempDir()
	q, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := q.PutTwin(context.Background(), "d", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	q.Close()
	q, err = store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if doc, ok, err := q.Twin("d"); q.Quarantined() != "" || !ok || string(doc) != "{}" || err != nil {
		t.Fatalf("reopen: quarantined %q, twin %q %v %v", q.Quarantined(), doc, ok, err)
	}
}

func TestTwinRefusals(t *testing.T) {
	q, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ctx := context.Background()
	if err := q.PutTwin(ctx, "a/b", []byte("{}")); err == nil {
		t.Error("PutTwin with a device id holding '/' succeeded")
	}
	if err := q.PutTwin(ctx, "d", make([]byte, store.MaxTwinBytes+1)); !errors.Is(err, store.ErrTooLarge) {
		t.Errorf("PutTwin over MaxTwinBytes = %v, want ErrTooLarge", err)
	}
	if _, ok, _ := q.Twin("d"); ok {
		t.Error("a refused twin was stored")
	}
	q.Close()
	if err := q.PutTwin(ctx, "d", []byte("{}")); !errors.Is(err, store.ErrClosed) {
		t.Errorf("PutTwin after Close = %v, want ErrClosed", err)
	}
	if _, _, err := q.Twin("d"); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Twin after Close = %v, want ErrClosed", err)
	}
}
