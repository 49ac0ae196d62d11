//go:build linux

package supervisor

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/backends/open"
	"github.com/heraldhq/herald/template"
)

// These tests drive the supervisor with the file backend (no server needed) and /bin/sh
// children; integration/exec_test.go does the same through the CLI against real etcd
// and Consul.

// shChild is a child that writes its environment to $STATE/env.<pid>, records the
// signals it gets in $STATE/signals, and on TERM does onTerm. It writes its pid to
// $STATE/pids once its traps are set: a test signals it only then.
func shChild(state, onTerm, extra string) Command {
	script := fmt.Sprintf(`
state=%q
env > "$state/env.$$.tmp" && mv "$state/env.$$.tmp" "$state/env.$$"
trap 'echo "$$ HUP" >> "$state/signals"; %s' HUP
trap 'echo "$$ USR1" >> "$state/signals"' USR1
trap 'echo "$$ TERM" >> "$state/signals"; %s' TERM
echo $$ >> "$state/pids"
i=0
while [ $i -lt 6000 ]; do sleep 0.01; i=$((i+1)); done
exit 99
`, state, extra, onTerm)
	return Command{Path: "/bin/sh", Args: []string{"-c", script}}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type run struct {
	cancel context.CancelFunc
	sigs   chan os.Signal
	done   chan struct{}
	code   int
	err    error
	logs   *syncBuf
}

func startRun(t *testing.T, cfg Config) *run {
	t.Helper()
	logs := &syncBuf{}
	cfg.Log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{cancel: cancel, sigs: make(chan os.Signal, 4), done: make(chan struct{}), logs: logs}
	go func() {
		defer close(r.done)
		r.code, r.err = Run(ctx, cfg, r.sigs)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return within 10s of cancel")
		}
		if t.Failed() {
			t.Logf("supervisor log:\n%s", logs.String())
		}
	})
	return r
}

func (r *run) wait(t *testing.T, within time.Duration) (int, error) {
	t.Helper()
	select {
	case <-r.done:
		return r.code, r.err
	case <-time.After(within):
		t.Fatalf("Run did not return within %v", within)
		return 0, nil
	}
}

func fileStore(t *testing.T, path string) backends.Store {
	t.Helper()
	s, err := open.Open(context.Background(), backends.Config{URL: "file://" + path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// waitFor polls cond every 10 ms for at most d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func pids(state string) []int {
	b, _ := os.ReadFile(filepath.Join(state, "pids"))
	var out []int
	for _, f := range strings.Fields(string(b)) {
		n, _ := strconv.Atoi(f)
		out = append(out, n)
	}
	return out
}

// envOf reads the environment that child pid wrote.
func envOf(t *testing.T, state string, pid int) map[string]string {
	t.Helper()
	p := filepath.Join(state, fmt.Sprintf("env.%d", pid))
	waitFor(t, 5*time.Second, p, func() bool { _, err := os.Stat(p); return err == nil })
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			env[k] = v
		}
	}
	return env
}

