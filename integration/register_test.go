package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/integration/harness"
)

// `herald register` against real etcd, ZooKeeper and Consul: the register process is the
// real binary, instances are read back with `herald services` and through a template
// that a real `herald watch` renders.

var regKinds = []string{"etcd", "zookeeper", "consul"}

// regServer is one registry started for a test.
type regServer struct {
	kind string
	url  string
	proc *harness.Proc
}

func startRegServer(t *testing.T, kind string) regServer {
	t.Helper()
	switch kind {
	case "etcd":
		e := harness.StartEtcd(t)
		return regServer{kind, "etcd://" + strings.TrimPrefix(e.Endpoints[0], "http://"), e.Members[0]}
	case "zookeeper":
		z := harness.StartZooKeeper(t)
		return regServer{kind, "zookeeper://" + z.Servers[0], z.Members[0]}
	case "consul":
		c := harness.StartConsul(t)
		return regServer{kind, "consul://" + c.Addr, c.Proc}
	}
	t.Fatalf("unknown registry %q", kind)
	return regServer{}
}

// regRegister starts `herald register` on s with args after the backend.
func regRegister(t *testing.T, s regServer, args ...string) *heraldProc {
	t.Helper()
	return startHerald(t, nil, append([]string{"register", "--backend", s.url}, args...)...)
}

// regServices runs `herald services NAME any` and returns its output ("" on failure).
func regServices(t *testing.T, s regServer, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, heraldBinary(t), "services", "--backend", s.url, "--timeout", "3s", name, "any").Output()
	if err != nil {
		return ""
	}
	return string(out)
}

// regInstanceLine finds the row of one instance ID in `herald services` output.
func regInstanceLine(out, id string) string {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == id {
			return l
		}
	}
	return ""
}

// regRows counts the instances in `herald services` output (lines after the header).
func regRows(out string) int {
	n := 0
	for i, l := range strings.Split(out, "\n") {
		if i > 0 && strings.TrimSpace(l) != "" {
			n++
		}
	}
	return n
}

// regWaitServices polls `herald services` until cond holds on the output.
func regWaitServices(t *testing.T, s regServer, name string, within time.Duration, what string, cond func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		out := regServices(t, s, name)
		if cond(out) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: herald services %s: %s after %v; last output:\n%s", s.kind, name, what, within, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// regWatch starts `herald watch` rendering the passing instances of "web" into a file,
// one line per instance: ID HOST:PORT TAGS ZONE.
func regWatch(t *testing.T, s regServer) string {
	t.Helper()
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"conf.d/web.toml":    "[template]\nsrc = \"web.tmpl\"\ndest = \"out/web\"\nmake_dirs = true\n",
		"templates/web.tmpl": `{{range service "web"}}{{.ID}} {{.HostPort}} {{join .Tags ","}} {{index .Meta "zone"}}` + "\n{{end}}",
	})
	// These tests time liveness (lease, session, check) to the file; with one instance
	// the empty-drop guard would hold its removal for --drop-hold, so it is off here
	// (TestEmptyDropGuard covers it).
	startHerald(t, nil, "watch", "--confdir", dir, "--backend", s.url, "--min-instances", "0", "--max-drop", "100%")
	return filepath.Join(dir, "out", "web")
}

// regWaitFile waits until cond holds on path's content and returns when it did.
func regWaitFile(t *testing.T, path string, within time.Duration, what string, cond func(string) bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		b, err := os.ReadFile(path)
		if err == nil && cond(string(b)) {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s after %v:\n%s", path, what, within, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func regExitWithin(t *testing.T, p *heraldProc, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("herald register still running after %v:\n%s", within, tail(p.Output(), 30))
		return -1
	}
}

