package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outpost-iot/outpost/gateway/msg"
	"github.com/outpost-iot/outpost/store"
)

func env(k string) int64 { v, _ := strconv.ParseInt(os.Getenv(k), 10, 64); return v }

func rss() (anon, file int64) {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "RssAnon:":
			anon = v
		case "RssFile:":
			file = v
		}
	}
	return
}

func main() {
	dir, _ := os.MkdirTemp("", "prof")
	defer os.RemoveAll(dir)
	opt := store.Options{MemTableSize: env("MT") << 20, TableSize: env("TS") << 10, LevelSize: env("LS") << 20}
	q, err := store.Open(dir, opt)
	if err != nil {
		panic(err)
	}
	var peakA, peakF atomic.Int64
	stop := make(chan struct{})
	go func() {
		for {
			a, f := rss()
			if a > peakA.Load() {
				peakA.Store(a)
			}
			if f > peakF.Load() {
				peakF.Store(f)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	payload := make([]byte, 200)
	var next atomic.Int64
	var wg sync.WaitGroup
	n := 1000000
	start := time.Now()
	for p := range 16 {
		wg.Go(func() {
			for {
				k := int(next.Add(16)) - 16
				if k >= n {
					return
				}
				recs := make([]*msg.Record, 16)
				for i := range recs {
					recs[i] = &msg.Record{Device: fmt.Sprint("dev-", p), Priority: msg.Normal, Payload: payload}
				}
				if err := q.Append(context.Background(), recs...); err != nil {
					panic(err)
				}
			}
		})
	}
	wg.Wait()
	fill := time.Since(start)
	fmt.Printf("fill %v peak anon %d MiB file %d MiB\n", fill, peakA.Load()>>10, peakF.Load()>>10)
	start = time.Now()
	for got := 0; got < n; {
		recs, err := q.Lease(context.Background(), 256)
		if err != nil {
			panic(err)
		}
		seqs := make([]uint64, len(recs))
		for i, r := range recs {
			seqs[i] = r.Seq
		}
		q.Ack(seqs...)
		got += len(recs)
		if got >= n/2 && got-len(recs) < n/2 {
			runtime.GC()
			f, _ := os.Create("/tmp/heap2.prof")
			pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	fmt.Printf("drain %v peak anon %d MiB file %d MiB\n", time.Since(start), peakA.Load()>>10, peakF.Load()>>10)
	close(stop)
	q.Close()
}
