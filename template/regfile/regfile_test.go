//go:build unix

package regfile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestReadRefusesSpecialFilesAndBoundsSize(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.toml")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	zero := filepath.Join(dir, "zero.toml")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.toml")
	if err := os.WriteFile(big, make([]byte, 101), 0o644); err != nil {
		t.Fatal(err)
	}
	ok := filepath.Join(dir, "ok.toml")
	if err := os.WriteFile(ok, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, want string }{
		{fifo, "not a regular file (a FIFO)"},
		{zero, "not a regular file (a character device)"},
		{big, "larger than 100 bytes"},
		{dir, "is a directory"},
	} {
		done := make(chan error, 1)
		go func() { _, err := Read(c.path, 100); done <- err }()
		select {
		case err := <-done:
			if err == nil || err.Error() != c.want {
				t.Errorf("Read(%s) = %v, want %q", c.path, err, c.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Read(%s) hangs", c.path)
		}
	}
	if b, err := Read(ok, 100); err != nil || string(b) != "hello" {
		t.Errorf("Read(ok) = %q, %v", b, err)
	}
	if _, err := Read(filepath.Join(dir, "missing"), 100); !os.IsNotExist(err) || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file: %v", err)
	}
}