func writeData(t *testing.T, path, yaml string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestRunEnvAndRestartOnChange(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	data := filepath.Join(dir, "data.yaml")
	writeData(t, data, "app:\n  db:\n    host: one\n  secret-token: hunter2-s3cret\nother:\n  db:\n    host: other\n")
	r := startRun(t, Config{
		Store:    fileStore(t, data),
		Prefixes: []string{"/app", "/other"},
		Naming:   Naming{Upcase: true, EnvPrefix: "APP_"},
		BaseEnv:  []string{"INHERITED=yes", "APP_DB_HOST=inherited"},
		Command:  shChild(state, "exit 0", ""),
	})
	waitFor(t, 10*time.Second, "first child", func() bool { return len(pids(state)) == 1 })
	first := pids(state)[0]
	env := envOf(t, state, first)
	for k, v := range map[string]string{
		"APP_DB_HOST":      "other", // the later prefix wins, and the registry beats the inherited value
		"APP_SECRET_TOKEN": "hunter2-s3cret",
		"INHERITED":        "yes",
	} {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}

	writeData(t, data, "app:\n  db:\n    host: one\n  secret-token: rotated-s3cret\nother:\n  db:\n    host: other\n")
	waitFor(t, 10*time.Second, "restarted child", func() bool { return len(pids(state)) == 2 })
	second := pids(state)[1]
	if got := envOf(t, state, second)["APP_SECRET_TOKEN"]; got != "rotated-s3cret" {
		t.Fatalf("restarted child sees %q", got)
	}
	sigs, _ := os.ReadFile(filepath.Join(state, "signals"))
	if !strings.Contains(string(sigs), fmt.Sprintf("%d TERM", first)) {
		t.Errorf("old child was not stopped with SIGTERM: %q", sigs)
	}
	// A change that leaves the variables as they are restarts nothing.
	writeData(t, data, "app:\n  db:\n    host: one\n  secret-token: rotated-s3cret\nother:\n  db:\n    host: other\nunrelated: 1\n")
	// A later change that does restart the child proves the unrelated one did not: one
	// child more, not two.
	writeData(t, data, "app:\n  db:\n    host: one\n  secret-token: third-s3cret\nother:\n  db:\n    host: other\nunrelated: 1\n")
	waitFor(t, 10*time.Second, "child restarted for the later change", func() bool {
		ps := pids(state)
		return len(ps) >= 3 && envOf(t, state, ps[len(ps)-1])["APP_SECRET_TOKEN"] == "third-s3cret"
	})
	if n := len(pids(state)) - 1; n != 2 {
		t.Errorf("%d children after an unrelated change, want 2", n)
	}

	r.cancel()
	code, err := r.wait(t, 10*time.Second)
	if err != nil || code != 0 {
		t.Fatalf("Run = %d, %v after cancel; want 0 (the child exits 0 on TERM)", code, err)
	}
	if logs := r.logs.String(); strings.Contains(logs, "s3cret") {
		t.Errorf("a value was logged:\n%s", logs)
	} else if !strings.Contains(logs, "APP_SECRET_TOKEN") {
		t.Errorf("variable names are not in the debug log:\n%s", logs)
	}
}

func TestRunPristine(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	data := filepath.Join(dir, "data.yaml")
	writeData(t, data, "app:\n  x: 1\n")
	startRun(t, Config{
		Store:    fileStore(t, data),
		Prefixes: []string{"/app"},
		Pristine: true,
		BaseEnv:  []string{"INHERITED=yes"},
		Command:  shChild(state, "exit 0", ""),
	})
	waitFor(t, 10*time.Second, "child", func() bool { return len(pids(state)) == 1 })
	env := envOf(t, state, pids(state)[0])
	if env["x"] != "1" || env["INHERITED"] != "" {
		t.Fatalf("pristine child env = %v", env)
	}
}

func TestRunReloadSignalRendersFirst(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	data := filepath.Join(dir, "data.yaml")
	writeData(t, data, "app:\n  color: blue\n")
	tmplPath := filepath.Join(dir, "conf.tmpl")
	os.WriteFile(tmplPath, []byte(`color={{getv "/app/color"}} extra={{getv "/extra/k" "none"}}`), 0o644)
	tm, err := template.ParseFile(tmplPath)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "conf.out")
	r := startRun(t, Config{
		Store:        fileStore(t, data),
		Prefixes:     []string{"/app"},
		Templates:    []Template{{Src: tmplPath, Dest: out, Tmpl: tm}},
		ReloadSignal: syscall.SIGHUP,
		// On HUP the child copies the rendered file: it must already hold the new value.
		Command: shChild(state, "exit 0", fmt.Sprintf(`cp %q "$state/reloaded"`, out)),
	})
	waitFor(t, 10*time.Second, "child", func() bool { return len(pids(state)) == 1 })
	if b, _ := os.ReadFile(out); string(b) != "color=blue extra=none" {
		t.Fatalf("rendered before start: %q", b)
	}
	// A key the template reads outside --prefix is loaded and watched too.
	writeData(t, data, "app:\n  color: red\nextra:\n  k: v\n")
	reloaded := filepath.Join(state, "reloaded")
	waitFor(t, 10*time.Second, "reload", func() bool {
		b, _ := os.ReadFile(reloaded)
		return string(b) == "color=red extra=v"
	})
	if n := len(pids(state)); n != 1 {
		t.Fatalf("%d children in reload mode, want 1 (no restart)", n)
	}
	// SIGHUP to herald, when it is the reload signal, reloads as well.
	os.Remove(reloaded)
	r.sigs <- syscall.SIGHUP
	waitFor(t, 5*time.Second, "reload on SIGHUP", func() bool { _, err := os.Stat(reloaded); return err == nil })
}

