package wire_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/cloudlink/internal/wire"
)

func TestReachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	hangUp := make(chan bool, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if <-hangUp {
				c.Close() // a proxy with no backend
				continue
			}
			go func() { time.Sleep(time.Second); c.Close() }() // a broker waiting for CONNECT
		}
	}()
	ctx := context.Background()
	hangUp <- false
	if !wire.Reachable(ctx, addr, 100*time.Millisecond) {
		t.Error("a listener that holds the connection is not reachable")
	}
	hangUp <- true
	if wire.Reachable(ctx, addr, 100*time.Millisecond) {
		t.Error("a listener that hangs up at once is reachable")
	}
	ln.Close()
	if wire.Reachable(ctx, addr, 100*time.Millisecond) {
		t.Error("a closed port is reachable")
	}
}
