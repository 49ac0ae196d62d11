package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/hashicorp/consul/api"

	"github.com/heraldhq/herald/integration/harness"
)

// The load-balancer story: instances register with `herald register`, `herald watch`
// rewrites the real HAProxy / nginx config from the examples' templates and reloads it,
// and traffic keeps flowing while instances come and go.

// lbRegistry is one registry the story runs on.
type lbRegistry struct {
	url  string
	put  func(t *testing.T, key, value string)
	args []string // extra flags for herald register (liveness tuned for a short test)
}

func startLBRegistry(t *testing.T, kind string) lbRegistry {
	switch kind {
	case "etcd":
		e := harness.StartEtcd(t)
		cli := e.Client(t)
		return lbRegistry{
			url: "etcd://" + strings.TrimPrefix(e.Endpoints[0], "http://"),
			put: func(t *testing.T, k, v string) {
				if _, err := cli.Put(context.Background(), k, v); err != nil {
					t.Fatal(err)
				}
			},
			args: []string{"--ttl", "3s"},
		}
	case "zookeeper":
		z := harness.StartZooKeeper(t)
		conn, _, err := zk.Connect(z.Servers, 5*time.Second, zk.WithLogInfo(false))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(conn.Close)
		return lbRegistry{
			url: "zookeeper://" + z.Servers[0],
			put: func(t *testing.T, k, v string) {
				parts := strings.Split(strings.TrimPrefix(k, "/"), "/")
				for i := 1; i < len(parts); i++ {
					conn.Create("/"+strings.Join(parts[:i], "/"), nil, 0, zk.WorldACL(zk.PermAll))
				}
				if _, err := conn.Create(k, []byte(v), 0, zk.WorldACL(zk.PermAll)); err == zk.ErrNodeExists {
					_, err = conn.Set(k, []byte(v), -1)
					if err != nil {
						t.Fatal(err)
					}
				} else if err != nil {
					t.Fatal(err)
				}
			},
			args: []string{"--session-timeout", "4s"},
		}
	case "consul":
		c := harness.StartConsul(t)
		cli := c.Client(t)
		return lbRegistry{
			url: "consul://" + c.Addr,
			put: func(t *testing.T, k, v string) {
				if _, err := cli.KV().Put(&api.KVPair{Key: strings.TrimPrefix(k, "/"), Value: []byte(v)}, nil); err != nil {
					t.Fatal(err)
				}
			},
			args: []string{"--ttl", "3s"},
		}
	}
	t.Fatalf("unknown registry %s", kind)
	return lbRegistry{}
}

// backendServer is a tiny HTTP instance answering its own name.
type backendServer struct {
	name string
	port int
	srv  *http.Server
}

func startBackend(t *testing.T, name string) *backendServer {
	port := harness.FreePort(t)
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	b := &backendServer{name: name, port: port}
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, name)
	})}
	go b.srv.Serve(ln)
	t.Cleanup(func() { b.srv.Close() })
	return b
}

// load is a bounded client loop recording which backend answered each request.
type load struct {
	mu       sync.Mutex
	ok       map[string]int
	last     map[string]time.Time
	first    map[string]time.Time
	failures []string
	total    atomic.Int64
	stop     chan struct{}
	halted   sync.Once
	wg       sync.WaitGroup
}

