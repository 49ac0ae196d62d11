//go:build unix

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
	for _, c := range []struct{ cfg, want string }{
		{fifo, fifo + ": not a regular file (a FIFO)"},
		{zero, zero + ": not a regular file (a character device)"},
	} {
		// herald.toml, and confd.toml under confd's command line.
		for _, args := range [][]string{{"check", "--config", c.cfg, "--confdir", dir}, {"confd", "-onetime", "-config-file", c.cfg, "-confdir", dir}} {
			checkConfigRefused(t, args, c.want)
		}
	}
}

func checkConfigRefused(t *testing.T, args []string, want string) {
	t.Helper()
	{
		done := make(chan struct{})
		var (
			code   int
			stderr string
		)
		go func() {
			code, _, stderr = herald(t, nil, args...)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%v hangs", args)
		}
		if code != 2 || !strings.Contains(stderr, want) {
			t.Errorf("%v: exit %d %q, want 2 and %q", args, code, stderr, want)
		}
	}
}

// herald get never prints a control character raw: a value holding a terminal escape
// sequence or a carriage return is quoted, keys too.
func TestGetEscapesControlCharacters(t *testing.T) {
	dir := writeFiles(t, map[string]string{"data.yaml": "app:\n  plain: hello world\n  esc: \"\\e[2J\\e[31mred\"\n  cr: \"safe\\rEVIL\"\n  bidi: \"abc\\u202Edef\"\n  \"k\\e]0;title\\a\": v\n"})
	code, stdout, stderr := herald(t, nil, "get", "--backend", "file://"+filepath.Join(dir, "data.yaml"), "/app")
	if code != 0 {
		t.Fatalf("get: %d %s", code, stderr)
	}
	want := "/app/bidi = \"abc\\u202edef\"\n/app/cr = \"safe\\rEVIL\"\n/app/esc = \"\\x1b[2J\\x1b[31mred\"\n\"/app/k\\x1b]0;title\\a\" = v\n/app/plain = hello world\n"
	if stdout != want {
		t.Fatalf("get printed:\n%q\nwant\n%q", stdout, want)
	}
}

// --interval has a lower bound: 1ns re-read the registry in a loop.
func TestIntervalLowerBound(t *testing.T) {
	dir := writeFiles(t, map[string]string{"data.yaml": "a: 1\n"})
	code, _, stderr := herald(t, nil, "watch", "--confdir", dir, "--backend", "file://"+filepath.Join(dir, "data.yaml"), "--interval", "1ns")
	if code != 2 || !strings.Contains(stderr, "herald watch: --interval 1ns: want 0 (off) or at least 1s") {
		t.Fatalf("--interval 1ns: exit %d %q", code, stderr)
	}
}
