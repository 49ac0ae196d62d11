package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/integration/harness"
)

// watchTree is a confdir with three resources: a reads /app/a, b reads /app/b with
// inferred keys, s lists a service.
func watchTree(t *testing.T) string {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"out/a\"\nmake_dirs = true\nkeys = [\"/app/a\"]\n",
		"conf.d/b.toml":    "[template]\nsrc = \"b.tmpl\"\ndest = \"out/b\"\nmake_dirs = true\n",
		"conf.d/s.toml":    "[template]\nsrc = \"s.tmpl\"\ndest = \"out/s\"\nmake_dirs = true\n",
		"templates/a.tmpl": `a={{getv "/app/a"}}`,
		"templates/b.tmpl": `b={{getv "/app/b" "none"}}`,
		"templates/s.tmpl": `{{range service "web"}}{{.HostPort}} {{end}}`,
	})
	return dir
}

func freeAddr(t *testing.T) string {
	return net.JoinHostPort("127.0.0.1", fmt.Sprint(harness.FreePort(t)))
}

func TestWatchEtcdEndToEnd(t *testing.T) {
	e := harness.StartEtcd(t)
	cli := e.Client(t)
	ctx := context.Background()
	put := func(k, v string) {
		t.Helper()
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	put("/app/a", "1")
	put("/services/web/w1", `{"address":"10.0.0.1","port":80}`)
	dir := watchTree(t)
	listen := freeAddr(t)
	p := startHerald(t, nil, "watch", "--confdir", dir, "--backend", "etcd://"+strings.TrimPrefix(e.Endpoints[0], "http://"),
		"--listen", listen, "--log-level", "debug")
	out := filepath.Join(dir, "out")
	waitFile(t, filepath.Join(out, "a"), "a=1", 10*time.Second)
	waitFile(t, filepath.Join(out, "b"), "b=none", 5*time.Second)
	waitFile(t, filepath.Join(out, "s"), "10.0.0.1:80 ", 5*time.Second)

	// /healthz: backend up, every resource rendered.
	code, body := httpGet(t, "http://"+listen+"/healthz")
	if code != 200 || !strings.Contains(body, `"state":"up"`) {
		t.Fatalf("healthz = %d %s", code, body)
	}
	// Profiles are served only when asked for (--pprof).
	if code, _ := httpGet(t, "http://"+listen+"/debug/pprof/"); code != 404 {
		t.Fatalf("/debug/pprof/ without --pprof = %d, want 404", code)
	}
	renders := func(r string) float64 {
		return metric(t, listen, `herald_renders_total{resource="`+r+`",result="changed"}`) +
			metric(t, listen, `herald_renders_total{resource="`+r+`",result="unchanged"}`)
	}
	before := map[string]float64{"a.toml": renders("a.toml"), "b.toml": renders("b.toml"), "s.toml": renders("s.toml")}

	// A key missing at first appears: only b re-renders.
	put("/app/b", "2")
	waitFile(t, filepath.Join(out, "b"), "b=2", 5*time.Second)
	put("/app/a", "3")
	waitFile(t, filepath.Join(out, "a"), "a=3", 5*time.Second)
	put("/services/web/w2", `{"address":"10.0.0.2","port":80}`)
	waitFile(t, filepath.Join(out, "s"), "10.0.0.1:80 10.0.0.2:80 ", 5*time.Second)
	// An unrelated key re-renders nothing.
	put("/unrelated", "x")
	// Later positive events: one more change of each resource's own data. Renders of
	// one resource never overlap and run in order, so once this one is counted, any
	// render an earlier change (a neighbour's key, the unrelated key) caused is too.
	put("/app/a", "4")
	put("/app/b", "5")
	put("/services/web/w3", `{"address":"10.0.0.3","port":80}`)
	waitFile(t, filepath.Join(out, "a"), "a=4", 5*time.Second)
	waitFile(t, filepath.Join(out, "b"), "b=5", 5*time.Second)
	waitFile(t, filepath.Join(out, "s"), "10.0.0.1:80 10.0.0.2:80 10.0.0.3:80 ", 5*time.Second)
	for _, r := range []string{"a.toml", "b.toml", "s.toml"} {
		// The counter is bumped right after the file is written: wait for the later
		// render to be counted, then nothing more may be.
		deadline := time.Now().Add(5 * time.Second)
		for renders(r)-before[r] < 2 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if got := renders(r) - before[r]; got != 2 {
			t.Errorf("%s rendered %v more times for two changes of its own data, a neighbour's and an unrelated key, want 2 (only what a change touches)", r, got)
		}
	}
	if n := metric(t, listen, "herald_cache_keys"); n != 2 { // /app/a and /app/b; services are not keys
		t.Errorf("herald_cache_keys = %v", n)
	}
	if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
}

func TestWatchEtcdDownThenUp(t *testing.T) {
	e := harness.StartEtcd(t)
	cli := e.Client(t)
	ctx := context.Background()
	cli.Put(ctx, "/app/a", "1")
	dir := watchTree(t)
	listen := freeAddr(t)
	startHerald(t, nil, "watch", "--confdir", dir, "--backend", "etcd://"+strings.TrimPrefix(e.Endpoints[0], "http://"), "--listen", listen)
	a := filepath.Join(dir, "out", "a")
	waitFile(t, a, "a=1", 10*time.Second)

	e.Members[0].Stop(t)
	// The last good file stays, and health says the backend is down.
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, body := httpGet(t, "http://"+listen+"/healthz")
		if code == 503 {
			var h struct {
				Backend struct{ State, Error string }
			}
			json.Unmarshal([]byte(body), &h)
			if h.Backend.State == "up" {
				t.Fatalf("503 but backend up: %s", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthz still %d while etcd is down: %s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if b, _ := os.ReadFile(a); string(b) != "a=1" {
		t.Fatalf("file changed while the registry was down: %q", b)
	}
	e.Members[0].Restart(t)
	cli = e.Client(t)
	if _, err := cli.Put(ctx, "/app/a", "2"); err != nil {
		t.Fatal(err)
	}
	waitFile(t, a, "a=2", 20*time.Second)
}

func TestWatchStartsWhileEtcdIsDown(t *testing.T) {
	e := harness.StartEtcd(t)
	e.Members[0].Stop(t)
	dir := watchTree(t)
	listen := freeAddr(t)
	p := startHerald(t, nil, "watch", "--confdir", dir, "--backend", "etcd://"+strings.TrimPrefix(e.Endpoints[0], "http://"), "--listen", listen)
	// The positive event: herald serves /healthz saying the backend is not up, i.e.
	// it tried etcd, failed, and kept running.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if code, body := httpGet(t, "http://"+listen+"/healthz"); code == 503 && !strings.Contains(body, `"state":"up"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no 503 from /healthz while etcd is down:\n%s", p.Output())
		}
	}
	select {
	case <-p.done:
		t.Fatalf("herald watch exited while etcd was down:\n%s", p.Output())
	default:
	}
	e.Members[0].Restart(t)
	e.Client(t).Put(context.Background(), "/app/a", "late")
	waitFile(t, filepath.Join(dir, "out", "a"), "a=late", 30*time.Second)
}

func TestRenderFailsAfterTimeoutWhenEtcdIsDown(t *testing.T) {
	dir := watchTree(t)
	port := harness.FreePort(t) // nothing listens there
	os.MkdirAll(filepath.Join(dir, "out"), 0o755)
	os.WriteFile(filepath.Join(dir, "out", "a"), []byte("last good"), 0o644)
	start := time.Now()
	p := startHerald(t, nil, "render", "--confdir", dir, "--backend", fmt.Sprintf("etcd://127.0.0.1:%d", port), "--timeout", "2s")
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatal("render did not give up")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("render took %v with --timeout 2s", d)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if out := p.Output(); !strings.Contains(out, fmt.Sprintf("127.0.0.1:%d", port)) {
		t.Errorf("error does not name the endpoint:\n%s", out)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "out", "a")); string(b) != "last good" {
		t.Fatalf("dest changed: %q", b)
	}
}

func TestWatchHotReloadAndSIGHUP(t *testing.T) {
	e := harness.StartEtcd(t)
	cli := e.Client(t)
	cli.Put(context.Background(), "/app/a", "1")
	dir := watchTree(t)
	p := startHerald(t, nil, "watch", "--confdir", dir, "--backend", "etcd://"+strings.TrimPrefix(e.Endpoints[0], "http://"))
	out := filepath.Join(dir, "out")
	waitFile(t, filepath.Join(out, "a"), "a=1", 10*time.Second)

	// New resource: picked up by fsnotify.
	writeTree(t, dir, map[string]string{"templates/c.tmpl": `c={{getv "/app/a"}}`})
	writeTree(t, dir, map[string]string{"conf.d/c.toml": "[template]\nsrc = \"c.tmpl\"\ndest = \"out/c\"\n"})
	waitFile(t, filepath.Join(out, "c"), "c=1", 10*time.Second)
	// Broken template: reported, previous version keeps running and following changes.
	writeTree(t, dir, map[string]string{"templates/a.tmpl": `A={{getv "/app/a"`})
	// The broken template reported: the hot reload has seen it.
	reported := func() bool {
		o := p.Output()
		return strings.Contains(o, "resource reload found errors") && strings.Contains(o, "a.tmpl")
	}
	for deadline := time.Now().Add(10 * time.Second); !reported(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the broken template was not reported:\n%s", tail(p.Output(), 20))
		}
	}
	cli.Put(context.Background(), "/app/a", "2")
	waitFile(t, filepath.Join(out, "a"), "a=2", 10*time.Second)
	// Fixed, then SIGHUP (also works without fsnotify).
	writeTree(t, dir, map[string]string{"templates/a.tmpl": `fixed={{getv "/app/a"}}`})
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFile(t, filepath.Join(out, "a"), "fixed=2", 10*time.Second)
	// Deleted resource stops following changes.
	os.Remove(filepath.Join(dir, "conf.d/c.toml"))
	// The removal seen (logged) before the change: c cannot render it any more.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(p.Output(), `msg="resource removed" resource=c.toml`); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("removal of c.toml not logged:\n%s", tail(p.Output(), 20))
		}
	}
	cli.Put(context.Background(), "/app/a", "3")
	waitFile(t, filepath.Join(out, "a"), "fixed=3", 10*time.Second)
	if b, _ := os.ReadFile(filepath.Join(out, "c")); string(b) != "c=2" {
		t.Errorf("deleted resource still follows changes: %q", b)
	}
}

