package store_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

// BenchmarkAppend measures durable appends (each returns after its batch is
// synced) of 200-byte records from p concurrent producers, with group commit
// and with the one-sync-per-append baseline (SyncEach) in the same run.
func BenchmarkAppend(b *testing.B) {
	for _, each := range []bool{false, true} {
		for _, p := range []int{1, 16, 64} {
			name := fmt.Sprintf("group/p%d", p)
			if each {
				name = fmt.Sprintf("fsync-each/p%d", p)
			}
			b.Run(name, func(b *testing.B) { benchAppend(b, p, store.Options{SyncEach: each}) })
		}
	}
}

func benchAppend(b *testing.B, producers int, opt store.Options) {
	q, err := store.Open(b.TempDir(), opt)
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	payload := make([]byte, 200)
	var n atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for p := range producers {
		wg.Go(func() {
			for n.Add(1) <= int64(b.N) {
				r := &msg.Record{Device: fmt.Sprint("dev-", p), Priority: msg.Normal, Payload: payload}
				if err := q.Append(context.Background(), r); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
	reportHist(b, q)
}

func reportHist(b *testing.B, q *store.Queue) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(q.Collectors()...)
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if h := mf.GetMetric()[0].GetHistogram(); h != nil && h.GetSampleCount() > 0 {
			b.ReportMetric(h.GetSampleSum()/float64(h.GetSampleCount()), mf.GetName()+"_avg")
		}
	}
}

// BenchmarkDrain measures leasing and acking a backlog (the forwarder's side),
// 64 records per lease.
func BenchmarkDrain(b *testing.B) {
	q, err := store.Open(b.TempDir(), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	payload := make([]byte, 200)
	for i := 0; i < b.N; i += 256 {
		recs := make([]*msg.Record, min(256, b.N-i))
		for j := range recs {
			recs[j] = &msg.Record{Device: "dev", Priority: msg.Normal, Payload: payload}
		}
		if err := q.Append(context.Background(), recs...); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for got := 0; got < b.N; {
		recs, err := q.Lease(context.Background(), 64)
		if err != nil {
			b.Fatal(err)
		}
		seqs := make([]uint64, len(recs))
		for i, r := range recs {
			seqs[i] = r.Seq
		}
		if err := q.Ack(seqs...); err != nil {
			b.Fatal(err)
		}
		got += len(recs)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
