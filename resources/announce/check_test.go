//go:build unix

package announce

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseCheck(t *testing.T) {
	cases := []struct {
		spec    string
		want    Check
		wantErr string
	}{
		{spec: "http://127.0.0.1:8080/health", want: HTTPCheck("http://127.0.0.1:8080/health")},
		{spec: "https://db.local/ready", want: HTTPCheck("https://db.local/ready")},
		{spec: "tcp://127.0.0.1:5432", want: TCPCheck("127.0.0.1:5432")},
		{spec: "tcp://[::1]:5432", want: TCPCheck("[::1]:5432")},
		{spec: "tcp://127.0.0.1", wantErr: "want tcp://host:port"},
		{spec: "tcp://127.0.0.1:5432/path", wantErr: "want tcp://host:port"},
		{spec: "http:///health", wantErr: "no host"},
		{spec: "pg_isready", wantErr: "use --check-cmd"},
		{spec: "udp://127.0.0.1:53", wantErr: "want http://, https:// or tcp://"},
		{spec: "ftp://user:s3cret@host/x", wantErr: "ftp://REDACTED@host/x"},
	}
	for _, c := range cases {
		got, err := ParseCheck(c.spec)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("ParseCheck(%q) = %v, %v; want error with %q", c.spec, got, err, c.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Errorf("ParseCheck(%q): error shows the password: %v", c.spec, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseCheck(%q) = %#v, %v; want %#v", c.spec, got, err, c.want)
		}
	}
}

func check(t *testing.T, c Check, timeout time.Duration) (time.Duration, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	err := c.Check(ctx)
	return time.Since(start), err
}

func TestHTTPCheck(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			select {
			case <-block:
			case <-r.Context().Done():
			}
		case "/redirect":
			http.Redirect(w, r, "/fail", http.StatusFound)
		default:
			code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
			w.WriteHeader(code)
		}
	}))
	defer srv.Close()
	withPass := strings.Replace(srv.URL, "http://", "http://u:s3cret@", 1)
	for path, pass := range map[string]bool{"/200": true, "/204": true, "/redirect": true, "/301": true, "/404": false, "/500": false, "/503": false} {
		_, err := check(t, HTTPCheck(withPass+path), 2*time.Second)
		if (err == nil) != pass {
			t.Errorf("GET %s: err = %v, want pass = %v", path, err, pass)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("GET %s: error shows the password: %v", path, err)
		}
	}
	if s := HTTPCheck(withPass + "/x").String(); strings.Contains(s, "s3cret") || !strings.HasPrefix(s, "http://REDACTED@127.0.0.1:") {
		t.Errorf("String() = %q", s)
	}
	took, err := check(t, HTTPCheck(srv.URL+"/slow"), 200*time.Millisecond)
	if err == nil || took > time.Second {
		t.Errorf("hanging endpoint: err = %v after %v; want a failure at the timeout", err, took)
	}
	// Nothing listening.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	if _, err := check(t, HTTPCheck("http://"+addr+"/"), time.Second); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("closed port: err = %v", err)
	}
}

func TestTCPCheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if _, err := check(t, TCPCheck(addr), time.Second); err != nil {
		t.Fatalf("open port: %v", err)
	}
	ln.Close()
	if _, err := check(t, TCPCheck(addr), time.Second); err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("closed port: err = %v; want a failure naming %s", err, addr)
	}
}

func TestCommandCheck(t *testing.T) {
	if _, err := check(t, CommandCheck("true"), 5*time.Second); err != nil {
		t.Fatalf("true: %v", err)
	}
	_, err := check(t, CommandCheck("echo not ready >&2; exit 3"), 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "not ready") {
		t.Fatalf("exit 3: err = %v; want the status and the output", err)
	}
	if s := CommandCheck("PGPASSWORD=s3cret pg_isready").String(); strings.Contains(s, "s3cret") {
		t.Fatalf("String() shows the command line: %q", s)
	}

	// A check that hangs is killed at the timeout with everything it started.
	pidFile := filepath.Join(t.TempDir(), "pid")
	took, err := check(t, CommandCheck("sleep 30 & echo $! > "+pidFile+"; wait"), 300*time.Millisecond)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || took > 2*time.Second {
		t.Fatalf("hanging command: err = %v after %v; want a timeout", err, took)
	}
	b, _ := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 {
		t.Fatalf("no pid recorded: %q", b)
	}
	deadline := time.Now().Add(2 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the check's child (pid %d) survived the timeout", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDefaultID(t *testing.T) {
	for _, c := range []struct {
		service, addr string
		port          int
		want          string
	}{
		{"web", "10.0.0.1", 8080, "web-10.0.0.1-8080"},
		{"web", "::1", 80, "web-1-80"},
		{"web", "fe80::1%eth0", 80, "web-fe80-1-eth0-80"},
		{"api", "host.example.com", 443, "api-host.example.com-443"},
		{"my svc", "h/x", 1, "my-svc-h-x-1"},
	} {
		if got := DefaultID(c.service, c.addr, c.port); got != c.want {
			t.Errorf("DefaultID(%q, %q, %d) = %q, want %q", c.service, c.addr, c.port, got, c.want)
		}
	}
}
