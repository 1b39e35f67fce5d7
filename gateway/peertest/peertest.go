// Package peertest starts real third-party peers for tests: Mosquitto, socat
// pty pairs, pymodbus slaves, or any program with a readiness line. Each peer
// runs in its own process group and is killed in t.Cleanup.
//
// A missing peer binary skips the test on a developer's machine and fails it
// under CI (CI=true): a skipped test must never hide a missing peer.
package peertest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Need returns the path of program bin, skipping the test when it is missing,
// or failing it when CI=true.
func Need(t testing.TB, bin string) string {
	t.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("test peer %s is missing under CI: %v (.ci/run must install it)", bin, err)
		}
		t.Skipf("test peer %s not installed: %v", bin, err)
	}
	return p
}

// Proc is a running peer.
type Proc struct {
	Cmd *exec.Cmd
	mu  sync.Mutex
	out bytes.Buffer
	// Lines receives every output line (stdout and stderr) after readiness;
	// it is never closed and drops lines when nobody reads.
	Lines chan string
	done  chan struct{}
	read  chan struct{} // closed once all output has been collected
}

// Exited waits until the process has exited and everything it printed has
// been collected, and returns its output. (Output right after Kill can miss
// the last lines: they may still be in the reader.)
func (p *Proc) Exited() string {
	<-p.done
	<-p.read
	return p.Output()
}

// Output returns everything the peer printed so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Kill sends SIGKILL to the peer's process group and waits for it to exit.
func (p *Proc) Kill() {
	p.Signal(syscall.SIGKILL)
	<-p.done
}

// Signal sends sig to the peer's process group.
func (p *Proc) Signal(sig syscall.Signal) {
	if p.Cmd.Process != nil {
		_ = syscall.Kill(-p.Cmd.Process.Pid, sig)
	}
}

