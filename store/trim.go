package store

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Badger maps its files (value log, tables, write-ahead log) into the
// process; every page of them it writes or reads stays in the process's RSS
// until the kernel is short of memory, so a large backlog would count whole
// in the RSS. Badger has no option to read them otherwise. The trimmer asks
// the kernel to take the store's mapped pages out of the process again
// (madvise MADV_PAGEOUT) after every TrimBytes written or read: clean pages
// leave memory, dirty ones stay in the page cache until written back, and
// the next access maps them again from the cache or the disk. PAGEOUT never
// discards data (on anonymous memory it can only swap), so a mapping Badger
// has just closed, whose addresses the trimmer might still name, loses
// nothing.

const madvPageout = 21 // MADV_PAGEOUT, Linux 5.4

// trimLoop trims when touched asks, and every 250ms (Badger's compactions
// and value-log GC read and write its files on goroutines of their own).
func (q *Queue) trimLoop() {
	defer q.bg.Done()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-q.closing:
			return
		case <-q.trimAsk:
		case <-t.C:
		}
		q.trimMapped()
	}
}

// touched counts n bytes written to or read from Badger's files and asks
// the trimmer to run once TrimBytes have accumulated.
func (q *Queue) touched(n int64) {
	if q.trimAsk == nil || q.trimOff.Load() {
		return
	}
	if q.touchedBytes.Add(n) < q.opt.TrimBytes {
		return
	}
	q.touchedBytes.Store(0)
	select {
	case q.trimAsk <- struct{}{}:
	default:
	}
}

// trimMapped pages out every mapping of a file in the store's directory.
func (q *Queue) trimMapped() {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return
	}
	defer f.Close()
	prefix := []byte(q.trimDir + "/")
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Bytes()
		i := bytes.Index(line, prefix)
		if i < 0 {
			continue
		}
		name := string(line[i+len(prefix):])
		if strings.Contains(name, "/") {
			continue
		}
		rng, _, _ := bytes.Cut(line, []byte{' '})
		lo, hi, ok := bytes.Cut(rng, []byte{'-'})
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(string(lo), 16, 64)
		end, err2 := strconv.ParseUint(string(hi), 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		_, _, errno := syscall.Syscall(syscall.SYS_MADVISE, uintptr(start), uintptr(end-start), madvPageout)
		if errno == syscall.EINVAL {
			q.trimOff.Store(true) // the kernel has no MADV_PAGEOUT
			return
		}
	}
}
