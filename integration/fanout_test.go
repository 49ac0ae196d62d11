package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/heraldhq/herald/integration/harness"
)

// TestFanoutVhosts runs examples/nginx-vhosts (each = "services tag=http": one nginx
// virtual host per service) against a real registry and the real nginx: services
// registered with `herald register` get their file and are served, a service that goes
// loses its file, a file herald never made stays, one reload covers a burst of files,
// a restart keeps the record of what herald made, and (etcd) a registry that answers
// empty for a moment deletes nothing. ZooKeeper runs the same story.
func TestFanoutVhosts(t *testing.T) {
	for _, kind := range []string{"etcd", "zookeeper", "consul"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			runFanout(t, kind)
		})
	}
}

// fanoutRegistry is a registry with what the story needs of it beyond herald.
type fanoutRegistry struct {
	url  string
	put  func(key, value string)
	etcd *clientv3.Client // nil for Consul
}

func startFanoutRegistry(t *testing.T, kind string) fanoutRegistry {
	if kind == "zookeeper" {
		reg := startLBRegistry(t, kind)
		return fanoutRegistry{url: reg.url, put: func(k, v string) { reg.put(t, k, v) }}
	}
	if kind == "etcd" {
		e := harness.StartEtcd(t)
		cli := e.Client(t)
		return fanoutRegistry{url: "etcd://" + strings.TrimPrefix(e.Endpoints[0], "http://"), etcd: cli, put: func(k, v string) {
			if _, err := cli.Put(context.Background(), k, v); err != nil {
				t.Error(err)
			}
		}}
	}
	c := harness.StartConsul(t)
	cli := c.Client(t)
	return fanoutRegistry{url: "consul://" + c.Addr, put: func(k, v string) {
		if _, err := cli.KV().Put(&api.KVPair{Key: strings.TrimPrefix(k, "/"), Value: []byte(v)}, nil); err != nil {
			t.Error(err)
		}
	}}
}

// fanoutConf copies examples/nginx-vhosts into dir, both reloads pointed at the
// harness's nginx through pidFile: one command, so one run per burst.
func fanoutConf(t *testing.T, dir, pidFile string) {
	reload := "p=$(cat " + pidFile + " 2>/dev/null) && [ -n \"$p\" ] && kill -HUP $p || true"
	files := map[string]string{}
	for _, f := range []string{"conf.d/nginx.toml", "conf.d/sites.toml", "templates/nginx.conf.tmpl", "templates/site.conf.tmpl"} {
		b, err := os.ReadFile(filepath.Join("../examples/nginx-vhosts", f))
		if err != nil {
			t.Fatal(err)
		}
		files[f] = regexp.MustCompile(`(?m)^reload_cmd = .*$`).ReplaceAllLiteralString(string(b), fmt.Sprintf("reload_cmd = %q", reload))
	}
	writeTree(t, dir, files)
}

