package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/heraldhq/herald/integration/harness"
)

var (
	curatorOnce sync.Once
	curatorCP   string
	curatorErr  error
)

// registrantClient is one client library and how herald is pointed at what it writes.
type registrantClient struct {
	name     string
	registry string   // etcd, zookeeper, consul
	service  string   // the name it registers
	query    string   // the template's service spec
	flags    []string // herald flags for its layout
	// start runs one registrant of the instance on port and returns its command line.
	argv func(t *testing.T, srv regServer, port int) []string
}

// registrantAddr is a registry URL's host:port, as the client libraries take it.
func registrantAddr(srv regServer) string {
	_, hp, _ := strings.Cut(srv.url, "://")
	return hp
}

func registrantClients(t *testing.T) []registrantClient {
	const py = "/usr/bin/python3" // Debian's python3-* packages are for this one
	script := func(name string) string {
		p, err := filepath.Abs(filepath.Join("testdata", "registrants", name))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	return []registrantClient{
		{
			name: "kazoo", registry: "zookeeper", service: "web", query: "web",
			argv: func(t *testing.T, srv regServer, port int) []string {
				return []string{py, script("registrant.py"), "kazoo", registrantAddr(srv), "web", "127.0.0.1", fmt.Sprint(port)}
			},
		},
		{
			name: "python-etcd3", registry: "etcd", service: "web", query: "web",
			argv: func(t *testing.T, srv regServer, port int) []string {
				return []string{py, script("registrant.py"), "etcd3", registrantAddr(srv), "web", "127.0.0.1", fmt.Sprint(port)}
			},
		},
		{
			name: "python-consul", registry: "consul", service: "web", query: "web",
			argv: func(t *testing.T, srv regServer, port int) []string {
				return []string{py, script("registrant.py"), "consul", registrantAddr(srv), "web", "127.0.0.1", fmt.Sprint(port)}
			},
		},
		{
			// node-etcd's layout with a datacenter level and {"hostname","port":"3000"}.
			name: "npm-etcd3", registry: "etcd", service: "service_a", query: "service_a@datacenter_x",
			flags: []string{"--services-layout", "/services/{name}/{dc}/{id}"},
			argv: func(t *testing.T, srv regServer, port int) []string {
				return []string{"node", script("registrant.mjs"), registrantAddr(srv), "service_a", "datacenter_x", "127.0.0.1", fmt.Sprint(port)}
			},
		},
		{
			// A dotted Java service name: the exact catalog name wins over tag.name.
			name: "curator", registry: "zookeeper", service: "com.example.Greeter", query: "com.example.Greeter",
			argv: func(t *testing.T, srv regServer, port int) []string {
				return []string{"java", "-Xmx64m", "-cp", curatorClasspath(t), "CuratorRegistrant", "register",
					registrantAddr(srv), "com.example.Greeter", "127.0.0.1", fmt.Sprint(port)}
			},
		},
	}
}

// curatorClasspath compiles the Curator registrant against Debian's jars (once per test
// binary run, into a temporary directory) and returns the class path to run it.
func curatorClasspath(t *testing.T) string {
	t.Helper()
	curatorOnce.Do(func() {
		jars := []string{"curator-x-discovery", "curator-framework", "curator-client", "zookeeper", "zookeeper-jute",
			"jackson-databind", "jackson-core", "jackson-annotations", "guava", "slf4j-api", "slf4j-nop"}
		var cp []string
		for _, j := range jars {
			p := filepath.Join("/usr/share/java", j+".jar")
			if _, err := os.Stat(p); err != nil {
				curatorErr = fmt.Errorf("%s missing: run integration/scripts/provision.sh (libcurator-discovery-java): %w", p, err)
				return
			}
			cp = append(cp, p)
		}
		dir, err := os.MkdirTemp("", "herald-curator-")
		if err != nil {
			curatorErr = err
			return
		}
		src, _ := filepath.Abs(filepath.Join("testdata", "registrants", "CuratorRegistrant.java"))
		out, err := exec.Command("javac", "-d", dir, "-cp", strings.Join(cp, ":"), src).CombinedOutput()
		if err != nil {
			curatorErr = fmt.Errorf("javac: %v: %s", err, out)
			return
		}
		curatorCP = strings.Join(append(cp, dir), ":")
	})
	if curatorErr != nil {
		t.Fatal(curatorErr)
	}
	return curatorCP
}

// registrant is one running registrant process.
type registrant struct {
	cmd  *exec.Cmd
	port int
}

// startRegistrant runs argv and waits until it printed "registered"; cleanup kills it.
func startRegistrant(t *testing.T, argv []string, port int) *registrant {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "HERALD_NPM_DIR="+npmDir())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.CreateTemp(t.TempDir(), "registrant-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", argv, err)
	}
	r := &registrant{cmd: cmd, port: port}
	t.Cleanup(func() { r.kill() })
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "registered" {
				ready <- true
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("registrant %v exited before registering:\n%s", argv, tail(string(b), 30))
		}
	case <-time.After(90 * time.Second):
		b, _ := os.ReadFile(logf.Name())
		t.Fatalf("registrant %v did not register within 90s:\n%s", argv, tail(string(b), 30))
	}
	return r
}

