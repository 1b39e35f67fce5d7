package hub

import (
	"bufio"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/outpost-iot/outpost/gateway/msg"
)

// instantStore answers every submission at once (no fsync): the benchmark
// measures the hub's own cost per message.
type instantStore struct{}

func (instantStore) Submit(recs []*msg.Record, done func(error)) { done(nil) }

// BenchmarkIngest drives QoS 1 publishes with 64 in flight per connection
// through the hub (MQTT 3.1.1 over loopback) to a store that answers at once.
func BenchmarkIngest(b *testing.B) {
	for _, conns := range []int{1, 16} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			var cs []Client
			for i := range conns {
				cs = append(cs, Client{ID: fmt.Sprintf("b-%d", i), PasswordHash: testHash})
			}
			h := startHub(b, instantStore{}, func(o *Options) { o.Clients = cs })
			payload := make([]byte, 200)
			per := b.N/conns + 1
			var wg sync.WaitGroup
			b.ResetTimer()
			for i := range conns {
				id := fmt.Sprintf("b-%d", i)
				c := rawConnect4(b, h.Addr(), id)
				topic := "devices/" + id + "/messages/events/"
				wg.Go(func() {
					acks := make(chan struct{}, 64)
					go func() {
						r := bufio.NewReader(c)
						var p [4]byte
						for range per {
							if _, err := io.ReadFull(r, p[:]); err != nil {
								b.Error(err)
								return
							}
							acks <- struct{}{}
						}
					}()
					w := bufio.NewWriter(c)
					for n := range per {
						if n >= 64 {
							w.Flush()
							<-acks
						}
						w.Write(publish4(topic, uint16(n%65535+1), payload))
					}
					w.Flush()
					for range min(per, 64) {
						<-acks
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(per*conns)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