func TestWatchSIGTERMWaitsForSlowReload(t *testing.T) {
	e := harness.StartEtcd(t)
	cli := e.Client(t)
	cli.Put(context.Background(), "/app/a", "1")
	dir := watchTree(t)
	marker, started := filepath.Join(dir, "reloaded"), filepath.Join(dir, "started")
	writeTree(t, dir, map[string]string{
		"conf.d/a.toml": "[template]\nsrc = \"a.tmpl\"\ndest = \"out/a\"\nmake_dirs = true\nkeys = [\"/app/a\"]\nreload_cmd = \"echo go >> " + started + "; sleep 1; echo done >> " + marker + "\"\n",
	})
	p := startHerald(t, nil, "watch", "--confdir", dir, "--backend", "etcd://"+strings.TrimPrefix(e.Endpoints[0], "http://"))
	waitFile(t, filepath.Join(dir, "out", "a"), "a=1", 10*time.Second)
	waitFile(t, marker, "done\n", 10*time.Second)
	cli.Put(context.Background(), "/app/a", "2")
	waitFile(t, filepath.Join(dir, "out", "a"), "a=2", 10*time.Second)
	waitFile(t, started, "go\ngo\n", 10*time.Second) // the second reload is running
	if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if b, _ := os.ReadFile(marker); string(b) != "done\ndone\n" {
		t.Fatalf("in-flight reload did not finish before exit: %q", b)
	}
}
