package wire

import (
	"bufio"
	"net"
	"sync"
	"time"
)

// BufConn is the connection paho uses, made cheaper per message:
//
//   - Reads are buffered: paho reads a packet's fixed header a byte at a
//     time, which cost every PUBACK three read syscalls. Only paho's one
//     reader goroutine reads.
//   - Writes are combined: Write appends to a buffer and a flusher goroutine
//     writes whatever has accumulated in one syscall, so packets written
//     while the previous write is in the kernel share the next one (no
//     delay is added: a lone packet goes out at once). A failed write closes
//     the connection, so paho's reader sees the loss; Write then returns the
//     error. Close flushes what is buffered (within the write timeout)
//     first, so a DISCONNECT written just before Close is sent.
//
// Paho's write deadlines are replaced by one per flush (writeTimeout).
type BufConn struct {
	net.Conn
	r            *bufio.Reader
	writeTimeout time.Duration

	mu      sync.Mutex
	cond    *sync.Cond // signals the flusher (more data, closing) and writers (room)
	buf     []byte     // waiting to be written
	err     error      // the first write error; final
	closing bool
	done    chan struct{} // closed when the flusher has exited
}

// maxPending bounds the write buffer; Write waits for room beyond it.
const maxPending = 256 << 10

func NewBufConn(c net.Conn, writeTimeout time.Duration) *BufConn {
	b := &BufConn{Conn: c, r: bufio.NewReaderSize(c, 16<<10), writeTimeout: max(writeTimeout, time.Second), done: make(chan struct{})}
	b.cond = sync.NewCond(&b.mu)
	go b.flusher()
	return b
}

func (c *BufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *BufConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && !c.closing && len(c.buf) > 0 && len(c.buf)+len(p) > maxPending {
		c.cond.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	if c.closing {
		return 0, net.ErrClosed
	}
	c.buf = append(c.buf, p...)
	c.cond.Broadcast()
	return len(p), nil
}

// SetWriteDeadline and SetDeadline: the flusher sets its own per write.
func (c *BufConn) SetWriteDeadline(time.Time) error { return nil }
func (c *BufConn) SetDeadline(t time.Time) error    { return c.Conn.SetReadDeadline(t) }

func (c *BufConn) flusher() {
	defer close(c.done)
	var out []byte
	for {
		c.mu.Lock()
		for len(c.buf) == 0 && !c.closing && c.err == nil {
			c.cond.Wait()
		}
		if len(c.buf) == 0 || c.err != nil {
			c.mu.Unlock()
			return
		}
		out, c.buf = c.buf, out[:0]
		c.cond.Broadcast() // room for writers
		c.mu.Unlock()
		err := c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
		if err == nil {
			_, err = c.Conn.Write(out)
		}
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.cond.Broadcast()
			c.mu.Unlock()
			c.Conn.Close() // paho's reader sees the connection end
			return
		}
	}
}

// Close writes what is buffered (bounded by the write timeout) and closes.
func (c *BufConn) Close() error {
	c.mu.Lock()
	c.closing = true
	c.cond.Broadcast()
	c.mu.Unlock()
	select {
	case <-c.done:
	case <-time.After(c.writeTimeout):
	}
	return c.Conn.Close()
}
