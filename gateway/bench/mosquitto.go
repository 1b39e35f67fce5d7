package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// mosquitto is a Mosquitto started for a benchmark.
type mosquitto struct {
	cmd  *exec.Cmd
	addr string
}

// startMosquitto runs a plain mosquitto on a free loopback port.
func startMosquitto(ctx context.Context, dir string) (*mosquitto, error) {
	return runMosquitto(ctx, dir, "mosquitto.conf", func(port int) string {
		return fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n%smax_queued_messages 0\n", port, mosquittoLog)
	})
}

// mosquittoLog is the logging a benchmark's mosquitto needs: its
// "running" line on stderr.
const mosquittoLog = "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n"

// runMosquitto writes the config conf(port) for a free loopback port
// to dir/name, starts mosquitto in its own process group and waits for its
// "running" line.
func runMosquitto(ctx context.Context, dir, name string, conf func(port int) string) (*mosquitto, error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		return nil, fmt.Errorf("mosquitto is needed for this benchmark: %w", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(conf(port)), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, "-c", path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	m := &mosquitto{cmd: cmd, addr: "127.0.0.1:" + strconv.Itoa(port)}
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(errPipe)
		var out []string
		for sc.Scan() {
			out = append(out, sc.Text())
			if strings.Contains(sc.Text(), " running") {
				ready <- nil
				_, _ = io.Copy(io.Discard, errPipe)
				return
			}
		}
		ready <- errors.New("mosquitto exited: " + strings.Join(out, "; "))
	}()
	select {
	case err := <-ready:
		if err != nil {
			m.stop()
			return nil, err
		}
	case <-time.After(10 * time.Second):
		m.stop()
		return nil, errors.New("mosquitto did not start within 10s")
	}
	return m, nil
}

func (m *mosquitto) stop() {
	if m.cmd.Process != nil {
		_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
		_ = m.cmd.Wait()
	}
}