func startLoad(url string, clients int, maxDuration time.Duration) *load {
	l := &load{ok: map[string]int{}, last: map[string]time.Time{}, first: map[string]time.Time{}, stop: make(chan struct{})}
	deadline := time.Now().Add(maxDuration)
	for range clients {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			// A new connection per request, so a reload that dropped a connection shows.
			c := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			for time.Now().Before(deadline) {
				select {
				case <-l.stop:
					return
				default:
				}
				resp, err := c.Get(url)
				l.total.Add(1)
				now := time.Now()
				if err != nil {
					l.fail(now, err.Error())
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					l.fail(now, fmt.Sprintf("status %d: %s", resp.StatusCode, body))
					continue
				}
				l.mu.Lock()
				b := string(body)
				l.ok[b]++
				l.last[b] = now
				if _, seen := l.first[b]; !seen {
					l.first[b] = now
				}
				l.mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	return l
}

func (l *load) fail(at time.Time, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures = append(l.failures, at.Format("15:04:05.000")+" "+msg)
}

func (l *load) seen(name string) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.first[name]
	return t, ok
}

func (l *load) halt() {
	l.halted.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// waitConfig waits until the rendered file satisfies cond.
func waitConfig(t *testing.T, path string, within time.Duration, what string, cond func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		b, _ := os.ReadFile(path)
		if cond(string(b)) {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s after %v:\n%s", path, what, within, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func registerArgs(reg lbRegistry, b *backendServer) []string {
	args := []string{"register", "--backend", reg.url, "--service", "web", "--id", b.name,
		"--address", "127.0.0.1", "--port", fmt.Sprint(b.port)}
	return append(args, reg.args...)
}

func TestLoadBalancer(t *testing.T) {
	for _, kind := range []string{"etcd", "zookeeper", "consul"} {
		for _, lb := range []string{"haproxy", "nginx"} {
			t.Run(kind+"/"+lb, func(t *testing.T) { runLBStory(t, kind, lb) })
		}
	}
}

func runLBStory(t *testing.T, kind, lb string) {
	reg := startLBRegistry(t, kind)
	lbPort := harness.FreePort(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")

	// The examples' templates, unchanged; the resource points its reload at the
	// harness's process.
	tmplSrc := map[string]string{"haproxy": "../examples/haproxy/templates/haproxy.cfg.tmpl", "nginx": "../examples/nginx/templates/nginx.conf.tmpl"}[lb]
	tmpl, err := os.ReadFile(tmplSrc)
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Base(tmplSrc)
	dest := filepath.Join(dir, "out", strings.TrimSuffix(name, ".tmpl"))
	pidFile := filepath.Join(dir, "lb.pid") // written below once the harness knows it
	var check, reload string
	switch lb {
	case "haproxy":
		check = "haproxy -c -q -f {{.src}}"
		reload = "p=$(cat " + pidFile + " 2>/dev/null) && [ -n \"$p\" ] && kill -USR2 $p || true"
		reg.put(t, "/haproxy/bind", fmt.Sprintf("127.0.0.1:%d", lbPort))
		reg.put(t, "/haproxy/default_backend", "web")
		reg.put(t, "/haproxy/stats_socket", sock)
	case "nginx":
		check = "nginx -t -q -p $(dirname {{.src}})/ -c {{.src}}"
		reload = "p=$(cat " + pidFile + " 2>/dev/null) && [ -n \"$p\" ] && kill -HUP $p || true"
		reg.put(t, "/nginx/listen", fmt.Sprintf("127.0.0.1:%d", lbPort))
		reg.put(t, "/nginx/upstreams/0", "web")
	}
	writeTree(t, dir, map[string]string{
		"conf.d/lb.toml": fmt.Sprintf("[template]\nsrc = %q\ndest = %q\nkeys = [\"/%s\"]\nmake_dirs = true\ncheck_cmd = %q\nreload_cmd = %q\n",
			name, dest, lb, check, reload),
		"templates/" + name: string(tmpl),
	})

	backends := []*backendServer{startBackend(t, "b1"), startBackend(t, "b2"), startBackend(t, "b3")}
	regs := map[string]*heraldProc{}
	for _, b := range backends {
		regs[b.name] = startHerald(t, nil, registerArgs(reg, b)...)
	}
	listen := freeAddr(t)
	w := startHerald(t, nil, "watch", "--confdir", dir, "--backend", reg.url, "--listen", listen, "--wait", "200ms:2s")
	waitConfig(t, dest, 30*time.Second, "3 instances", func(s string) bool {
		return strings.Count(s, "127.0.0.1:") >= 4 // the listen address and three servers
	})

	// Start the real load balancer on what herald rendered.
	switch lb {
	case "haproxy":
		h := harness.StartHAProxy(t, dest)
		os.WriteFile(pidFile, []byte(fmt.Sprint(h.Proc.PID())), 0o644)
	case "nginx":
		n := harness.StartNginx(t, dest)
		os.WriteFile(pidFile, []byte(fmt.Sprint(n.Proc.PID())), 0o644)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/", lbPort)
	if lb == "nginx" {
		url += "web/"
	}
	l := startLoad(url, 50, 60*time.Second)
	defer l.halt()

	deadline := time.Now().Add(15 * time.Second)
	for _, b := range backends {
		for {
			if _, ok := l.seen(b.name); ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never served through %s", b.name, lb)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// kill -9 b2's register process: it vanishes from the config within the TTL and
	// the load balancer stops sending to it.
	killed := time.Now()
	regs["b2"].cmd.Process.Signal(syscall.SIGKILL)
	port2 := fmt.Sprintf(":%d", backends[1].port)
	waitConfig(t, dest, 20*time.Second, "b2 removed", func(s string) bool { return !strings.Contains(s, port2) })
	gone := time.Since(killed)
	time.Sleep(1500 * time.Millisecond) // old workers finish their requests
	l.mu.Lock()
	lastB2, okB1, okB3 := l.last["b2"], l.ok["b1"], l.ok["b3"]
	l.mu.Unlock()
	// The later positive event: b1 and b3 each serve 500 more requests, which the
	// clients spread over every server the load balancer still has.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		l.mu.Lock()
		n1, n3 := l.ok["b1"]-okB1, l.ok["b3"]-okB3
		l.mu.Unlock()
		if n1 >= 500 && n3 >= 500 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: b1 and b3 served only %d and %d requests in 20s after b2 left", lb, n1, n3)
		}
	}
	l.mu.Lock()
	if l.last["b2"].After(lastB2) {
		t.Errorf("%s still sends to b2 after it left the config", lb)
	}
	l.mu.Unlock()

	// A fourth instance registers and receives traffic.
	b4 := startBackend(t, "b4")
	added := time.Now()
	startHerald(t, nil, registerArgs(reg, b4)...)
	deadline = time.Now().Add(20 * time.Second)
	var firstB4 time.Time
	for {
		if at, ok := l.seen("b4"); ok {
			firstB4 = at
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b4 never received traffic:\n%s", tail(w.Output(), 20))
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	l.halt()

	reloads := metric(t, listen, `herald_reloads_total{result="ok"}`)
	renders := metric(t, listen, `herald_renders_total{resource="lb.toml",result="changed"}`)
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("%s/%s: %d requests, %d failed; instance gone from config %v after kill -9; new instance served %v after register; %v reloads for %v changed renders; per backend %v",
		kind, lb, l.total.Load(), len(l.failures), gone.Round(time.Millisecond), firstB4.Sub(added).Round(time.Millisecond), reloads, renders, l.ok)
	if len(l.failures) > 0 {
		n := min(len(l.failures), 10)
		t.Errorf("%d failed requests during reloads, e.g.:\n%s", len(l.failures), strings.Join(l.failures[:n], "\n"))
	}
	if reloads > renders {
		t.Errorf("%v reloads for %v changed renders: a reload storm", reloads, renders)
	}
}
