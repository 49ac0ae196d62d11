package resources

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestReadNoFollowWhateverTheSize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	want := bytes.Repeat([]byte("0123456789"), 1000)
	if err := os.WriteFile(path, want, 0o644); err != nil {
		t.Fatal(err)
	}
	all := func(fs.FileInfo) bool { return true }
	got, fi, err := readNoFollow(path, 1<<20, all)
	if err != nil || !bytes.Equal(got, want) || fi.Size() != 10000 || fi.Mode() != 0o644 {
		t.Fatalf("read %d bytes, %v, %v; want %d", len(got), fi, err, len(want))
	}
	// Over the limit: limit+1 bytes say so, no more are read.
	if got, _, err := readNoFollow(path, 100, all); err != nil || len(got) != 101 {
		t.Fatalf("limit 100: read %d bytes, %v; want 101", len(got), err)
	}
	if _, _, err := readNoFollow(filepath.Join(t.TempDir(), "missing"), 10, all); !os.IsNotExist(err) {
		t.Fatalf("missing file: %v, want not-exist", err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	if b, _, err := readNoFollow(link, 1<<20, all); !errors.Is(err, syscall.ELOOP) || b != nil {
		t.Fatalf("through a symlink: %q, %v; want ELOOP", b, err)
	}
	// A FIFO is opened without blocking and not read.
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, fi, err := readNoFollow(fifo, 1<<20, all); err != nil || b != nil || fi.Mode()&fs.ModeNamedPipe == 0 {
		t.Fatalf("fifo: %q, %v, %v", b, fi, err)
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
	if _, _, err := readNoFollow(path, 10, func(fs.FileInfo) bool { return true }); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if int64(st.Atim.Sec) != old.Unix() { // int32 on 32-bit platforms
		t.Fatalf("atime changed to %v by reading (was %v)", time.Unix(st.Atim.Unix()), old)
	}
}