// kill ends the registrant the way a crash does (SIGKILL, no deregistration), by PID.
func (r *registrant) kill() {
	if r.cmd.ProcessState == nil {
		r.cmd.Process.Kill()
		r.cmd.Wait()
	}
}

func npmDir() string {
	cache := os.Getenv("HERALD_TEST_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "herald-test")
	}
	return filepath.Join(cache, "npm")
}

var serverLine = regexp.MustCompile(`(?m)^\s+server s(\d+) 127\.0\.0\.1:(\d+) check$`)

// haproxyServers returns the ports of the server lines of an HAProxy config.
func haproxyServers(cfg string) []string {
	var out []string
	for _, m := range serverLine.FindAllStringSubmatch(cfg, -1) {
		out = append(out, m[2])
	}
	return out
}

const registrantHAProxyTmpl = `global
  maxconn 100
defaults
  mode http
  timeout connect 1s
  timeout client 5s
  timeout server 5s
frontend fe
  bind 127.0.0.1:{{getv "/lb/port" "18080"}}
  default_backend be
backend be
{{- range service "%s"}}
  server s{{.Port}} {{.HostPort}} check
{{- end}}
`

// registrantConf writes a confdir whose one resource renders the query's instances as
// HAProxy servers, checked by `haproxy -c`.
func registrantConf(t *testing.T, query string) (dir, dest string) {
	dir = t.TempDir()
	writeTree(t, dir, map[string]string{
		"conf.d/haproxy.toml": "[template]\nsrc = \"haproxy.tmpl\"\ndest = \"out/haproxy.cfg\"\nmake_dirs = true\n" +
			"check_cmd = \"" + harness.Binary(t, "haproxy") + " -c -q -f {{.src}}\"\n",
		"templates/haproxy.tmpl": fmt.Sprintf(registrantHAProxyTmpl, query),
	})
	return dir, filepath.Join(dir, "out", "haproxy.cfg")
}

