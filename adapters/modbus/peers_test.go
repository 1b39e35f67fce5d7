package modbus

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outpost-iot/outpost/gateway/peertest"
)

var ready = regexp.MustCompile(`(?m)^READY$`)

// tcpSlave is a pymodbus TCP slave (testdata/slave.py) on a loopback port.
type tcpSlave struct {
	*peertest.Proc
	t    *testing.T
	port int
	args []string
}

func startTCPSlave(t *testing.T, args ...string) *tcpSlave {
	t.Helper()
	s := &tcpSlave{t: t, port: peertest.FreePort(t), args: args}
	s.start()
	return s
}

func (s *tcpSlave) start() {
	s.t.Helper()
	py := peertest.Python(s.t)
	a := append([]string{"testdata/slave.py", "tcp", "127.0.0.1", fmt.Sprint(s.port)}, s.args...)
	s.Proc = peertest.Start(s.t, exec.Command(py, a...), ready)
}

func (s *tcpSlave) url() string { return fmt.Sprintf("tcp://127.0.0.1:%d", s.port) }

// rtuSlave is a pymodbus RTU slave on the far side of a socat pty pair.
type rtuSlave struct {
	*peertest.Proc
	pty  *peertest.PtyPair
	baud int
}

func startRTUSlave(t *testing.T, baud int, args ...string) *rtuSlave {
	t.Helper()
	py := peertest.Python(t)
	pp := peertest.StartPtyPair(t)
	a := append([]string{"testdata/slave.py", "rtu", pp.B, fmt.Sprint(baud)}, args...)
	return &rtuSlave{Proc: peertest.Start(t, exec.Command(py, a...), ready), pty: pp, baud: baud}
}

func (s *rtuSlave) url() string { return fmt.Sprintf("rtu://%s?baud=%d", s.pty.A, s.baud) }

// writes returns the WRITE lines the slave printed.
func writes(p *peertest.Proc) []string {
	var ws []string
	for l := range strings.Lines(p.Output()) {
		if strings.HasPrefix(l, "WRITE ") {
			ws = append(ws, strings.TrimSpace(l))
		}
	}
	return ws
}

// bus485 emulates a multi-drop RS-485 line in the test: the gateway opens
// Master; each request it sends goes to the slave it addresses, and every
// byte a slave sends comes back to the master. Each slave is its own
// pymodbus process serving one unit id, so one can be killed and restarted.
//
// Requests are routed by unit id rather than broadcast because pymodbus
// 3.0.0's RTU framer (processIncomingPacket) resets its whole receive
// buffer when it meets a frame for another unit: a slave that falls behind
// and reads a foreign request together with its own loses its own. A real
// slave's framer skips foreign frames by itself; what is tested here is
// the master's side of the line.
// Corrupt, when set, flips one bit in the next reply byte that passes.
type bus485 struct {
	t      testing.TB
	Master string
	master *os.File
	mu     sync.Mutex // serialises writes to the master side
	slaves map[int]*busSlave
	// Corrupt, when n > 0, flips a bit of the n-th byte of the next reply.
	Corrupt atomic.Int64
	// Collisions counts reply bytes from two slaves within one millisecond.
	Collisions atomic.Int64
	lastFrom   atomic.Int64
	lastAt     atomic.Int64
	// charTime, when set, paces bytes in each direction like a real line
	// at that baud rate (one character per charTime), so that timings in
	// benchmarks include the wire time a pty does not have.
	charTime time.Duration
}

type busSlave struct {
	unit int
	pty  *peertest.PtyPair
	side *os.File // our end of the slave's pty pair
	proc *peertest.Proc
}

func startBus485(t testing.TB, baud int, units ...int) *bus485 {
	return startBus485Paced(t, baud, false, units...)
}

// startBus485Paced is startBus485 with wire pacing at baud when paced.
func startBus485Paced(t testing.TB, baud int, paced bool, units ...int) *bus485 {
	t.Helper()
	py := peertest.Python(t)
	mp := peertest.StartPtyPair(t)
	m, err := os.OpenFile(mp.B, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := &bus485{t: t, Master: mp.A, master: m, slaves: map[int]*busSlave{}}
	if paced {
		b.charTime = time.Second * 10 / time.Duration(baud)
	}
	for _, u := range units {
		sp := peertest.StartPtyPair(t)
		f, err := os.OpenFile(sp.A, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		s := &busSlave{unit: u, pty: sp, side: f}
		b.slaves[u] = s
		go b.fromSlave(s)
	}
	// Start the slaves in parallel: each takes ~0.4 s to import pymodbus.
	var wg sync.WaitGroup
	procs := make([]*peertest.Proc, len(units))
	for i, u := range units {
		cmd := exec.Command(py, "testdata/slave.py", "rtu", b.slaves[u].pty.B, fmt.Sprint(baud), "--units", fmt.Sprint(u))
		procs[i] = peertest.Start(t, cmd, nil)
	}
	for i, u := range units {
		wg.Go(func() { procs[i].WaitFor(t, ready, 10*time.Second) })
		b.slaves[u].proc = procs[i]
	}
	wg.Wait()
	go b.fromMaster()
	t.Cleanup(func() {
		m.Close()
		for _, s := range b.slaves {
			s.side.Close()
		}
	})
	return b
}

// Kill stops the slave serving unit.
func (b *bus485) Kill(unit int) { b.slaves[unit].proc.Kill() }

// Restart starts the slave serving unit again.
func (b *bus485) Restart(unit int, baud int) {
	s := b.slaves[unit]
	cmd := exec.Command(peertest.Python(b.t), "testdata/slave.py", "rtu", s.pty.B, fmt.Sprint(baud), "--units", fmt.Sprint(unit))
	s.proc = peertest.Start(b.t, cmd, ready)
}

func (b *bus485) fromMaster() {
	buf := make([]byte, 512)
	for {
		n, err := b.master.Read(buf)
		if n > 0 { // the master writes a request in one call; a pty hands it over whole
			if s, ok := b.slaves[int(buf[0])]; ok {
				b.pace(buf[:n], func(p []byte) { _, _ = s.side.Write(p) })
			}
		}
		if err != nil {
			return
		}
	}
}

func (b *bus485) fromSlave(s *busSlave) {
	buf := make([]byte, 512)
	var countdown int64
	for {
		n, err := s.side.Read(buf)
		if n > 0 {
			now := time.Now().UnixNano()
			quiet := now-b.lastAt.Load() > int64(time.Millisecond)
			if prev := b.lastFrom.Swap(int64(s.unit)); prev != int64(s.unit) && prev != 0 && !quiet {
				b.Collisions.Add(1)
			}
			b.lastAt.Store(now)
			if c := b.Corrupt.Load(); quiet && c > 0 && b.Corrupt.CompareAndSwap(c, 0) {
				countdown = c // a new reply starts: arm the flip
			}
			for i := range n {
				if countdown > 0 {
					if countdown--; countdown == 0 {
						buf[i] ^= 0x10
					}
				}
			}
			b.mu.Lock()
			b.pace(buf[:n], func(p []byte) { _, _ = b.master.Write(p) })
			b.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// pace hands p to write one character per charTime, or all at once when
// not pacing.
func (b *bus485) pace(p []byte, write func([]byte)) {
	if b.charTime == 0 || len(p) == 0 {
		if len(p) > 0 {
			write(p)
		}
		return
	}
	start := time.Now()
	for i := range p {
		if d := time.Until(start.Add(time.Duration(i+1) * b.charTime)); d > 0 {
			time.Sleep(d)
		}
		write(p[i : i+1])
	}
}