// An instance registered with default settings is listed by `herald services` with its
// tags and metadata, rendered by a watching herald, and removed at once (not after the
// TTL) when its herald gets SIGTERM, which exits 0.
func TestRegisterAnnounceAndDeregisterOnSIGTERM(t *testing.T) {
	for _, kind := range regKinds {
		t.Run(kind, func(t *testing.T) {
			s := startRegServer(t, kind)
			file := regWatch(t, s)
			p := regRegister(t, s, "--service", "web", "--address", "10.1.0.1", "--port", "8080",
				"--tag", "v1", "--tag", "blue", "--meta", "zone=a")
			id := "web-10.1.0.1-8080" // the default ID
			want := id + " 10.1.0.1:8080 v1,blue a\n"
			regWaitFile(t, file, 20*time.Second, "the instance rendered", func(c string) bool { return c == want })
			line := regInstanceLine(regServices(t, s, "web"), id)
			for _, f := range []string{"10.1.0.1", "8080", "passing", "v1,blue", `{"zone":"a"}`} {
				if !strings.Contains(line, f) {
					t.Fatalf("herald services web: row %q lacks %q", line, f)
				}
			}

			sent := time.Now()
			if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
				t.Fatalf("exit %d after SIGTERM:\n%s", code, p.Output())
			}
			exited := time.Since(sent)
			gone := regWaitFile(t, file, 5*time.Second, "the instance removed", func(c string) bool { return c == "" }).Sub(sent)
			// Well under the 10 s TTL: deregistered, not expired.
			if gone > 3*time.Second {
				t.Fatalf("instance left the rendered file %v after SIGTERM; want a deregistration, not an expiry", gone)
			}
			if out := regServices(t, s, "web"); regInstanceLine(out, id) != "" {
				t.Fatalf("still listed after SIGTERM:\n%s", out)
			}
			if !strings.Contains(p.Output(), "deregistered") {
				t.Fatalf("no deregistration in the log:\n%s", p.Output())
			}
			t.Logf("FIGURE %s: SIGTERM -> herald register exited %v, instance gone from the watching herald's file %v",
				kind, exited.Round(time.Millisecond), gone.Round(time.Millisecond))
		})
	}
}

// kill -9 of the register process with default settings: how long until the instance
// disappears from a watching herald's file. It must be about the TTL (10 s: etcd lease,
// ZooKeeper session, Consul TTL check), never much later.
func TestRegisterKill9FailureDetection(t *testing.T) {
	for _, kind := range regKinds {
		t.Run(kind, func(t *testing.T) {
			s := startRegServer(t, kind)
			file := regWatch(t, s)
			p := regRegister(t, s, "--service", "web", "--address", "10.1.0.2", "--port", "8080")
			regWaitFile(t, file, 20*time.Second, "the instance rendered", func(c string) bool { return strings.HasPrefix(c, "web-10.1.0.2-8080 ") })
			// Die at a random point of the keepalive cycle (renewals every TTL/3), as in
			// real life: the figure then spans its real range over runs.
			time.Sleep(2*time.Second + rand.N(3333*time.Millisecond))
			killed := time.Now()
			if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			d := regWaitFile(t, file, 30*time.Second, "the instance removed", func(c string) bool { return c == "" }).Sub(killed)
			t.Logf("FIGURE %s: kill -9 -> instance gone from the watching herald's file after %v (defaults: TTL / session timeout 10s)", kind, d.Round(time.Millisecond))
			// Renewed every TTL/3, so it expires between 2/3 TTL and TTL after the kill.
			if d < 5*time.Second || d > 13*time.Second {
				t.Fatalf("%s: gone %v after kill -9; want about the 10s TTL", kind, d)
			}
			// A restarted herald takes its stable default ID back: still one instance.
			regRegister(t, s, "--service", "web", "--address", "10.1.0.2", "--port", "8080")
			regWaitFile(t, file, 20*time.Second, "the instance back", func(c string) bool { return strings.HasPrefix(c, "web-10.1.0.2-8080 ") })
			if out := regServices(t, s, "web"); regRows(out) != 1 {
				t.Fatalf("after a restart, want exactly one instance:\n%s", out)
			}
		})
	}
}

// regHealth is a local HTTP health endpoint whose answer the test switches.
type regHealth struct {
	url   string
	code  atomic.Int32
	agent atomic.Value // User-Agent of the last check: who ran it
}

func startRegHealth(t *testing.T, code int) *regHealth {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &regHealth{url: "http://" + ln.Addr().String() + "/health"}
	h.code.Store(int32(code))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.agent.Store(r.UserAgent())
		w.WriteHeader(int(h.code.Load()))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return h
}

// regTCP is a TCP endpoint the test opens and closes on one port.
type regTCP struct {
	addr string
	mu   sync.Mutex
	ln   net.Listener
}

