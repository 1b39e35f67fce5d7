package wire

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// TestBufConn: bytes written arrive in order; what is buffered at Close is
// flushed before the socket closes; once the peer is gone, Write fails.
func TestBufConn(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- nil
			return
		}
		b, _ := io.ReadAll(c) // until the client closes
		c.Close()
		got <- b
	}()
	raw, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := NewBufConn(raw, 2*time.Second)
	var want bytes.Buffer
	for i := range 5000 {
		p := bytes.Repeat([]byte{byte(i)}, 1+i%300)
		want.Write(p)
		if n, err := c.Write(p); n != len(p) || err != nil {
			t.Fatalf("write %d: %d %v", i, n, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, want.Bytes()) {
			t.Fatalf("peer got %d bytes, want %d (in order)", len(b), want.Len())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("peer got nothing")
	}
	if _, err := c.Write([]byte("late")); err == nil {
		t.Error("write after close succeeded")
	}

	// A peer that goes away: writes start failing (the first may still be
	// buffered), and the connection is closed for the reader too.
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	go func() {
		if c, err := l2.Accept(); err == nil {
			c.Close()
		}
	}()
	raw2, err := net.Dial("tcp", l2.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c2 := NewBufConn(raw2, time.Second)
	defer c2.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := c2.Write(make([]byte, 4096)); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("writes to a closed peer keep succeeding")
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := c2.Read(make([]byte, 1)); err == nil {
		t.Error("read succeeded on a failed connection")
	}
}
