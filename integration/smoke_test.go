package integration

// Smoke tests of the harness itself: each real server starts, serves the client library
// herald uses, survives what the backend tests will do to it, and is cleaned up.
// Helpers here are prefixed with "smoke" so they never collide with the other test
// files of this package.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	consulapi "github.com/hashicorp/consul/api"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/heraldhq/herald/integration/harness"
)

func smokeCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestSmokeEtcd(t *testing.T) {
	t.Parallel()
	e := harness.StartEtcd(t)
	c := e.Client(t)
	ctx := smokeCtx(t)
	if _, err := c.Put(ctx, "/smoke/key", "value"); err != nil {
		t.Fatalf("put: %v", err)
	}
	resp, err := c.Get(ctx, "/smoke/key")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "value" {
		t.Fatalf("get /smoke/key = %v, want value", resp.Kvs)
	}

	// A paused server holds its port but answers nothing; resumed, it serves again.
	e.Members[0].Pause(t)
	pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = c.Get(pctx, "/smoke/key")
	cancel()
	if err == nil {
		t.Fatal("get from a paused etcd succeeded")
	}
	e.Members[0].Resume(t)
	if _, err := c.Get(ctx, "/smoke/key"); err != nil {
		t.Fatalf("get after resume: %v", err)
	}

	// A restart keeps the data dir: the key survives.
	e.Members[0].Restart(t)
	resp, err = c.Get(ctx, "/smoke/key")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get after restart: %v %v", resp, err)
	}
}

