package lazyfs

import (
	"slices"
	"syscall"
)

const pageSize = 4096

// dirtyFile is the unsynced state of one file: the pages written since its
// last fsync and its size, held in memory over the backing file, which
// keeps the synced content. It is what a kernel's page cache holds for a
// file with dirty pages, and what a power cut loses.
type dirtyFile struct {
	fd    int   // read-write descriptor on the backing file, owned by the cache
	size  int64 // the file's size as its users see it
	floor int64 // backing bytes at or beyond floor were truncated away: they read as zeros
	pages map[int64][]byte
}

// newDirtyFile starts the cache of the backing file open on fd, which the
// cache now owns.
func newDirtyFile(fd int) (*dirtyFile, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	return &dirtyFile{fd: fd, size: st.Size, floor: st.Size, pages: map[int64][]byte{}}, nil
}

// backing reads the synced bytes of page p into buf (a page), zeros where
// the backing file has none or they were truncated away.
func (d *dirtyFile) backing(p int64, buf []byte) error {
	clear(buf)
	off := p * pageSize
	if off >= d.floor {
		return nil
	}
	want := buf[:min(int64(pageSize), d.floor-off)]
	for len(want) > 0 {
		n, err := syscall.Pread(d.fd, want, off)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		want, off = want[n:], off+int64(n)
	}
	return nil
}

// page returns page p for writing, loading it from the backing file first.
func (d *dirtyFile) page(p int64) ([]byte, error) {
	if pg, ok := d.pages[p]; ok {
		return pg, nil
	}
	pg := make([]byte, pageSize)
	if err := d.backing(p, pg); err != nil {
		return nil, err
	}
	d.pages[p] = pg
	return pg, nil
}

// read fills buf from off as the file's users see it and returns the
// number of bytes read (short at the end of the file).
func (d *dirtyFile) read(buf []byte, off int64) (int, error) {
	if off >= d.size {
		return 0, nil
	}
	buf = buf[:min(int64(len(buf)), d.size-off)]
	tmp := make([]byte, pageSize)
	for done := 0; done < len(buf); {
		at := off + int64(done)
		p, in := at/pageSize, at%pageSize
		pg, ok := d.pages[p]
		if !ok {
			if err := d.backing(p, tmp); err != nil {
				return done, err
			}
			pg = tmp
		}
		done += copy(buf[done:], pg[in:])
	}
	return len(buf), nil
}

// write puts data at off into the cache.
func (d *dirtyFile) write(data []byte, off int64) error {
	for done := 0; done < len(data); {
		at := off + int64(done)
		pg, err := d.page(at / pageSize)
		if err != nil {
			return err
		}
		done += copy(pg[at%pageSize:], data[done:])
	}
	d.size = max(d.size, off+int64(len(data)))
	return nil
}

// truncate sets the file's size; bytes past a shrink read as zeros when
// the file grows again.
func (d *dirtyFile) truncate(size int64) {
	if size < d.size {
		for p, pg := range d.pages {
			switch start := p * pageSize; {
			case start >= size:
				delete(d.pages, p)
			case start+pageSize > size:
				clear(pg[size-start:])
			}
		}
		d.floor = min(d.floor, size)
	}
	d.size = size
}

// bytes is the number of cached bytes (whole pages).
func (d *dirtyFile) bytes() int64 { return int64(len(d.pages)) * pageSize }

// flush writes the cache to the backing file and syncs it. The cache is
// spent afterwards, whether flush succeeded or not.
func (d *dirtyFile) flush() error {
	var st syscall.Stat_t
	if err := syscall.Fstat(d.fd, &st); err != nil {
		return err
	}
	if d.floor < st.Size {
		if err := syscall.Ftruncate(d.fd, d.floor); err != nil {
			return err
		}
	}
	idx := make([]int64, 0, len(d.pages))
	for p := range d.pages {
		idx = append(idx, p)
	}
	slices.Sort(idx)
	for _, p := range idx {
		n := min(int64(pageSize), d.size-p*pageSize)
		if n <= 0 {
			continue
		}
		if err := pwriteAll(d.fd, d.pages[p][:n], p*pageSize); err != nil {
			return err
		}
	}
	if err := syscall.Ftruncate(d.fd, d.size); err != nil {
		return err
	}
	return syscall.Fdatasync(d.fd)
}

// close releases the backing descriptor.
func (d *dirtyFile) close() { syscall.Close(d.fd) }

func pwriteAll(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := syscall.Pwrite(fd, b, off)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}
