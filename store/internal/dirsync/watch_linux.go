package dirsync

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
)

// Watch returns a Syncer for the directory at path. On Linux it watches
// the directory with inotify: the kernel queues an event before the
// syscall that created, renamed or removed an entry returns, so a
// non-blocking read after a commit sees every change the commit made.
func Watch(path string) (Syncer, error) {
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("dirsync: inotify: %w", err)
	}
	const mask = syscall.IN_CREATE | syscall.IN_DELETE | syscall.IN_MOVED_FROM | syscall.IN_MOVED_TO
	if _, err := syscall.InotifyAddWatch(fd, path, mask); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("dirsync: watch %s: %w", path, err)
	}
	return &watch{path: path, fd: fd, buf: make([]byte, 4096)}, nil
}

type watch struct {
	path string
	mu   sync.Mutex
	fd   int
	buf  []byte
}

func (w *watch) Sync() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fd < 0 {
		return errors.New("dirsync: closed")
	}
	changed := false
	for {
		n, err := syscall.Read(w.fd, w.buf)
		if n > 0 {
			changed = true // any event, IN_Q_OVERFLOW included, means "sync"
			continue
		}
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil && !errors.Is(err, syscall.EAGAIN) {
			return fmt.Errorf("dirsync: read events of %s: %w", w.path, err)
		}
		break
	}
	if !changed {
		return nil
	}
	return Dir(w.path)
}

func (w *watch) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fd < 0 {
		return nil
	}
	err := syscall.Close(w.fd)
	w.fd = -1
	return err
}
