//go:build linux

package harness

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestFreePort(t *testing.T) {
	t.Parallel()
	seen := map[int]bool{}
	unbindable := 0
	for range 50 {
		p := FreePort(t)
		if p < portMin || p > portMax {
			t.Fatalf("port %d outside %d-%d", p, portMin, portMax)
		}
		if p >= 32768 && p <= 60999 {
			t.Fatalf("port %d in the ephemeral range", p)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			// FreePort checked the bind a moment ago; a process that binds ports without
			// FreePort (a server another test started) can take one in between, rarely.
			// A broken check would fail most of them.
			t.Logf("port %d not bindable right after FreePort: %v", p, err)
			unbindable++
			continue
		}
		l.Close()
	}
	if unbindable > 2 {
		t.Fatalf("%d of 50 ports from FreePort were not bindable right away", unbindable)
	}
	// Another process cannot take a port this one holds.
	for p := range seen {
		if _, ok := lockPort(filepath.Join(os.TempDir(), "herald-test-ports"), p); ok {
			// flock is per open file description: a second open in this process
			// conflicts too, exactly as another process would.
			t.Fatalf("port %d lock not held", p)
		}
		break
	}
}

func TestListenAddrs(t *testing.T) {
	t.Parallel()
	cfg := `
frontend fe
  bind 127.0.0.1:2001
  bind :2002 ssl crt x.pem  # comment bind 1.2.3.4:9
  bind ipv4@127.0.0.1:2003,127.0.0.1:2004
  bind unix@/tmp/x.sock
  bind /tmp/y.sock
  bind 127.0.0.1:3000-3010
server {
  listen 8080;
  listen 127.0.0.1:8081 default_server;
  listen [::1]:8082;
  listen unix:/tmp/n.sock;
  listen *:8083;
  server { listen 127.0.0.1:8084; location / { proxy_pass http://x; } }
}`
	if got, want := listenAddrs(cfg, "bind"), []string{"127.0.0.1:2001", "127.0.0.1:2002", "127.0.0.1:2003", "127.0.0.1:2004"}; !slices.Equal(got, want) {
		t.Errorf("bind: %v, want %v", got, want)
	}
	if got, want := listenAddrs(cfg, "listen"), []string{"127.0.0.1:8080", "127.0.0.1:8081", "[::1]:8082", "127.0.0.1:8083", "127.0.0.1:8084"}; !slices.Equal(got, want) {
		t.Errorf("listen: %v, want %v", got, want)
	}
}

func TestParseShowProc(t *testing.T) {
	t.Parallel()
	out := `#<PID>          <type>          <reloads>       <uptime>        <version>
11586           master          2 [failed: 1]   0d00h00m09s     2.6.12-1+deb12u4
# workers
11700           worker          0               0d00h00m01s     2.6.12-1+deb12u4
# old workers
11590           worker          1               0d00h00m09s     2.6.12-1+deb12u4
# programs

`
	p := parseShowProc(out)
	if p.failed != 1 || !slices.Equal(p.workers, []int{11700}) || !slices.Equal(p.old, []int{11590}) {
		t.Fatalf("parseShowProc = %+v", p)
	}
}

func TestGenCerts(t *testing.T) {
	t.Parallel()
	c := GenCerts(t)
	srv, err := tls.LoadX509KeyPair(c.ServerCert, c.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(srv.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(c.CAFile)
	pool.AppendCertsFromPEM(caPEM)
	for _, name := range []string{"127.0.0.1", "localhost", "::1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool}); err != nil {
			t.Errorf("server cert for %s: %v", name, err)
		}
	}
	// A TLS server requiring client certs accepts ClientTLS and refuses ClientTLSNoCert.
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	s.TLS = &tls.Config{Certificates: []tls.Certificate{srv}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	s.StartTLS()
	defer s.Close()
	get := func(cfg *tls.Config) error {
		cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
		resp, err := cl.Get(s.URL)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	if err := get(c.ClientTLS(t)); err != nil {
		t.Errorf("with client cert: %v", err)
	}
	if err := get(c.ClientTLSNoCert(t)); err == nil {
		t.Error("without client cert: no error")
	}
}

func TestBinaryMissingSaysHowToInstall(t *testing.T) {
	t.Parallel()
	_, err := findBinary("herald-no-such-server")
	if err == nil || !strings.Contains(err.Error(), "make test-deps") {
		t.Fatalf("findBinary error = %v; want the install command", err)
	}
}

// Rejected reloads are reported at once, and the old workers keep serving.
func TestRejectedReloads(t *testing.T) {
	t.Parallel()
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "up") }))
	t.Cleanup(backend.Close) // the parallel subtests run after this function returns
	host := strings.TrimPrefix(backend.URL, "http://")
	get := func(port int) string {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}

	t.Run("haproxy", func(t *testing.T) {
		t.Parallel()
		dir, port := t.TempDir(), FreePort(t)
		cfg := filepath.Join(dir, "haproxy.cfg")
		good := fmt.Sprintf("defaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n"+
			"frontend fe\n  bind 127.0.0.1:%d\n  default_backend be\nbackend be\n  server s1 %s\n", port, host)
		if err := os.WriteFile(cfg, []byte(good), 0o644); err != nil {
			t.Fatal(err)
		}
		h := StartHAProxy(t, cfg)
		if err := os.WriteFile(cfg, []byte(good+"  no-such-directive\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		begin := time.Now()
		err := h.TryReload(t)
		if err == nil || !strings.Contains(err.Error(), "rejected") {
			t.Fatalf("TryReload onto a bad config: %v", err)
		}
		t.Logf("rejected in %v: %v", time.Since(begin).Round(time.Millisecond), err)
		if body := get(port); body != "up" {
			t.Fatalf("after a rejected reload: %q", body)
		}
	})

	t.Run("nginx", func(t *testing.T) {
		t.Parallel()
		dir, port := t.TempDir(), FreePort(t)
		cfg := filepath.Join(dir, "nginx.conf")
		good := fmt.Sprintf("events {}\nhttp {\n%s server { listen 127.0.0.1:%d; location / { proxy_pass http://%s; } }\n}\n",
			NginxHTTPDefaults(), port, host)
		if err := os.WriteFile(cfg, []byte(good), 0o644); err != nil {
			t.Fatal(err)
		}
		n := StartNginx(t, cfg)
		if err := os.WriteFile(cfg, []byte(good+"no_such_directive;\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		begin := time.Now()
		err := n.TryReload(t)
		if err == nil || !strings.Contains(err.Error(), "rejected") {
			t.Fatalf("TryReload onto a bad config: %v", err)
		}
		t.Logf("rejected in %v: %v", time.Since(begin).Round(time.Millisecond), err)
		if body := get(port); body != "up" {
			t.Fatalf("after a rejected reload: %q", body)
		}
	})
}