func (r *regTCP) open(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	r.ln = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

func (r *regTCP) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ln != nil {
		r.ln.Close()
		r.ln = nil
	}
}

// With a health check the instance is announced only once the check passes, withdrawn
// (Consul: critical) after 2 failures in a row and announced again when it recovers.
func TestRegisterHealthCheck(t *testing.T) {
	type switcher struct {
		args    []string
		healthy func(bool)
		ranBy   func() string // who ran the last check, when the test can tell
	}
	cases := []struct {
		name, kind string
		check      func(t *testing.T) switcher
		// Consul keeps a failing instance, critical; etcd and ZooKeeper remove it.
		keepsCritical bool
	}{
		{name: "etcd/http", kind: "etcd", check: func(t *testing.T) switcher {
			h := startRegHealth(t, 503)
			return switcher{[]string{"--check", h.url}, func(ok bool) {
				h.code.Store(map[bool]int32{true: 200, false: 500}[ok])
			}, nil}
		}},
		{name: "zookeeper/tcp", kind: "zookeeper", check: func(t *testing.T) switcher {
			r := &regTCP{addr: fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))}
			t.Cleanup(r.close)
			return switcher{[]string{"--check", "tcp://" + r.addr}, func(ok bool) {
				if ok {
					r.open(t)
				} else {
					r.close()
				}
			}, nil}
		}},
		{name: "consul/check-cmd", kind: "consul", keepsCritical: true, check: func(t *testing.T) switcher {
			flag := filepath.Join(t.TempDir(), "healthy")
			return switcher{[]string{"--check-cmd", "test -e " + flag}, func(ok bool) {
				if ok {
					os.WriteFile(flag, nil, 0o644)
				} else {
					os.Remove(flag)
				}
			}, nil}
		}},
		{name: "consul/http-run-by-consul", kind: "consul", keepsCritical: true, check: func(t *testing.T) switcher {
			h := startRegHealth(t, 503)
			return switcher{[]string{"--check", h.url}, func(ok bool) {
				h.code.Store(map[bool]int32{true: 200, false: 500}[ok])
			}, func() string { s, _ := h.agent.Load().(string); return s }}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := startRegServer(t, tc.kind)
			file := regWatch(t, s)
			sw := tc.check(t)
			interval := "300ms"
			if tc.name == "consul/http-run-by-consul" {
				interval = "1s" // Consul's shortest check interval
			}
			args := append([]string{"--service", "web", "--id", "web-1", "--address", "10.1.0.3", "--port", "80",
				"--check-interval", interval, "--check-timeout", "200ms"}, sw.args...)
			p := regRegister(t, s, args...)

			// Failing from the start: not announced (Consul: at most critical). The positive
			// event first: herald's verdict logged, or Consul's own check critical.
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				if strings.Contains(p.Output(), "health check failing; not announcing until it passes") {
					break
				}
				if tc.keepsCritical && strings.Contains(regInstanceLine(regServices(t, s, "web"), "web-1"), "critical") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no failing verdict within 20s:\n%s", tail(p.Output(), 20))
				}
			}
			if b, _ := os.ReadFile(file); len(b) != 0 {
				t.Fatalf("announced while the check fails:\n%s", b)
			}
			if line := regInstanceLine(regServices(t, s, "web"), "web-1"); line != "" && (!tc.keepsCritical || !strings.Contains(line, "critical")) {
				t.Fatalf("listed while the check fails: %s", line)
			}

			sw.healthy(true)
			up := time.Now()
			d := regWaitFile(t, file, 10*time.Second, "announced once the check passes", func(c string) bool { return strings.HasPrefix(c, "web-1 10.1.0.3:80") }).Sub(up)
			t.Logf("%s: check passing -> rendered after %v", tc.name, d.Round(time.Millisecond))

			sw.healthy(false)
			down := time.Now()
			d = regWaitFile(t, file, 10*time.Second, "withdrawn when the check fails", func(c string) bool { return c == "" }).Sub(down)
			t.Logf("%s: check failing -> removed from the file after %v", tc.name, d.Round(time.Millisecond))
			out := regServices(t, s, "web")
			line := regInstanceLine(out, "web-1")
			if tc.keepsCritical {
				if !strings.Contains(line, "critical") {
					t.Fatalf("want the instance listed as critical:\n%s", out)
				}
			} else if line != "" {
				t.Fatalf("want the instance gone while unhealthy:\n%s", out)
			}

			sw.healthy(true)
			up = time.Now()
			d = regWaitFile(t, file, 10*time.Second, "announced again after recovery", func(c string) bool { return strings.HasPrefix(c, "web-1 10.1.0.3:80") }).Sub(up)
			t.Logf("%s: check recovered -> rendered again after %v", tc.name, d.Round(time.Millisecond))
			if sw.ranBy != nil && !strings.Contains(sw.ranBy(), "Consul") {
				t.Fatalf("the HTTP check was run by %q, want the Consul agent", sw.ranBy())
			}
			if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
				t.Fatalf("exit %d after SIGTERM", code)
			}
		})
	}
}

