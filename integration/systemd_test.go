package integration

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// notifySocket is systemd's end of sd_notify: a unixgram socket whose datagrams (one
// notification each) arrive on msgs.
func notifySocket(t *testing.T) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	msgs := make(chan string, 1024)
	go func() {
		defer close(msgs)
		b := make([]byte, 8192)
		for {
			n, err := c.Read(b)
			if err != nil {
				return
			}
			msgs <- string(b[:n])
		}
	}()
	return path, msgs
}

// nextWith returns the first notification with a line that starts with line, and every
// notification received before it.
func nextWith(t *testing.T, msgs <-chan string, line string, within time.Duration) (string, []string) {
	t.Helper()
	var before []string
	deadline := time.After(within)
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("notify socket closed before %q; got %q", line, before)
			}
			for _, l := range strings.Split(m, "\n") {
				if strings.HasPrefix(l, line) {
					return m, before
				}
			}
			before = append(before, m)
		case <-deadline:
			t.Fatalf("no %q within %v; got %q", line, within, before)
		}
	}
}

// herald watch under a Type=notify unit: READY=1 only once every resource has rendered
// (its file is on disk by then), STATUS= says what is missing until then, WATCHDOG=1 at
// half WATCHDOG_USEC, RELOADING=1/READY=1 around SIGHUP, STOPPING=1 on SIGTERM.
func TestSystemdNotifyWatch(t *testing.T) {
	sock, msgs := notifySocket(t)
	dir := t.TempDir()
	flag := filepath.Join(dir, "check-passes")
	writeTree(t, dir, map[string]string{
		"data.yaml":        "app:\n  name: one\n",
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"out/a\"\nmake_dirs = true\ncheck_cmd = \"test -e " + flag + "\"\n",
		"templates/a.tmpl": `name={{getv "/app/name"}}` + "\n",
	})
	dest := filepath.Join(dir, "out", "a")
	p := startHerald(t, []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=400000"},
		"watch", "--confdir", dir, "--backend", "file://"+filepath.Join(dir, "data.yaml"))

	// The check fails: herald runs and says so, and is not ready. A status sent while the
	// first render is still in flight says 0/1 without a failure yet; the one after it
	// names the resource.
	var before []string
	var m string
	for !strings.Contains(m, "; failing: a.toml") {
		if m != "" {
			before = append(before, m)
		}
		var b []string
		m, b = nextWith(t, msgs, "STATUS=0/1 resources rendered; backend up", 20*time.Second)
		before = append(before, b...)
	}
	for _, b := range append(before, m) {
		if strings.Contains(b, "READY=1") {
			t.Fatalf("READY=1 before any render succeeded: %q", b)
		}
	}
	// Watchdog pings come from the loop at about 200 ms: five within 5 s.
	for range 5 {
		nextWith(t, msgs, "WATCHDOG=1", 5*time.Second)
	}

	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	writeTree(t, dir, map[string]string{"data.yaml": "app:\n  name: two\n"})
	m, before = nextWith(t, msgs, "READY=1", 20*time.Second)
	if b, err := os.ReadFile(dest); err != nil || string(b) != "name=two\n" {
		t.Fatalf("READY=1 (%q) while %s = %q, %v", m, dest, b, err)
	}
	for _, b := range before {
		if strings.Contains(b, "READY=1") {
			t.Fatalf("READY=1 before the render: %q", b)
		}
	}
	if !strings.Contains(m, "STATUS=1/1 resources rendered; backend up") {
		nextWith(t, msgs, "STATUS=1/1 resources rendered; backend up", 5*time.Second)
	}

	p.cmd.Process.Signal(syscall.SIGHUP)
	nextWith(t, msgs, "RELOADING=1", 10*time.Second)
	nextWith(t, msgs, "READY=1", 10*time.Second)

	p.cmd.Process.Signal(syscall.SIGTERM)
	nextWith(t, msgs, "STOPPING=1", 10*time.Second)
	if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
}

// herald register under a Type=notify unit: READY=1 once the instance is registered
// (listed by the registry when READY=1 arrives).
func TestSystemdNotifyRegister(t *testing.T) {
	sock, msgs := notifySocket(t)
	s := startRegServer(t, "etcd")
	p := startHerald(t, []string{"NOTIFY_SOCKET=" + sock},
		"register", "--backend", s.url, "--service", "web", "--address", "10.1.0.9", "--port", "80")
	m, _ := nextWith(t, msgs, "READY=1", 20*time.Second)
	if !strings.Contains(m, "STATUS=1/1 instances announced; backend up") {
		t.Fatalf("READY=1 with %q", m)
	}
	if regInstanceLine(regServices(t, s, "web"), "web-10.1.0.9-80") == "" {
		t.Fatal("READY=1 before the instance was registered")
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	nextWith(t, msgs, "STOPPING=1", 10*time.Second)
	if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
}
