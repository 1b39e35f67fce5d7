package store_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"

	"github.com/outpost-iot/outpost/store"
	"github.com/outpost-iot/outpost/store/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dir string, opt store.Options) (storetest.Queue, error) {
		return store.Open(dir, opt)
	})
}

// A 256 KiB message (the hub's default max_message_bytes) fits one Append
// with the low-memory profile: large payloads go to the value log.
func TestLargeRecord(t *testing.T) {
	for _, mt := range []int64{0, 2 << 20} {
		q, err := store.Open(t.TempDir(), store.Options{MemTableSize: mt})
		if err != nil {
			t.Fatal(err)
		}
		big := &msg.Record{Device: "d", Priority: msg.Normal, Payload: bytes.Repeat([]byte("x"), 256<<10)}
		if err := q.Append(context.Background(), big, &msg.Record{Device: "d", Payload: []byte("small")}); err != nil {
			t.Fatalf("memtable %d: append 256 KiB: %v", mt, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		recs, err := q.Lease(ctx, 2)
		cancel()
		if err != nil || len(recs) != 2 || !bytes.Equal(recs[1].Payload, big.Payload) {
			t.Fatalf("lease: %d records, %v", len(recs), err)
		}
		tooMany := make([]*msg.Record, 100000)
		for i := range tooMany {
			tooMany[i] = &msg.Record{Device: "d", Payload: []byte("r")}
		}
		if err := q.Append(context.Background(), tooMany...); !errors.Is(err, store.ErrTooLarge) {
			t.Fatalf("append of 100000 records in one call: %v, want ErrTooLarge", err)
		}
		q.Close()
	}
}
