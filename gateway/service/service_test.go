package service

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// notifySocket stands in for systemd: a unixgram socket whose path is put in
// NOTIFY_SOCKET for the duration of the test.
type notifySocket struct {
	t    *testing.T
	conn *net.UnixConn
}

func listen(t *testing.T) *notifySocket {
	t.Helper()
	// t.TempDir() can exceed the 108-byte sun_path limit; keep the path short.
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return &notifySocket{t: t, conn: conn}
}

// recv waits up to 5 s for the next datagram.
func (s *notifySocket) recv() string {
	s.t.Helper()
	buf := make([]byte, 4096)
	_ = s.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := s.conn.Read(buf)
	if err != nil {
		s.t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

// pending returns a datagram already queued on the socket, or "".
// A sender's write completes only once the datagram is queued, so anything
// sent before the caller's synchronisation point is seen here.
func (s *notifySocket) pending() string {
	s.t.Helper()
	buf := make([]byte, 4096)
	rc, err := s.conn.SyscallConn()
	if err != nil {
		s.t.Fatal(err)
	}
	var n int
	var rerr error
	// A past read deadline makes net fail before trying the socket, so peek
	// with a non-blocking recv instead.
	if err := rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
		return true
	}); err != nil {
		s.t.Fatal(err)
	}
	if rerr == unix.EAGAIN {
		return ""
	}
	if rerr != nil {
		s.t.Fatal(rerr)
	}
	return string(buf[:n])
}

func TestNotifications(t *testing.T) {
	s := listen(t)
	steps := []struct {
		name string
		call func() error
		want *regexp.Regexp
	}{
		{"ready", Ready, regexp.MustCompile(`^READY=1$`)},
		{"status", func() error { return Status("queue 3\nlink\tup ") }, regexp.MustCompile(`^STATUS=queue 3 link up$`)},
		{"reloading", Reloading, regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=[1-9][0-9]*$`)},
		{"ready again", Ready, regexp.MustCompile(`^READY=1$`)},
		{"stopping", Stopping, regexp.MustCompile(`^STOPPING=1$`)},
	}
	for _, st := range steps {
		if err := st.call(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := s.recv(); !st.want.MatchString(got) {
			t.Errorf("%s: sent %q, want %v", st.name, got, st.want)
		}
	}
	if os.Getenv("NOTIFY_SOCKET") == "" {
		t.Error("NOTIFY_SOCKET was unset; later notifications would be lost")
	}
}

func TestNotSupervisedIsNoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "1000")
	for name, f := range map[string]func() error{
		"Ready": Ready, "Reloading": Reloading, "Stopping": Stopping,
		"Status": func() error { return Status("x") },
	} {
		if err := f(); err != nil {
			t.Errorf("%s without NOTIFY_SOCKET: %v", name, err)
		}
	}
}

func TestNotifyErrorIsReported(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone"))
	err := Ready()
	if err == nil || !regexp.MustCompile(`^service: notify "READY=1": `).MatchString(err.Error()) {
		t.Fatalf("Ready to a missing socket: %v", err)
	}
}

func TestWatchdogDisabled(t *testing.T) {
	other := strconv.Itoa(os.Getpid() + 1)
	cases := []struct {
		name      string
		socket    bool
		usec, pid string
		wantErr   bool
	}{
		{name: "no WATCHDOG_USEC", socket: true},
		{name: "no NOTIFY_SOCKET", usec: "2000"},
		{name: "other WATCHDOG_PID", socket: true, usec: "2000", pid: other},
		{name: "malformed WATCHDOG_USEC", socket: true, usec: "abc", wantErr: true},
		{name: "zero WATCHDOG_USEC", socket: true, usec: "0", wantErr: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var s *notifySocket
			if c.socket {
				s = listen(t)
			} else {
				t.Setenv("NOTIFY_SOCKET", "")
			}
			t.Setenv("WATCHDOG_USEC", c.usec)
			t.Setenv("WATCHDOG_PID", c.pid)
			called := false
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := Watchdog(ctx, func() error { called = true; return nil })
			if ctx.Err() != nil {
				t.Fatal("Watchdog blocked although the watchdog is off")
			}
			if (err != nil) != c.wantErr {
				t.Fatalf("err = %v, want error: %v", err, c.wantErr)
			}
			if called {
				t.Error("healthy was called")
			}
			if s != nil {
				if got := s.pending(); got != "" {
					t.Errorf("sent %q", got)
				}
			}
		})
	}
}

// TestWatchdogPingsOnlyWhileHealthy drives the loop one health check at a
// time: the test answers each call and then checks what reached systemd.
func TestWatchdogPingsOnlyWhileHealthy(t *testing.T) {
	s := listen(t)
	t.Setenv("WATCHDOG_USEC", "2000") // ping every 1 ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	if err := Status("queue 0, link up"); err != nil {
		t.Fatal(err)
	}
	s.recv()

	calls := make(chan chan error)
	healthy := func() error {
		answer := make(chan error)
		calls <- answer
		return <-answer
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Watchdog(ctx, healthy) }()
	next := func() chan error {
		t.Helper()
		select {
		case a := <-calls:
			return a
		case err := <-done:
			t.Fatalf("Watchdog returned early: %v", err)
		case <-time.After(5 * time.Second):
			t.Fatal("healthy was not called again")
		}
		return nil
	}

	boom := errors.New("forwarder stalled\nfor 40s")
	steps := []struct {
		answer error
		want   []string // datagrams sent before the next health check
	}{
		{nil, []string{"WATCHDOG=1"}},
		{nil, []string{"WATCHDOG=1"}},
		{boom, []string{"STATUS=unhealthy: forwarder stalled for 40s"}},
		{boom, nil}, // still unhealthy: no ping, status not repeated
		{boom, nil},
		{nil, []string{"STATUS=queue 0, link up", "WATCHDOG=1"}},
		{nil, []string{"WATCHDOG=1"}},
	}
	a := next()
	for i, st := range steps {
		a <- st.answer
		a = next() // the loop has finished with step i
		var got []string
		for d := s.pending(); d != ""; d = s.pending() {
			got = append(got, d)
		}
		if !equal(got, st.want) {
			t.Errorf("step %d (healthy=%v): sent %q, want %q", i, st.answer, got, st.want)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watchdog after cancel: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watchdog did not return after cancel while a health check was pending")
	}
}

// A health check that never returns withholds pings, and does not keep
// Watchdog from returning on cancel.
func TestWatchdogStalledHealthCheck(t *testing.T) {
	s := listen(t)
	t.Setenv("WATCHDOG_USEC", "2000")
	t.Setenv("WATCHDOG_PID", "")
	entered := make(chan struct{})
	release := make(chan struct{})
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Watchdog(ctx, func() error { close(entered); <-release; return nil })
	}()
	<-entered
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := s.pending(); got != "" {
		t.Errorf("sent %q while the health check hung", got)
	}
}

// With a real period and a healthy gateway, pings keep coming.
func TestWatchdogPingsPeriodically(t *testing.T) {
	s := listen(t)
	t.Setenv("WATCHDOG_USEC", "20000")
	t.Setenv("WATCHDOG_PID", "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Watchdog(ctx, func() error { return nil }) }()
	for i := 0; i < 3; i++ {
		if got := s.recv(); got != "WATCHDOG=1" {
			t.Fatalf("ping %d: %q", i, got)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
