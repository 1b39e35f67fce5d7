// Package tcpproxy is a loopback TCP proxy that tests own, to cut, stall and
// restore a link between a client and a real server.
package tcpproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Proxy forwards connections accepted on Addr to a target address.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	state   State
	conns   map[net.Conn]struct{}
	resume  chan struct{} // closed when a stall ends
	accepts int
	wg      sync.WaitGroup
	closed  bool
}

// State is what the proxy does with traffic.
type State int

const (
	// Up forwards bytes both ways.
	Up State = iota
	// Cut closes every connection and closes new ones at once (a reset link).
	Cut
	// Stalled keeps connections open but forwards nothing (a half-open link,
	// as after a NAT timeout or a dead peer); new connections are accepted and
	// stall too.
	Stalled
)

// New listens on 127.0.0.1:0 and forwards to target.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}, resume: make(chan struct{})}
	close(p.resume)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is host:port of the proxy's listener.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Accepts counts connections accepted so far.
func (p *Proxy) Accepts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepts
}

// Set changes the state. Cut closes all open connections.
func (p *Proxy) Set(s State) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s == p.state {
		return
	}
	if p.state == Stalled {
		close(p.resume)
	}
	p.state = s
	switch s {
	case Cut:
		for c := range p.conns {
			c.Close()
		}
	case Stalled:
		p.resume = make(chan struct{})
	}
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	if p.state == Stalled {
		close(p.resume)
		p.state = Up
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.state == Cut {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.accepts++
		p.mu.Unlock()
		if !p.track(c) {
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) serve(c net.Conn) {
	defer p.wg.Done()
	defer p.untrack(c)
	u, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	if !p.track(u) {
		return
	}
	defer p.untrack(u)
	done := make(chan struct{}, 2)
	go func() { p.pipe(u, c); done <- struct{}{} }()
	go func() { p.pipe(c, u); done <- struct{}{} }()
	<-done
	c.Close()
	u.Close()
	<-done
}

// pipe copies src to dst, holding bytes while the proxy is stalled.
func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			for {
				p.mu.Lock()
				resume, state := p.resume, p.state
				p.mu.Unlock()
				if state != Stalled {
					break
				}
				<-resume
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				return
			}
			return
		}
	}
}
