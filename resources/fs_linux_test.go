package resources

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestReadFileWhateverTheSizeHint(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	want := bytes.Repeat([]byte("0123456789"), 1000)
	if err := os.WriteFile(path, want, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, hint := range []int64{0, 1, 9999, 10000, 10001, 1 << 20} {
		got, err := readFile(path, hint)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("size hint %d: read %d bytes, want %d", hint, len(got), len(want))
		}
	}
	if _, err := readFile(filepath.Join(t.TempDir(), "missing"), 0); !os.IsNotExist(err) {
		t.Fatalf("missing file: %v, want not-exist", err)
	}
}

// Reading dest to compare it must not update its access time (an inode write per file
// per change on a journaled file system) when herald may ask for that.
func TestReadFileLeavesAccessTime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// An access time older than the modification time: relatime would update it.
	old := time.Now().Add(-48 * time.Hour)
	if err := os.Chtimes(path, old, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := readFile(path, 2); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Atim.Sec != old.Unix() {
		t.Fatalf("atime changed to %v by reading (was %v)", time.Unix(st.Atim.Unix()), old)
	}
}
