//go:build linux

package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Nginx is Debian's nginx, master and workers, in the foreground:
// nginx -p PREFIX/ -c CONFIG -e stderr -g 'daemon off; pid PIDFILE;'.
// The config must not set daemon or pid itself. Relative paths in it resolve against
// Prefix; NginxHTTPDefaults gives the lines that keep nginx out of /var.
type Nginx struct {
	Proc                        *Proc
	Prefix, ConfigPath, PIDFile string
	// Listen are the addresses of the config's listen lines, dialed to see it serve.
	Listen []string
}

// nginxWorkerTitle is how nginx renames its worker processes.
const nginxWorkerTitle = "nginx: worker process"

// NginxHTTPDefaults returns directives for the config's http block that put the access
// log and the temp directories under the prefix (Debian's compiled-in paths are under
// /var/lib/nginx and /var/log/nginx, which tests must not touch).
func NginxHTTPDefaults() string {
	return `access_log off;
client_body_temp_path tmp/client_body;
proxy_temp_path tmp/proxy;
fastcgi_temp_path tmp/fastcgi;
uwsgi_temp_path tmp/uwsgi;
scgi_temp_path tmp/scgi;
`
}

// StartNginx starts nginx on configPath and waits until a worker runs and every listen
// address accepts.
func StartNginx(t testing.TB, configPath string) *Nginx {
	t.Helper()
	bin := Binary(t, "nginx")
	begin := time.Now()
	cfg, err := os.ReadFile(configPath)
	if err != nil {
		t.Fatalf("harness: nginx config: %v", err)
	}
	abs, err := filepath.Abs(configPath)
	if err != nil {
		t.Fatalf("harness: nginx config: %v", err)
	}
	prefix := shortTempDir(t, "herald-nginx-")
	// Workers run as an unprivileged user when we are root: let them reach the prefix.
	if err := os.Chmod(prefix, 0o755); err != nil {
		t.Fatalf("harness: nginx prefix: %v", err)
	}
	for _, d := range []string{"tmp", "logs"} {
		if err := os.MkdirAll(filepath.Join(prefix, d), 0o755); err != nil {
			t.Fatalf("harness: nginx prefix: %v", err)
		}
	}
	n := &Nginx{
		Prefix:     prefix,
		ConfigPath: abs,
		PIDFile:    filepath.Join(prefix, "nginx.pid"),
		Listen:     listenAddrs(string(cfg), "listen"),
	}
	n.Proc = startProc(t, procSpec{
		name:            "nginx",
		path:            bin,
		args:            []string{"-p", prefix + "/", "-c", abs, "-e", "stderr", "-g", "daemon off; pid " + n.PIDFile + ";"},
		dir:             prefix,
		logPath:         filepath.Join(prefix, "nginx.log"),
		ready:           n.ready,
		readyTimeout:    20 * time.Second,
		gracefulCleanup: true,
	}, true)
	t.Logf("harness: nginx (master pid %d) on %s ready in %v", n.Proc.PID(), strings.Join(n.Listen, ","), time.Since(begin).Round(time.Millisecond))
	return n
}

func (n *Nginx) ready(ctx context.Context, p *Proc) error {
	if len(childPIDs(p.PID(), nginxWorkerTitle)) == 0 {
		return fmt.Errorf("no worker yet")
	}
	return acceptsAll(ctx, n.Listen)
}

func (n *Nginx) workers() []int {
	return childPIDs(n.Proc.PID(), nginxWorkerTitle)
}

// Workers returns the PIDs of the running workers (including ones shutting down).
func (n *Nginx) Workers() []int { return n.workers() }

// Reload sends SIGHUP to the master and waits until new workers serve, then up to 10 s
// for the old workers to finish. A reload nginx rejects (bad config: the old workers
// stay) fails the test with nginx's log.
func (n *Nginx) Reload(t testing.TB) {
	t.Helper()
	if err := n.TryReload(t); err != nil {
		t.Fatalf("harness: %v\n--- nginx log (tail) ---\n%s", err, n.Proc.logTail())
	}
}

// TryReload is Reload that returns the failure instead of failing the test, for tests
// that reload onto a bad config on purpose (the old workers keep serving then).
func (n *Nginx) TryReload(t testing.TB) error {
	t.Helper()
	begin := time.Now()
	before := n.workers()
	logBefore := len(n.Proc.Log())
	n.Proc.Signal(t, syscall.SIGHUP)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var last error
	for {
		if !n.Proc.Running() {
			return fmt.Errorf("nginx master exited during reload: %v", n.Proc.exitErr())
		}
		if log := n.Proc.Log(); len(log) > logBefore && strings.Contains(log[logBefore:], "[emerg]") {
			return fmt.Errorf("nginx rejected the reload of %s: %s", n.ConfigPath, strings.TrimSpace(log[logBefore:]))
		}
		now := n.workers()
		if !slices.ContainsFunc(now, func(pid int) bool { return !slices.Contains(before, pid) }) {
			last = fmt.Errorf("no new worker yet (workers %v, before %v)", now, before)
		} else {
			last = acceptsAll(ctx, n.Listen)
		}
		if last == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nginx reload not done in 30s: %w", last)
		case <-time.After(pollEvery):
		}
	}
	served := time.Since(begin)
	if old := waitGone(before, 10*time.Second); len(old) > 0 {
		t.Logf("harness: nginx: old workers %v still draining after 10s", old)
	}
	t.Logf("harness: nginx reloaded: new worker serving in %v, old workers gone in %v",
		served.Round(time.Millisecond), time.Since(begin).Round(time.Millisecond))
	return nil
}