// waitServers waits until dest lists exactly the ports want (in any order) and returns
// how long that took.
func waitServers(t *testing.T, dest string, want []int, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	wantS := make([]string, len(want))
	for i, p := range want {
		wantS[i] = fmt.Sprint(p)
	}
	var got []string
	for time.Since(start) < within {
		b, _ := os.ReadFile(dest)
		got = haproxyServers(string(b))
		if sameSet(got, wantS) {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s lists servers on %v after %v, want %v", dest, got, within, wantS)
	return 0
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, x := range a {
		seen[x]++
	}
	for _, x := range b {
		seen[x]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}

func TestRealRegistrants(t *testing.T) {
	for _, c := range registrantClients(t) {
		t.Run(c.name, func(t *testing.T) {
			srv := startRegServer(t, c.registry)
			ports := []int{13001, 13002, 13003, 13004}
			var regs []*registrant
			for _, p := range ports[:3] {
				regs = append(regs, startRegistrant(t, c.argv(t, srv, p), p))
			}

			// herald render: the three instances, in a config HAProxy accepts.
			dir, dest := registrantConf(t, c.query)
			args := append([]string{"render", "--confdir", dir, "--backend", srv.url, "--timeout", "20s"}, c.flags...)
			var out []byte
			var err error
			deadline := time.Now().Add(30 * time.Second)
			for {
				// Consul's catalog and the ZooKeeper tree answer at once; a registrant's
				// own write is already acknowledged, so this loop is for the slow CI.
				out, err = exec.Command(heraldBinary(t), args...).CombinedOutput()
				b, _ := os.ReadFile(dest)
				if err == nil && len(haproxyServers(string(b))) == 3 || time.Now().After(deadline) {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if err != nil {
				t.Fatalf("herald render: %v\n%s", err, out)
			}
			if b, _ := os.ReadFile(dest); len(haproxyServers(string(b))) != 3 {
				list, _ := exec.Command(heraldBinary(t), append([]string{"services", c.service, "any", "--backend", srv.url}, c.flags...)...).CombinedOutput()
				t.Fatalf("herald render wrote:\n%s\nherald services %s any:\n%s", b, c.service, list)
			}
			if out, err := exec.Command(harness.Binary(t, "haproxy"), "-c", "-f", dest).CombinedOutput(); err != nil {
				t.Fatalf("haproxy -c: %v\n%s", err, out)
			}

			// herald watch: a fourth instance appears, a killed registrant expires.
			w := startHerald(t, nil, append([]string{"watch", "--confdir", dir, "--backend", srv.url}, c.flags...)...)
			_ = w
			regStart := time.Now()
			regs = append(regs, startRegistrant(t, c.argv(t, srv, ports[3]), ports[3]))
			registered := time.Since(regStart)
			took := waitServers(t, dest, ports, 60*time.Second)
			t.Logf("FIGURE %s: 4th instance in the file %v after its registrant reported it registered (start to registered: %v)",
				c.name, took.Round(time.Millisecond), registered.Round(time.Millisecond))

			regs[1].kill()
			took = waitServers(t, dest, []int{ports[0], ports[2], ports[3]}, 60*time.Second)
			t.Logf("FIGURE %s: killed registrant gone from the file %v after SIGKILL", c.name, took.Round(time.Millisecond))
		})
	}
}

// Every "not found" path exits non-zero naming the service: render and services, on a
// registry that has other services.
func TestRegistrantNotFound(t *testing.T) {
	e := harness.StartEtcd(t)
	srv := regServer{"etcd", "etcd://" + strings.TrimPrefix(e.Endpoints[0], "http://"), e.Members[0]}
	cli := e.Client(t)
	if _, err := cli.Put(context.Background(), "/services/web/i1", `{"address":"127.0.0.1","port":"80"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(context.Background(), "/services/web/bad", `{"address":"","port":80}`); err != nil {
		t.Fatal(err)
	}
	dir, dest := registrantConf(t, "wbe")
	out, err := exec.Command(heraldBinary(t), "render", "--confdir", dir, "--backend", srv.url).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "wbe") || !strings.Contains(string(out), "it has: web") {
		t.Errorf("render of an absent service: %v\n%s\nwant non-zero naming wbe and listing web", err, out)
	}
	if _, err := os.Stat(dest); err == nil {
		t.Errorf("dest written for an absent service")
	}
	cmd := exec.Command(heraldBinary(t), "services", "wbe", "--backend", srv.url)
	out, err = cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "wbe not in") || !strings.Contains(string(out), "it has: web") {
		t.Errorf("services wbe: exit %d\n%s\nwant 1 naming wbe and listing web", cmd.ProcessState.ExitCode(), out)
	}
	// web is there, with one malformed instance skipped: listed, and exit 1.
	cmd = exec.Command(heraldBinary(t), "services", "web", "--backend", srv.url)
	out, _ = cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "127.0.0.1") || !strings.Contains(string(out), "/services/web/bad") {
		t.Errorf("services web with a malformed instance: exit %d\n%s\nwant 1, the good instance listed and the bad key named", cmd.ProcessState.ExitCode(), out)
	}
	// A datacenter the layout has no level for is an error, not an empty list.
	dir, _ = registrantConf(t, "web@dc1")
	out, err = exec.Command(heraldBinary(t), "render", "--confdir", dir, "--backend", srv.url).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "web@dc1") || !strings.Contains(string(out), "no {dc} level") {
		t.Errorf("render web@dc1 without a {dc} level: %v\n%s", err, out)
	}
}

// The empty-drop guard against a real etcd and a real `herald watch`: a registry answer
// that empties the list for a moment is held back (dest unchanged, counted in /metrics,
// shown on /healthz); a real scale-down is written once it has lasted the hold time.
func TestEmptyDropGuard(t *testing.T) {
	e := harness.StartEtcd(t)
	url := "etcd://" + strings.TrimPrefix(e.Endpoints[0], "http://")
	cli := e.Client(t)
	ctx := context.Background()
	put := func(port int) {
		if _, err := cli.Put(ctx, fmt.Sprintf("/services/web/i%d", port), fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []int{13001, 13002, 13003} {
		put(p)
	}
	dir, dest := registrantConf(t, "web")
	listen := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	const hold = 3 * time.Second
	startHerald(t, nil, "watch", "--confdir", dir, "--backend", url, "--listen", listen, "--drop-hold", hold.String())
	waitServers(t, dest, []int{13001, 13002, 13003}, 30*time.Second)
	heldMetric := `herald_renders_held_total{resource="haproxy.toml"}`

	// Transient: everything gone, then back within the hold.
	if _, err := cli.Delete(ctx, "/services/web/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	emptied := time.Now()
	deadline := time.Now().Add(20 * time.Second)
	for metric(t, listen, heldMetric) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the empty list was not held back")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, body := httpGet(t, "http://"+listen+"/healthz"); !strings.Contains(body, "fell from 3 to 0") {
		t.Errorf("/healthz while held does not say why: %s", body)
	}
	if b, _ := os.ReadFile(dest); !sameSet(haproxyServers(string(b)), []string{"13001", "13002", "13003"}) {
		t.Fatalf("dest changed while held:\n%s", b)
	}
	heldAfter := time.Since(emptied)
	for _, p := range []int{13001, 13002, 13003} {
		put(p)
	}
	put(13004) // a later change that must be written: proof the list came back unheld
	waitServers(t, dest, []int{13001, 13002, 13003, 13004}, 20*time.Second)
	transient := time.Since(emptied)
	if n := metric(t, listen, heldMetric); n != 1 {
		t.Errorf("held %v times, want 1", n)
	}

	// Real scale-down: 4 to 1 (more than half at once, in one transaction) stays;
	// written after the hold.
	start := time.Now()
	var dels []clientv3.Op
	for _, p := range []int{13002, 13003, 13004} {
		dels = append(dels, clientv3.OpDelete(fmt.Sprintf("/services/web/i%d", p)))
	}
	if _, err := cli.Txn(ctx).Then(dels...).Commit(); err != nil {
		t.Fatal(err)
	}
	took := waitServers(t, dest, []int{13001}, hold+20*time.Second)
	if took < hold {
		t.Errorf("scale-down written after %v, before the hold of %v", took, hold)
	}
	if n := metric(t, listen, heldMetric); n != 2 {
		t.Errorf("held %v times, want 2", n)
	}
	t.Logf("FIGURE empty-drop guard (etcd, --drop-hold %v): an empty answer held %v after the delete, dest untouched through the %v until the list came back; "+
		"a real scale-down 4 -> 1 written %v after the deletes", hold, heldAfter.Round(time.Millisecond), transient.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// etcd v2 writers are invisible to herald (v3 only): an empty prefix says so once, with
// the hint, and is not an error.
func TestEtcdEmptyPrefixV2Hint(t *testing.T) {
	e := harness.StartEtcd(t)
	url := "etcd://" + strings.TrimPrefix(e.Endpoints[0], "http://")
	cmd := exec.Command(heraldBinary(t), "get", "/services", "--backend", url)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "v2 API") || !strings.Contains(string(out), "prefix=/services") {
		t.Errorf("herald get of an empty prefix: %v\n%s\nwant exit 0 and the v2 hint naming the prefix", err, out)
	}
}

// `herald register --format` read back by other tools' readers: kazoo with zc.zk's
// host, port = name.split(':') rule, Curator's ServiceDiscovery, etcdctl, and Consul's
// health API.
func TestRegisterFormatsReadByOthers(t *testing.T) {
	waitOutput := func(t *testing.T, what string, want string, run func() (string, error)) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			out, err := run()
			if err == nil && strings.Contains(out, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v\n%s\nwant it to contain %q", what, err, out, want)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	t.Run("zookeeper-hostport-kazoo", func(t *testing.T) {
		srv := startRegServer(t, "zookeeper")
		regRegister(t, srv, "--service", "web", "--address", "127.0.0.1", "--port", "8081", "--format", "hostport")
		script := `import sys
from kazoo.client import KazooClient
zk = KazooClient(hosts=sys.argv[1]); zk.start(timeout=15)
for name in zk.get_children("/services/web"):
    host, port = name.split(":")  # zc.zk's rule
    print("%s %d" % (host, int(port)))
zk.stop()`
		waitOutput(t, "kazoo reads the node name", "127.0.0.1 8081", func() (string, error) {
			out, err := exec.Command("/usr/bin/python3", "-c", script, registrantAddr(srv)).CombinedOutput()
			return string(out), err
		})
	})
	t.Run("zookeeper-curator", func(t *testing.T) {
		srv := startRegServer(t, "zookeeper")
		regRegister(t, srv, "--service", "com.example.Greeter", "--address", "127.0.0.1", "--port", "8082", "--format", "curator")
		cp := curatorClasspath(t)
		waitOutput(t, "Curator ServiceDiscovery reads the instance", "127.0.0.1:8082", func() (string, error) {
			out, err := exec.Command("java", "-Xmx64m", "-cp", cp, "CuratorRegistrant", "list", registrantAddr(srv), "com.example.Greeter").CombinedOutput()
			return string(out), err
		})
	})
	t.Run("etcd-hostport-etcdctl", func(t *testing.T) {
		srv := startRegServer(t, "etcd")
		regRegister(t, srv, "--service", "web", "--address", "127.0.0.1", "--port", "8083", "--format", "hostport")
		waitOutput(t, "etcdctl reads ip:port", "\n127.0.0.1:8083", func() (string, error) {
			cmd := exec.Command(harness.Binary(t, "etcdctl"), "--endpoints", registrantAddr(srv), "get", "--prefix", "/services/web/")
			cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
			out, err := cmd.CombinedOutput()
			return string(out), err
		})
	})
	t.Run("consul-health-api", func(t *testing.T) {
		srv := startRegServer(t, "consul")
		regRegister(t, srv, "--service", "web", "--address", "127.0.0.1", "--port", "8084")
		waitOutput(t, "Consul's health API lists the passing instance", `"Port":8084`, func() (string, error) {
			code, body := httpGet(t, "http://"+registrantAddr(srv)+"/v1/health/service/web?passing=true")
			if code != 200 {
				return body, fmt.Errorf("status %d", code)
			}
			return strings.ReplaceAll(body, " ", ""), nil
		})
	})
}