func TestRunForwardsSignalsAndEndsWithChild(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	data := filepath.Join(dir, "data.yaml")
	writeData(t, data, "app:\n  x: 1\n")
	r := startRun(t, Config{
		Store:    fileStore(t, data),
		Prefixes: []string{"/app"},
		Command:  shChild(state, "exit 3", ""),
	})
	waitFor(t, 10*time.Second, "child", func() bool { return len(pids(state)) == 1 })
	pid := pids(state)[0]
	// One at a time: the kernel delivers pending signals by number, not by arrival.
	for i, sig := range []syscall.Signal{syscall.SIGUSR1, syscall.SIGHUP} { // HUP is not the reload signal here
		r.sigs <- sig
		waitFor(t, 5*time.Second, sig.String(), func() bool {
			b, _ := os.ReadFile(filepath.Join(state, "signals"))
			return strings.Count(string(b), "\n") == i+1
		})
	}
	r.sigs <- syscall.SIGTERM
	code, err := r.wait(t, 5*time.Second)
	if err != nil || code != 3 {
		t.Fatalf("Run = %d, %v; want the child's status 3", code, err)
	}
	b, _ := os.ReadFile(filepath.Join(state, "signals"))
	if want := fmt.Sprintf("%d USR1\n%d HUP\n%d TERM\n", pid, pid, pid); string(b) != want {
		t.Fatalf("child received %q, want %q", b, want)
	}
}

func TestRunKillTimeoutEscalates(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	data := filepath.Join(dir, "data.yaml")
	writeData(t, data, "app:\n  x: 1\n")
	r := startRun(t, Config{
		Store:       fileStore(t, data),
		Prefixes:    []string{"/app"},
		KillTimeout: 300 * time.Millisecond,
		Command:     shChild(state, ":", ""), // ignores TERM
	})
	waitFor(t, 10*time.Second, "child", func() bool { return len(pids(state)) == 1 })
	begin := time.Now()
	r.cancel()
	code, _ := r.wait(t, 5*time.Second)
	if code != 128+9 {
		t.Fatalf("status %d, want 137 (SIGKILL)", code)
	}
	if d := time.Since(begin); d < 300*time.Millisecond {
		t.Fatalf("SIGKILL after %v, before --kill-timeout", d)
	}
	// The whole group went: the sleep the shell was waiting for, too.
	pid := pids(state)[0]
	waitFor(t, 2*time.Second, "the child's process group to be gone", func() bool { return len(liveInGroup(pid)) == 0 })
}

// liveInGroup lists the processes of group pgid that are not zombies.
func liveInGroup(pgid int) []int {
	var out []int
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		_, rest, _ := strings.Cut(string(b), ") ")
		fields := strings.Fields(rest) // state ppid pgrp ...
		if len(fields) > 2 && fields[0] != "Z" && fields[2] == strconv.Itoa(pgid) {
			n, _ := strconv.Atoi(strings.Split(f, "/")[2])
			out = append(out, n)
		}
	}
	return out
}

