package tcpproxy

import (
	"bufio"
	"net"
	"testing"
	"time"
)

func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 1024)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					c.Write(buf[:n])
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(c net.Conn, s string, timeout time.Duration) (string, error) {
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte(s + "\n")); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

func TestCutStallRestore(t *testing.T) {
	p, err := New(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(c, "a", 2*time.Second); err != nil || got != "a\n" {
		t.Fatalf("up: %q %v", got, err)
	}
	p.Set(Stalled)
	if got, err := roundTrip(c, "b", 200*time.Millisecond); err == nil {
		t.Fatalf("stalled link answered %q", got)
	}
	p.Set(Up)
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if got, err := bufio.NewReader(c).ReadString('\n'); err != nil || got != "b\n" {
		t.Fatalf("after stall: %q %v (held bytes must flow on restore)", got, err)
	}
	p.Set(Cut)
	if _, err := roundTrip(c, "c", 2*time.Second); err == nil {
		t.Fatal("cut link still works")
	}
	c2, err := net.Dial("tcp", p.Addr())
	if err == nil {
		if _, err := roundTrip(c2, "d", 2*time.Second); err == nil {
			t.Fatal("new connection works while cut")
		}
		c2.Close()
	}
	p.Set(Up)
	c3, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if got, err := roundTrip(c3, "e", 2*time.Second); err != nil || got != "e\n" {
		t.Fatalf("restored: %q %v", got, err)
	}
}