// WaitFor waits until a line matching re has been printed (counting lines
// printed before the call), or fails the test after timeout.
func (p *Proc) WaitFor(t testing.TB, re *regexp.Regexp, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if m := re.FindString(p.Output()); m != "" {
			return m
		}
		select {
		case <-p.done:
			if m := re.FindString(p.Output()); m != "" {
				return m
			}
			t.Fatalf("%s exited before printing %q:\n%s", p.Cmd.Path, re, p.Output())
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("%s did not print %q within %v:\n%s", p.Cmd.Path, re, timeout, p.Output())
	return ""
}

// Start runs cmd in its own process group, collects its output, and kills
// the group at cleanup. If ready is not nil, Start waits up to 10 s for a
// matching output line.
func Start(t testing.TB, cmd *exec.Cmd, ready *regexp.Regexp) *Proc {
	t.Helper()
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	p := &Proc{Cmd: cmd, Lines: make(chan string, 1024), done: make(chan struct{}), read: make(chan struct{})}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	go func() {
		_ = cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	go func() {
		defer close(p.read)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.out.WriteString(line)
			p.out.WriteByte('\n')
			p.mu.Unlock()
			select {
			case p.Lines <- line:
			default:
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	t.Cleanup(func() {
		p.Signal(syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			t.Errorf("%s did not exit after SIGKILL", cmd.Path)
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", strings.Join(cmd.Args, " "), tail(p.Output(), 4000))
		}
	})
	if ready != nil {
		p.WaitFor(t, ready, 10*time.Second)
	}
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Mosquitto is a running mosquitto broker.
type Mosquitto struct {
	*Proc
	Port int
	Addr string // 127.0.0.1:port
	Dir  string
	conf string
	t    testing.TB
}

// StartMosquitto starts mosquitto on a free loopback port with the given
// extra config lines (listener, persistence and logging are set here) and
// waits for its "running" line. Anonymous clients are allowed unless extra
// says otherwise.
func StartMosquitto(t testing.TB, extra ...string) *Mosquitto {
	t.Helper()
	bin := Need(t, "mosquitto")
	Need(t, "mosquitto_sub")
	dir := t.TempDir()
	m := &Mosquitto{Port: FreePort(t), Dir: dir, t: t}
	m.Addr = "127.0.0.1:" + strconv.Itoa(m.Port)
	anon := "allow_anonymous true"
	for _, l := range extra {
		if strings.HasPrefix(strings.TrimSpace(l), "allow_anonymous") {
			anon = ""
		}
	}
	conf := fmt.Sprintf("per_listener_settings false\nlistener %d 127.0.0.1\n%s\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\nlog_type subscribe\nconnection_messages true\nmax_queued_messages 0\nmax_inflight_messages 0\n%s\n",
		m.Port, anon, strings.Join(extra, "\n"))
	m.conf = filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(m.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	m.Proc = Start(t, exec.Command(bin, "-c", m.conf), regexp.MustCompile(`mosquitto version \S+ running`))
	return m
}

// Restart stops the broker (SIGKILL) and starts it again on the same port.
func (m *Mosquitto) Restart() {
	m.t.Helper()
	m.Kill()
	m.Start()
}

// Start starts a broker that was killed, on the same port and config.
func (m *Mosquitto) Start() {
	m.t.Helper()
	var err error
	for i := 0; i < 50; i++ { // the port may linger briefly after a kill
		p := Start(m.t, exec.Command(m.Proc.Cmd.Path, "-c", m.conf), nil)
		re := regexp.MustCompile(`mosquitto version \S+ running|Address already in use`)
		if got := p.WaitFor(m.t, re, 10*time.Second); !strings.Contains(got, "in use") {
			m.Proc = p
			return
		}
		p.Kill()
		err = fmt.Errorf("port %d still in use", m.Port)
		time.Sleep(100 * time.Millisecond)
	}
	m.t.Fatalf("restart mosquitto: %v", err)
}

// Sub starts mosquitto_sub on topic (QoS 1, -v) and returns the process; its
// Lines channel carries "topic payload" lines. It waits until the broker has
// logged the subscriber's connection.
func (m *Mosquitto) Sub(t testing.TB, topic string, args ...string) *Proc {
	t.Helper()
	bin := Need(t, "mosquitto_sub")
	id := fmt.Sprintf("sub-%d", time.Now().UnixNano())
	a := append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(m.Port), "-q", "1", "-v", "-i", id, "-t", topic}, args...)
	p := Start(t, exec.Command(bin, a...), nil)
	// log_type subscribe makes mosquitto log "<client> <qos> <topic>" once the subscription is in place.
	m.WaitFor(t, regexp.MustCompile(regexp.QuoteMeta(id)+` \d `+regexp.QuoteMeta(topic)), 10*time.Second)
	return p
}

// PtyPair is a socat pty pair: bytes written to A come out of B and back.
type PtyPair struct {
	*Proc
	A, B string
}

// StartPtyPair starts socat with two raw ptys linked at dir/ttyA and dir/ttyB.
func StartPtyPair(t testing.TB) *PtyPair {
	t.Helper()
	bin := Need(t, "socat")
	dir := t.TempDir()
	pp := &PtyPair{A: filepath.Join(dir, "ttyA"), B: filepath.Join(dir, "ttyB")}
	pp.Proc = Start(t, exec.Command(bin, "-d", "-d",
		"pty,raw,echo=0,link="+pp.A, "pty,raw,echo=0,link="+pp.B),
		regexp.MustCompile(`starting data transfer loop`))
	return pp
}

// Python returns Debian's /usr/bin/python3 (the one with python3-pymodbus;
// a pyenv python3 earlier in PATH has none), with the same skip/fail rule as Need.
func Python(t testing.TB) string {
	t.Helper()
	const p = "/usr/bin/python3"
	if _, err := os.Stat(p); err != nil {
		return Need(t, p)
	}
	out, err := exec.Command(p, "-c", "import pymodbus").CombinedOutput()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("python3-pymodbus missing under CI: %v %s", err, out)
		}
		t.Skipf("python3-pymodbus not installed: %s", out)
	}
	return p
}

// Proxy is a loopback TCP proxy a test can cut and restore, standing in for
// a network outage between the gateway and its upstream.
type Proxy struct {
	Addr   string
	target string
	l      net.Listener

	mu    sync.Mutex
	up    bool
	conns map[net.Conn]struct{}
}

// StartProxy listens on a free loopback port and forwards to target.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: l.Addr().String(), target: target, l: l, up: true, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() {
		l.Close()
		p.Cut()
	})
	return p
}

func (p *Proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		up := p.up
		p.mu.Unlock()
		if !up {
			c.Close() // the link is down: nothing gets through
			continue
		}
		u, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[u] = struct{}{}, struct{}{}
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		go pipe(u, c)
		go pipe(c, u)
	}
}

// Cut closes every proxied connection and refuses new ones until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.up = false
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// Restore lets connections through again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.up = true
}

// RunWithOutpost is a TestMain body for packages that test the built
// binary: it builds cmd/outpost into a temporary directory (or takes
// $OUTPOST_BIN, a binary built elsewhere: a release build, a soak run),
// hands its path to set, runs the tests and exits.
func RunWithOutpost(m *testing.M, set func(bin string)) {
	dir, err := os.MkdirTemp("", "outpost-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin := os.Getenv("OUTPOST_BIN")
	if bin == "" {
		bin = filepath.Join(dir, "outpost")
		out, err := exec.Command("go", "build", "-o", bin, "github.com/outpost-iot/outpost/cmd/outpost").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build outpost: %v\n%s", err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	set(bin)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
