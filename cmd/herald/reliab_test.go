package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// herald.toml as a FIFO or a link to /dev/zero: a clear error at once, neither a hang
// nor memory exhausted.
func TestConfigFileMustBeRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.toml")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	zero := filepath.Join(dir, "zero.toml")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	for cfg, want := range map[string]string{
		fifo: fifo + ": not a regular file (a FIFO)",
		zero: zero + ": not a regular file (a character device)",
	} {
		done := make(chan struct{})
		var (
			code   int
			stderr string
		)
		go func() {
			code, _, stderr = herald(t, nil, "check", "--config", cfg, "--confdir", dir)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("--config %s hangs", cfg)
		}
		if code != 2 || !strings.Contains(stderr, want) {
			t.Errorf("--config %s: exit %d %q, want 2 and %q", cfg, code, stderr, want)
		}
	}
}