func TestRunChildExitStatus(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data.yaml")
	writeData(t, data, "app:\n  x: 1\n")
	for script, want := range map[string]int{"exit 7": 7, "exit 0": 0, "kill -USR2 $$": 128 + int(syscall.SIGUSR2)} {
		r := startRun(t, Config{
			Store:    fileStore(t, data),
			Prefixes: []string{"/app"},
			Command:  Command{Path: "/bin/sh", Args: []string{"-c", script}},
		})
		if code, err := r.wait(t, 10*time.Second); err != nil || code != want {
			t.Errorf("%q: Run = %d, %v; want %d", script, code, err, want)
		}
	}
}

func TestRunStartFailsOnBadData(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	r := startRun(t, Config{
		Store:    fileStore(t, filepath.Join(dir, "missing.yaml")),
		Prefixes: []string{"/app"},
		Timeout:  500 * time.Millisecond,
		Command:  shChild(state, "exit 0", ""),
	})
	code, err := r.wait(t, 5*time.Second)
	if code != 1 || err == nil || !strings.Contains(err.Error(), "missing.yaml") || !strings.Contains(err.Error(), "--timeout") {
		t.Fatalf("Run = %d, %v; want status 1 and an error naming the file and --timeout", code, err)
	}
	if len(pids(state)) != 0 {
		t.Fatal("the child started without its data")
	}
}

func TestRunSignalBeforeStart(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	r := startRun(t, Config{
		Store:    fileStore(t, filepath.Join(dir, "missing.yaml")),
		Prefixes: []string{"/app"},
		Timeout:  time.Minute,
		Command:  shChild(state, "exit 0", ""),
	})
	r.sigs <- syscall.SIGINT
	if code, err := r.wait(t, 5*time.Second); code != 128+2 || err != nil {
		t.Fatalf("Run = %d, %v; want 130", code, err)
	}
}

// TestReapOrphan makes this test process a subreaper, as PID 1 is, creates an orphan
// (a shell that exits leaving a background sleep), and checks that reap collects it.
func TestReapOrphan(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	out, err := exec.Command("/bin/sh", "-c", "sleep 0.1 & echo $!").Output()
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	// Once sleep ends, it is our zombie: nobody else will wait for it.
	waitFor(t, 5*time.Second, "orphan to become a zombie", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", orphan))
		if err != nil {
			return false
		}
		_, rest, _ := strings.Cut(string(b), ") ")
		return strings.HasPrefix(rest, "Z")
	})
	got := reap()
	if len(got) != 1 || got[0].pid != orphan || ExitCode(got[0].ws) != 0 {
		t.Fatalf("reap() = %+v, want pid %d with status 0", got, orphan)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", orphan)); !os.IsNotExist(err) {
		t.Fatalf("/proc/%d still there after reap: %v", orphan, err)
	}
	if again := reap(); len(again) != 0 {
		t.Fatalf("second reap() = %+v", again)
	}
}

// TestRunReapsAsInit runs the supervisor in reaping mode: it must still see its own
// child's exit (it waits for every child itself) and collect orphans on the way.
func TestRunReapsAsInit(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	dir := t.TempDir()
	data := filepath.Join(dir, "data.yaml")
	writeData(t, data, "app:\n  x: 1\n")
	r := startRun(t, Config{
		Store:    fileStore(t, data),
		Prefixes: []string{"/app"},
		Reap:     true,
		// The child leaves an orphan behind (a subshell of sleep), then exits 5 later.
		Command: Command{Path: "/bin/sh", Args: []string{"-c", "(sleep 0.05 &) ; sleep 0.3; exit 5"}},
	})
	if code, err := r.wait(t, 10*time.Second); code != 5 || err != nil {
		t.Fatalf("Run = %d, %v; want 5", code, err)
	}
	if !strings.Contains(r.logs.String(), "reaped an orphan") {
		t.Errorf("no orphan reaped:\n%s", r.logs.String())
	}
}