// A second process announcing an ID that a live one holds fails with a clear error and
// leaves the first alone; --replace takes the ID over; and after a kill -9, a new
// process (same ID, no --replace) gets it once the dead one's entry expires (etcd lease,
// ZooKeeper session) or turns critical (Consul TTL check).
func TestRegisterDuplicateID(t *testing.T) {
	for _, kind := range regKinds {
		t.Run(kind, func(t *testing.T) {
			s := startRegServer(t, kind)
			reg := func(addr string, extra ...string) *heraldProc {
				return regRegister(t, s, append([]string{"--service", "web", "--id", "web-1", "--address", addr, "--port", "80", "--ttl", "2s"}, extra...)...)
			}
			holds := func(addr string) {
				t.Helper()
				regWaitServices(t, s, "web", 15*time.Second, "web-1 at "+addr, func(out string) bool {
					return strings.Contains(regInstanceLine(out, "web-1"), addr+" ")
				})
			}
			a := reg("10.0.0.1")
			holds("10.0.0.1")

			b := reg("10.0.0.2")
			if code := regExitWithin(t, b, 15*time.Second); code != 1 {
				t.Fatalf("duplicate exited %d, want 1:\n%s", code, b.Output())
			}
			for _, want := range []string{"web-1", "registered by another process", "--replace"} {
				if !strings.Contains(b.Output(), want) {
					t.Fatalf("duplicate's error lacks %q:\n%s", want, b.Output())
				}
			}
			holds("10.0.0.1")

			c := reg("10.0.0.3", "--replace")
			holds("10.0.0.3")
			// The replaced process stands down: it stops keeping the entry alive, and
			// leaving does not remove the new holder's entry.
			time.Sleep(3 * time.Second) // a TTL and more of the replaced process's keepalive
			holds("10.0.0.3")
			if code := a.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
				t.Fatalf("replaced process exit %d", code)
			}
			time.Sleep(time.Second)
			holds("10.0.0.3")
			if kind == "consul" && !strings.Contains(a.Output(), "registered again by another process") {
				t.Fatalf("the replaced process did not say it stands down:\n%s", a.Output())
			}

			c.cmd.Process.Signal(syscall.SIGKILL)
			<-c.done
			killed := time.Now()
			d := reg("10.0.0.4")
			holds("10.0.0.4")
			t.Logf("%s: restart after kill -9 (TTL 2s) took the ID back after %v", kind, time.Since(killed).Round(time.Millisecond))
			if !strings.Contains(d.Output(), "registered by another process; waiting") {
				t.Fatalf("the restarted process did not say it waits for the old entry:\n%s", d.Output())
			}
		})
	}
}