func TestSmokeEtcdClusterSurvivesMemberKill(t *testing.T) {
	t.Parallel()
	e := harness.StartEtcdCluster(t, 3)
	c := e.Client(t)
	ctx := smokeCtx(t)
	if _, err := c.Put(ctx, "/smoke/a", "1"); err != nil {
		t.Fatalf("put: %v", err)
	}
	leader := e.Leader(t)
	e.Members[leader].Kill(t)
	t.Logf("killed leader m%d (pid gone); remaining members must elect a new one", leader)

	var survivors []string
	for i, ep := range e.Endpoints {
		if i != leader {
			survivors = append(survivors, ep)
		}
	}
	sc, err := clientv3.New(clientv3.Config{Endpoints: survivors, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	// Writes need the new leader: retry within a bound while the election runs.
	deadline := time.Now().Add(15 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = sc.Put(pctx, "/smoke/b", "2")
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("put after killing the leader: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	newLeader := e.Leader(t)
	if newLeader == leader {
		t.Fatalf("leader is still the killed member %d", leader)
	}
	resp, err := sc.Get(ctx, "/smoke/", clientv3.WithPrefix())
	if err != nil || resp.Count != 2 {
		t.Fatalf("get after kill: %v %v", resp, err)
	}

	// The killed member comes back with its data and catches up.
	e.Members[leader].Restart(t)
	one, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoints[leader]}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	resp, err = one.Get(ctx, "/smoke/b")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("restarted member: get /smoke/b: %v %v", resp, err)
	}
}

func TestSmokeEtcdTLS(t *testing.T) {
	t.Parallel()
	certs := harness.GenCerts(t)
	e := harness.StartEtcd(t, harness.EtcdTLS(certs))
	if !strings.HasPrefix(e.Endpoints[0], "https://") {
		t.Fatalf("endpoint %s is not https", e.Endpoints[0])
	}
	ctx := smokeCtx(t)
	c := e.Client(t)
	if _, err := c.Put(ctx, "/tls", "ok"); err != nil {
		t.Fatalf("put with client cert: %v", err)
	}

	// Without a client certificate the server refuses the handshake.
	noCert, err := clientv3.New(clientv3.Config{
		Endpoints:   e.Endpoints,
		DialTimeout: 2 * time.Second,
		TLS:         certs.ClientTLSNoCert(t),
		Logger:      zap.NewNop(),
	})
	if err == nil {
		defer noCert.Close()
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = noCert.Get(pctx, "/tls")
		cancel()
	}
	if err == nil {
		t.Fatal("get without a client certificate succeeded; want a TLS failure")
	}
	// The client library only says the deadline passed; plain HTTPS shows the reason.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: certs.ClientTLSNoCert(t)}}
	_, herr := smokeGet(hc, e.Endpoints[0]+"/health")
	if herr == nil || !strings.Contains(herr.Error(), "certificate") {
		t.Fatalf("HTTPS without a client certificate: %v; want a certificate error", herr)
	}
	t.Logf("without client cert: %v; %v", err, herr)
	hc.Transport = &http.Transport{TLSClientConfig: certs.ClientTLS(t)}
	if body, err := smokeGet(hc, e.Endpoints[0]+"/health"); err != nil || !strings.Contains(body, "true") {
		t.Fatalf("HTTPS /health with a client certificate: %q %v", body, err)
	}
}

type smokeZKLogger struct{ t *testing.T }

func (l smokeZKLogger) Printf(format string, args ...any) {
	l.t.Helper()
	l.t.Logf("zk client: "+format, args...)
}

func smokeZKConnect(t *testing.T, servers []string) *zk.Conn {
	t.Helper()
	conn, _, err := zk.Connect(servers, 4*time.Second, zk.WithLogger(smokeZKLogger{t}))
	if err != nil {
		t.Fatalf("zk connect %v: %v", servers, err)
	}
	t.Cleanup(conn.Close)
	return conn
}

// smokeZKRetry retries op within a bound: after a member dies the client reconnects
// to another server, and the first calls may fail while it does.
func smokeZKRetry(t *testing.T, what string, op func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := op()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestSmokeZooKeeper(t *testing.T) {
	t.Parallel()
	z := harness.StartZooKeeper(t)
	conn := smokeZKConnect(t, z.Servers)
	if _, err := conn.Create("/smoke", []byte("value"), 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatalf("create: %v", err)
	}
	data, _, err := conn.Get("/smoke")
	if err != nil || string(data) != "value" {
		t.Fatalf("get /smoke = %q, %v; want value", data, err)
	}
	mode, err := harness.ZooKeeperMode(smokeCtx(t), z.Servers[0])
	if err != nil || mode != "standalone" {
		t.Fatalf("mode = %q, %v; want standalone", mode, err)
	}
}

func TestSmokeZooKeeperEnsembleSurvivesMemberKill(t *testing.T) {
	t.Parallel()
	z := harness.StartZooKeeperEnsemble(t, 3)
	conn := smokeZKConnect(t, z.Servers)
	if _, err := conn.Create("/a", []byte("1"), 0, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatalf("create: %v", err)
	}
	leader := z.Leader(t)
	z.Members[leader].Kill(t)
	t.Logf("killed leader %d; the other two keep a quorum", leader+1)

	smokeZKRetry(t, "create after killing the leader", func() error {
		_, err := conn.Create("/b", []byte("2"), 0, zk.WorldACL(zk.PermAll))
		if errors.Is(err, zk.ErrNodeExists) {
			return nil // a retried create that had gone through
		}
		return err
	})
	if nl := z.Leader(t); nl == leader {
		t.Fatalf("leader is still the killed member %d", leader+1)
	}
	for _, p := range []string{"/a", "/b"} {
		if _, _, err := conn.Get(p); err != nil {
			t.Fatalf("get %s after kill: %v", p, err)
		}
	}

	// The killed member rejoins as a follower and serves the data.
	z.Members[leader].Restart(t)
	one := smokeZKConnect(t, []string{z.Servers[leader]})
	smokeZKRetry(t, "get /b from the restarted member", func() error {
		_, _, err := one.Get("/b")
		return err
	})
}

func TestSmokeConsul(t *testing.T) {
	t.Parallel()
	c := harness.StartConsul(t)
	kv := c.Client(t).KV()
	if _, err := kv.Put(&consulapi.KVPair{Key: "smoke/key", Value: []byte("value")}, nil); err != nil {
		t.Fatalf("put: %v", err)
	}
	pair, _, err := kv.Get("smoke/key", nil)
	if err != nil || pair == nil || string(pair.Value) != "value" {
		t.Fatalf("get smoke/key = %v, %v; want value", pair, err)
	}
	// The agent's node is in the catalog, so health queries work at once.
	nodes, _, err := c.Client(t).Catalog().Nodes(nil)
	if err != nil || len(nodes) != 1 || nodes[0].Node != c.Node {
		t.Fatalf("catalog nodes = %v, %v", nodes, err)
	}
}

func TestSmokeConsulACL(t *testing.T) {
	t.Parallel()
	c := harness.StartConsul(t, harness.ConsulACL())
	if c.Token == "" {
		t.Fatal("no management token")
	}
	if _, err := c.Client(t).KV().Put(&consulapi.KVPair{Key: "acl/key", Value: []byte("v")}, nil); err != nil {
		t.Fatalf("put with the management token: %v", err)
	}

	cfg := c.APIConfig()
	cfg.Token = ""
	anon, err := consulapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = anon.KV().Put(&consulapi.KVPair{Key: "acl/key", Value: []byte("anon")}, nil)
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("put without a token: %v; want 403 Permission denied", err)
	}
	pair, _, err := anon.KV().Get("acl/key", nil)
	if err == nil && pair != nil {
		t.Fatalf("get without a token returned %q; want denied", pair.Value)
	}
	t.Logf("without token: %v", err)

	pair, _, err = c.Client(t).KV().Get("acl/key", nil)
	if err != nil || pair == nil || string(pair.Value) != "v" {
		t.Fatalf("get with the token = %v, %v", pair, err)
	}
}

func TestSmokeConsulTLS(t *testing.T) {
	t.Parallel()
	certs := harness.GenCerts(t)
	c := harness.StartConsul(t, harness.ConsulTLS(certs))
	if c.Scheme != "https" || c.CAFile != certs.CAFile {
		t.Fatalf("scheme %q CAFile %q", c.Scheme, c.CAFile)
	}
	if _, err := c.Client(t).KV().Put(&consulapi.KVPair{Key: "tls", Value: []byte("ok")}, nil); err != nil {
		t.Fatalf("put with a client certificate: %v", err)
	}
	cfg := c.APIConfig()
	cfg.TLSConfig.CertFile, cfg.TLSConfig.KeyFile = "", ""
	noCert, err := consulapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = noCert.KV().Get("tls", nil)
	if err == nil {
		t.Fatal("get without a client certificate succeeded; want a TLS failure")
	}
	t.Logf("without client cert: %v", err)
}

// smokeBackend is a tiny HTTP server on 127.0.0.1 that answers body.
func smokeBackend(t *testing.T, body string) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, body)
	}))
	t.Cleanup(s.Close)
	return s
}

