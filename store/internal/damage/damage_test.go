package damage

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
)

func TestIs(t *testing.T) {
	for err, want := range map[error]bool{
		fmt.Errorf("%w: MANIFEST", ErrDamaged):                 true,
		errors.New("checksum mismatch"):                        true,
		fmt.Errorf("open: %w", os.ErrPermission):               false,
		errors.New("while opening: " + syscall.ENOSPC.Error()): false,
		errors.New("Cannot acquire directory lock on \"/x\""):  false,
	} {
		if got := Is(err); got != want {
			t.Errorf("Is(%v) = %v, want %v", err, got, want)
		}
	}
}

func TestCleanMark(t *testing.T) {
	dir := t.TempDir()
	if err := CheckClean(dir, 5, 1, false); err != nil {
		t.Fatalf("no mark (after a crash): %v", err)
	}
	if err := WriteClean(dir, 5, 1); err != nil {
		t.Fatal(err)
	}
	if err := CheckClean(dir, 4, 1, true); !errors.Is(err, ErrDamaged) {
		t.Errorf("recovered less than the mark: %v, want ErrDamaged", err)
	}
	if err := CheckClean(dir, 5, 1, false); err != nil {
		t.Errorf("matching mark: %v", err)
	}
	if _, err := os.Stat(dir + "/" + cleanFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mark not removed after a writable check: %v", err)
	}
}