// vhostGet asks nginx for a site by its Host header; the body names the instance.
func vhostGet(port int, host string) (int, string) {
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/", port), nil)
	req.Host = host
	c := http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitVhost(t *testing.T, port int, host string, code int, body string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, b := vhostGet(port, host)
		if c == code && strings.Contains(b, body) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %d %q, want %d %q", host, c, b, code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitExists(t *testing.T, path string, exists bool, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		_, err := os.Stat(path)
		if (err == nil) == exists {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s: exists=%v wanted after %v (%v)", path, exists, within, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func runFanout(t *testing.T, kind string) {
	reg := startFanoutRegistry(t, kind)
	port := harness.FreePort(t)
	reg.put("/vhosts/listen", fmt.Sprintf("127.0.0.1:%d", port))
	reg.put("/vhosts/domain", "example.test")
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "nginx.pid.txt")
	fanoutConf(t, dir, pidFile)
	sites := filepath.Join(dir, "out/sites")
	os.MkdirAll(sites, 0o755)
	foreign := filepath.Join(sites, "static.conf")
	os.WriteFile(foreign, []byte("# a site herald does not manage\n"), 0o644)

	register := func(service, tag string, b *backendServer) *heraldProc {
		args := []string{"register", "--backend", reg.url, "--service", service, "--id", b.name,
			"--address", "127.0.0.1", "--port", fmt.Sprint(b.port), "--ttl", "3s"}
		if tag != "" {
			args = append(args, "--tag", tag)
		}
		return startHerald(t, nil, args...)
	}
	listed := func(service string, want bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, out := runHerald(t, false, "services", service, "--backend", reg.url)
			if regexp.MustCompile(`(?m)^`+service+`-1\s`).MatchString(out) == want { // the instance's row
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("herald services %s: want listed=%v:\n%s", service, want, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	web, api, db := startBackend(t, "web-1"), startBackend(t, "api-1"), startBackend(t, "db-1")
	regWeb := register("web", "http", web)
	regAPI := register("api", "http", api)
	register("db", "tcp", db) // not tagged http: no site
	for _, s := range []string{"web", "api", "db"} {
		listed(s, true)
	}

	watchArgs := []string{"watch", "--confdir", dir, "--backend", reg.url, "--wait", "200ms:2s", "--drop-hold", "30s"}
	w := startHerald(t, nil, watchArgs...)
	waitExists(t, filepath.Join(sites, "web.conf"), true, 30*time.Second)
	waitExists(t, filepath.Join(sites, "api.conf"), true, 30*time.Second)
	waitExists(t, filepath.Join(dir, "out/nginx.conf"), true, 30*time.Second)
	// The start is one burst: nginx.conf and both sites written, then one reload.
	waitFor(t, w, "the first reload", func() bool { return strings.Contains(w.Output(), `msg=reloaded`) })
	first := w.Output()
	before, _, _ := strings.Cut(first, "msg=reloaded")
	for _, f := range []string{"out/nginx.conf", "out/sites/web.conf", "out/sites/api.conf"} {
		if !strings.Contains(before, filepath.Join(dir, f)+" changed=true") {
			t.Errorf("%s was not written before the burst's one reload:\n%s", f, tail(first, 20))
		}
	}
	if _, err := os.Stat(filepath.Join(sites, "db.conf")); !os.IsNotExist(err) {
		t.Errorf("db (not tagged http) has a site: %v", err)
	}

	n := harness.StartNginx(t, filepath.Join(dir, "out/nginx.conf"))
	os.WriteFile(pidFile, []byte(fmt.Sprint(n.Proc.PID())), 0o644)
	waitVhost(t, port, "web.example.test", 200, "web-1")
	waitVhost(t, port, "api.example.test", 200, "api-1")
	waitVhost(t, port, "db.example.test", 404, "unknown site")

	// A new service: its file within moments, then nginx serves it.
	cache := startBackend(t, "cache-1")
	registered := time.Now()
	register("cache", "http", cache)
	waitExists(t, filepath.Join(sites, "cache.conf"), true, 30*time.Second)
	t.Logf("%s: registration -> cache.conf %v", kind, time.Since(registered).Round(time.Millisecond))
	waitVhost(t, port, "cache.example.test", 200, "cache-1")

	// A service gone: its file goes, nginx stops serving it. On etcd its registration is
	// killed (the lease expires); Consul keeps a killed one's service, critical, until
	// it deregisters it (a minute at least), so there it stops and deregisters.
	killed := time.Now()
	sig := syscall.SIGKILL
	if kind == "consul" {
		sig = syscall.SIGTERM
	}
	regAPI.cmd.Process.Signal(sig)
	waitExists(t, filepath.Join(sites, "api.conf"), false, 30*time.Second)
	t.Logf("%s: signal %q to api's registration -> api.conf removed %v", kind, sig, time.Since(killed).Round(time.Millisecond))
	waitVhost(t, port, "api.example.test", 404, "unknown site")
	if b, err := os.ReadFile(foreign); err != nil || string(b) != "# a site herald does not manage\n" {
		t.Fatalf("the foreign file: %q %v", b, err)
	}

	if kind == "etcd" {
		transientEmpty(t, reg.etcd, w, sites)
	}

	// A restart keeps the record: web goes while herald is down, and its file goes at
	// the next start; cache's stays, and so does the foreign file.
	if code := w.stop(t, syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Fatalf("herald watch exited %d:\n%s", code, tail(w.Output(), 20))
	}
	regWeb.cmd.Process.Signal(sig)
	listed("web", false)
	w = startHerald(t, nil, watchArgs...)
	took := waitExists(t, filepath.Join(sites, "web.conf"), false, 30*time.Second)
	t.Logf("%s: restart -> web.conf removed %v", kind, took.Round(time.Millisecond))
	waitVhost(t, port, "web.example.test", 404, "unknown site")
	waitVhost(t, port, "cache.example.test", 200, "cache-1")
	ents, _ := os.ReadDir(sites)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != ".herald-sites.toml.json cache.conf static.conf" {
		t.Errorf("out/sites/ after the restart: %q", names)
	}
}

// transientEmpty deletes every instance from etcd in one transaction and puts them back:
// herald holds the empty list (drop_hold) and no file is removed.
func transientEmpty(t *testing.T, cli *clientv3.Client, w *heraldProc, sites string) {
	ctx := context.Background()
	resp, err := cli.Get(ctx, "/services/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("instances: %v (%d)", err, len(resp.Kvs))
	}
	before, _ := os.ReadDir(sites)
	from := len(w.Output())
	since := func(what string) bool { // a line of the fan-out resource's own, not a file's
		for _, l := range strings.Split(w.Output()[from:], "\n") {
			if strings.Contains(l, what) && strings.Contains(l, "resource=sites.toml ") {
				return true
			}
		}
		return false
	}
	if _, err := cli.Delete(ctx, "/services/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, w, "the empty list held", func() bool { return since("render held back") })
	for _, kv := range resp.Kvs {
		if _, err := cli.Put(ctx, string(kv.Key), string(kv.Value), clientv3.WithLease(clientv3.LeaseID(kv.Lease))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, w, "the list back", func() bool { return since("no longer held") })
	after, _ := os.ReadDir(sites)
	if len(after) != len(before) {
		t.Fatalf("files while the registry answered empty: %d before, %d after", len(before), len(after))
	}
}