func smokeHostPort(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

func smokeGet(c *http.Client, u string) (string, error) {
	resp, err := c.Get(u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, b)
	}
	return string(b), nil
}

// smokeHitless runs reload while a client sends requests (each on a new connection,
// so every accept during the reload counts) and fails on any error or unexpected body.
// It returns the body served after the reload.
func smokeHitless(t *testing.T, u string, reloads int, reload func(i int), ok func(body string) bool) string {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	stop := make(chan struct{})
	type result struct {
		n    int
		errs []string
	}
	done := make(chan result)
	go func() {
		var r result
		deadline := time.Now().Add(60 * time.Second) // bound, whatever reload does
		for time.Now().Before(deadline) {
			select {
			case <-stop:
				done <- r
				return
			default:
			}
			body, err := smokeGet(c, u)
			r.n++
			if err != nil {
				r.errs = append(r.errs, err.Error())
			} else if !ok(body) {
				r.errs = append(r.errs, fmt.Sprintf("unexpected body %q", body))
			}
		}
		done <- r
	}()
	time.Sleep(100 * time.Millisecond)
	for i := range reloads {
		reload(i)
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	r := <-done
	t.Logf("%d requests during %d reloads, %d failed", r.n, reloads, len(r.errs))
	if len(r.errs) > 0 {
		t.Fatalf("requests failed during reloads: %d of %d, first: %v", len(r.errs), r.n, r.errs[:min(5, len(r.errs))])
	}
	if r.n < reloads {
		t.Fatalf("only %d requests ran during %d reloads", r.n, reloads)
	}
	body, err := smokeGet(c, u)
	if err != nil {
		t.Fatalf("get after reloads: %v", err)
	}
	return body
}

func smokeWriteFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func smokeHAProxyConfig(dir string, port int, backend string) string {
	return fmt.Sprintf(`global
  maxconn 256
  # hand the listening sockets to the next worker on reload (hitless)
  stats socket %s/admin.sock mode 600 level admin expose-fd listeners

defaults
  mode http
  timeout connect 2s
  timeout client 10s
  timeout server 10s

frontend fe
  bind 127.0.0.1:%d
  default_backend be

backend be
  server s1 %s
`, dir, port, backend)
}

func TestSmokeHAProxyProxiesAndReloadsHitlessly(t *testing.T) {
	t.Parallel()
	one, two := smokeBackend(t, "one"), smokeBackend(t, "two")
	dir := t.TempDir()
	port := harness.FreePort(t)
	cfg := filepath.Join(dir, "haproxy.cfg")
	smokeWriteFile(t, cfg, smokeHAProxyConfig(dir, port, smokeHostPort(t, one.URL)))
	h := harness.StartHAProxy(t, cfg)
	u := fmt.Sprintf("http://127.0.0.1:%d/", port)
	if body, err := smokeGet(http.DefaultClient, u); err != nil || body != "one" {
		t.Fatalf("GET through haproxy = %q, %v; want one", body, err)
	}
	first := h.Workers(t)

	// Reload several times under load; the last reload switches to backend two.
	const reloads = 3
	body := smokeHitless(t, u, reloads, func(i int) {
		if i == reloads-1 {
			smokeWriteFile(t, cfg, smokeHAProxyConfig(dir, port, smokeHostPort(t, two.URL)))
		}
		h.Reload(t)
	}, func(b string) bool { return b == "one" || b == "two" })
	if body != "two" {
		t.Fatalf("after reloading onto backend two: body %q", body)
	}
	if w := h.Workers(t); len(w) == 0 || slices.Equal(w, first) {
		t.Fatalf("workers %v after reload, before %v", w, first)
	}
}

func smokeNginxConfig(port int, backend string) string {
	return fmt.Sprintf(`worker_processes 1;
events { worker_connections 256; }
http {
%s
  server {
    listen 127.0.0.1:%d;
    location / { proxy_pass http://%s; }
  }
}
`, harness.NginxHTTPDefaults(), port, backend)
}

func TestSmokeNginxProxiesAndReloadsHitlessly(t *testing.T) {
	t.Parallel()
	one, two := smokeBackend(t, "one"), smokeBackend(t, "two")
	dir := t.TempDir()
	port := harness.FreePort(t)
	cfg := filepath.Join(dir, "nginx.conf")
	smokeWriteFile(t, cfg, smokeNginxConfig(port, smokeHostPort(t, one.URL)))
	n := harness.StartNginx(t, cfg)
	u := fmt.Sprintf("http://127.0.0.1:%d/", port)
	if body, err := smokeGet(http.DefaultClient, u); err != nil || body != "one" {
		t.Fatalf("GET through nginx = %q, %v; want one", body, err)
	}
	first := n.Workers()

	const reloads = 3
	body := smokeHitless(t, u, reloads, func(i int) {
		if i == reloads-1 {
			smokeWriteFile(t, cfg, smokeNginxConfig(port, smokeHostPort(t, two.URL)))
		}
		n.Reload(t)
	}, func(b string) bool { return b == "one" || b == "two" })
	if body != "two" {
		t.Fatalf("after reloading onto backend two: body %q", body)
	}
	if w := n.Workers(); len(w) == 0 || slices.Equal(w, first) {
		t.Fatalf("workers %v after reload, before %v", w, first)
	}
}