// The registry is down when herald register starts: it keeps trying, says so, and
// announces as soon as the registry is back; it survives a registry outage longer than
// the TTL; SIGTERM while the registry is down still exits 0, promptly.
func TestRegisterRegistryDownAndRestarted(t *testing.T) {
	for _, kind := range regKinds {
		t.Run(kind, func(t *testing.T) {
			s := startRegServer(t, kind)
			s.proc.Stop(t)
			listen := freeAddr(t)
			p := regRegister(t, s, "--service", "web", "--id", "web-1", "--address", "10.1.0.5", "--port", "80",
				"--ttl", "3s", "--timeout", "2s", "--listen", listen)
			time.Sleep(4 * time.Second)
			select {
			case <-p.done:
				t.Fatalf("herald register exited while the registry was down:\n%s", p.Output())
			default:
			}
			if !strings.Contains(p.Output(), "cannot register; retrying") {
				t.Fatalf("no report of the unreachable registry:\n%s", p.Output())
			}
			if code, body := httpGet(t, "http://"+listen+"/healthz"); code != 503 || !strings.Contains(body, `"state":"registering"`) {
				t.Fatalf("/healthz while the registry is down = %d %s", code, body)
			}

			back := time.Now()
			s.proc.Restart(t)
			regWaitServices(t, s, "web", 20*time.Second, "announced once the registry is back", func(out string) bool {
				return strings.Contains(regInstanceLine(out, "web-1"), "passing")
			})
			t.Logf("FIGURE %s: registry back -> instance announced after %v", kind, time.Since(back).Round(time.Millisecond))
			if code, body := httpGet(t, "http://"+listen+"/healthz"); code != 200 || !strings.Contains(body, `"state":"announced"`) {
				t.Fatalf("/healthz once announced = %d %s", code, body)
			}

			// Down for twice the TTL: the lease / session / -dev agent's memory may be
			// lost; the instance must come back by itself.
			s.proc.Stop(t)
			time.Sleep(6 * time.Second)
			back = time.Now()
			s.proc.Restart(t)
			regWaitServices(t, s, "web", 20*time.Second, "announced again after the outage", func(out string) bool {
				return strings.Contains(regInstanceLine(out, "web-1"), "passing")
			})
			t.Logf("FIGURE %s: registry restarted after a 6s outage (TTL 3s) -> instance listed again after %v", kind, time.Since(back).Round(time.Millisecond))

			s.proc.Stop(t)
			sent := time.Now()
			if code := p.stop(t, syscall.SIGTERM, 12*time.Second); code != 0 {
				t.Fatalf("exit %d after SIGTERM with the registry down:\n%s", code, tail(p.Output(), 20))
			}
			t.Logf("%s: SIGTERM with the registry down -> exit 0 after %v", kind, time.Since(sent).Round(time.Millisecond))
		})
	}
}

// One `herald watch` both renders and announces the [[register]] instances of its
// herald.toml, and deregisters them on SIGTERM.
func TestRegisterFromHeraldTomlInWatch(t *testing.T) {
	for _, kind := range regKinds {
		t.Run(kind, func(t *testing.T) {
			s := startRegServer(t, kind)
			dir := t.TempDir()
			writeTree(t, dir, map[string]string{
				"herald.toml":        fmt.Sprintf("backend = %q\n\n[[register]]\nservice = \"web\"\naddress = \"10.2.0.1\"\nport = 9000\ntags = [\"t1\"]\nmeta = { zone = \"b\" }\n\n[[register]]\nservice = \"api\"\nid = \"api-1\"\naddress = \"10.2.0.2\"\nport = 9001\n", s.url),
				"conf.d/web.toml":    "[template]\nsrc = \"web.tmpl\"\ndest = \"out/web\"\nmake_dirs = true\n",
				"templates/web.tmpl": `{{range service "web"}}{{.ID}} {{.HostPort}} {{join .Tags ","}} {{index .Meta "zone"}}` + "\n{{end}}",
			})
			w := startHerald(t, nil, "watch", "--config", filepath.Join(dir, "herald.toml"), "--confdir", dir)
			regWaitFile(t, filepath.Join(dir, "out", "web"), 20*time.Second, "its own instance rendered", func(c string) bool {
				return c == "web-10.2.0.1-9000 10.2.0.1:9000 t1 b\n"
			})
			regWaitServices(t, s, "api", 10*time.Second, "api-1 listed", func(out string) bool { return regInstanceLine(out, "api-1") != "" })
			if code := w.stop(t, syscall.SIGTERM, 15*time.Second); code != 0 {
				t.Fatalf("watch exit %d after SIGTERM", code)
			}
			for _, name := range []string{"web", "api"} {
				if out := regServices(t, s, name); strings.Contains(out, "10.2.0.") {
					t.Fatalf("%s still listed after the watch stopped:\n%s", name, out)
				}
			}
		})
	}
}
