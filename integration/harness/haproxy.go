//go:build linux

package harness

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// HAProxy is Debian's haproxy in master-worker mode (-W), in the foreground (-db), with a
// master CLI socket (-S) in a temp dir and a pid file (-p). Proc is the master.
type HAProxy struct {
	Proc                  *Proc
	ConfigPath            string
	MasterSocket, PIDFile string
	// Listen are the addresses of the config's bind lines, dialed to see it serve.
	Listen []string
}

// StartHAProxy starts haproxy on configPath (which the test wrote, binding free ports
// on 127.0.0.1) and waits until a worker runs and every bind address accepts.
func StartHAProxy(t testing.TB, configPath string) *HAProxy {
	t.Helper()
	bin := Binary(t, "haproxy")
	begin := time.Now()
	cfg, err := os.ReadFile(configPath)
	if err != nil {
		t.Fatalf("harness: haproxy config: %v", err)
	}
	dir := shortTempDir(t, "herald-haproxy-")
	h := &HAProxy{
		ConfigPath:   configPath,
		MasterSocket: filepath.Join(dir, "master.sock"),
		PIDFile:      filepath.Join(dir, "haproxy.pid"),
		Listen:       listenAddrs(string(cfg), "bind"),
	}
	h.Proc = startProc(t, procSpec{
		name:            "haproxy",
		path:            bin,
		args:            []string{"-W", "-db", "-S", h.MasterSocket, "-p", h.PIDFile, "-f", configPath},
		dir:             dir,
		logPath:         filepath.Join(dir, "haproxy.log"),
		ready:           h.ready,
		readyTimeout:    20 * time.Second,
		gracefulCleanup: true,
	}, true)
	t.Logf("harness: haproxy (master pid %d) on %s ready in %v", h.Proc.PID(), strings.Join(h.Listen, ","), time.Since(begin).Round(time.Millisecond))
	return h
}

func (h *HAProxy) ready(ctx context.Context, _ *Proc) error {
	procs, err := h.showProc(ctx)
	if err != nil {
		return err
	}
	if len(procs.workers) == 0 {
		return fmt.Errorf("no worker yet")
	}
	return acceptsAll(ctx, h.Listen)
}

// MasterCommand runs one command on the master CLI (e.g. "show proc") and returns the
// answer.
func (h *HAProxy) MasterCommand(t testing.TB, cmd string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := h.masterCommand(ctx, cmd)
	if err != nil {
		t.Fatalf("harness: haproxy master CLI %q: %v", cmd, err)
	}
	return out
}

func (h *HAProxy) masterCommand(ctx context.Context, cmd string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", h.MasterSocket)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	// Without "quit" the master CLI keeps the connection open for more commands.
	if _, err := io.WriteString(c, cmd+";quit\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(io.LimitReader(c, 1<<20))
	return string(b), err
}

// haproxyProcs is the master's `show proc`.
type haproxyProcs struct {
	failed  int   // failed reloads so far ("[failed: N]" on the master line)
	workers []int // current workers
	old     []int // workers of earlier generations still draining
}

func parseShowProc(s string) haproxyProcs {
	var p haproxyProcs
	section := "master"
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#<"):
			continue
		case strings.HasPrefix(line, "#"):
			section = strings.TrimSpace(strings.TrimPrefix(line, "#"))
			continue
		}
		f := strings.Fields(line)
		pid, err := strconv.Atoi(f[0])
		if err != nil || len(f) < 2 {
			continue
		}
		switch {
		case f[1] == "master":
			if _, rest, ok := strings.Cut(line, "[failed: "); ok {
				num, _, _ := strings.Cut(rest, "]")
				p.failed, _ = strconv.Atoi(num)
			}
		case section == "workers" && f[1] == "worker":
			p.workers = append(p.workers, pid)
		case section == "old workers":
			p.old = append(p.old, pid)
		}
	}
	return p
}

func (h *HAProxy) showProc(ctx context.Context) (haproxyProcs, error) {
	out, err := h.masterCommand(ctx, "show proc")
	if err != nil {
		return haproxyProcs{}, err
	}
	if !strings.Contains(out, "master") {
		return haproxyProcs{}, fmt.Errorf("show proc: unexpected answer %q", out)
	}
	return parseShowProc(out), nil
}

// Workers returns the PIDs of the current workers.
func (h *HAProxy) Workers(t testing.TB) []int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := h.showProc(ctx)
	if err != nil {
		t.Fatalf("harness: haproxy show proc: %v", err)
	}
	return p.workers
}

// Reload sends SIGUSR2 to the master (a hitless reload: the new worker takes over the
// listening sockets) and waits until a new worker runs and every bind address accepts.
// It then waits up to 10 s for the old workers to finish their connections, so that
// what answers afterwards is the new configuration. A reload the master rejects (bad
// config) fails the test with haproxy's log.
func (h *HAProxy) Reload(t testing.TB) {
	t.Helper()
	if err := h.TryReload(t); err != nil {
		t.Fatalf("harness: %v\n--- haproxy log (tail) ---\n%s", err, h.Proc.logTail())
	}
}

// TryReload is Reload that returns the failure instead of failing the test, for tests
// that reload onto a bad config on purpose (the old workers keep serving then).
func (h *HAProxy) TryReload(t testing.TB) error {
	t.Helper()
	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	before, err := h.showProc(ctx)
	if err != nil {
		return fmt.Errorf("haproxy reload: show proc: %w", err)
	}
	h.Proc.Signal(t, syscall.SIGUSR2)
	var last error
	for {
		if !h.Proc.Running() {
			return fmt.Errorf("haproxy master exited during reload: %v", h.Proc.exitErr())
		}
		now, err := h.showProc(ctx)
		switch {
		case err != nil:
			last = err // the master re-executes itself and rebinds its socket
		case now.failed > before.failed:
			return fmt.Errorf("haproxy rejected the reload of %s (failed reloads: %d)", h.ConfigPath, now.failed)
		case !slices.ContainsFunc(now.workers, func(pid int) bool { return !slices.Contains(before.workers, pid) }):
			last = fmt.Errorf("no new worker yet (workers %v, before %v)", now.workers, before.workers)
		default:
			last = acceptsAll(ctx, h.Listen)
		}
		if last == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("haproxy reload not done in 30s: %w", last)
		case <-time.After(pollEvery):
		}
	}
	served := time.Since(begin)
	if old := waitGone(before.workers, 10*time.Second); len(old) > 0 {
		t.Logf("harness: haproxy: old workers %v still draining after 10s", old)
	}
	t.Logf("harness: haproxy reloaded: new worker serving in %v, old workers gone in %v",
		served.Round(time.Millisecond), time.Since(begin).Round(time.Millisecond))
	return nil
}

// waitGone waits until none of pids is alive, or the timeout passes; it returns the
// ones still alive.
func waitGone(pids []int, timeout time.Duration) []int {
	deadline := time.Now().Add(timeout)
	for {
		var alive []int
		for _, p := range pids {
			if pidAlive(p) {
				alive = append(alive, p)
			}
		}
		if len(alive) == 0 || time.Now().After(deadline) {
			return alive
		}
		time.Sleep(pollEvery)
	}
}
