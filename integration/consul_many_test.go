package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/integration/harness"
)

// consulManyServices registers n services (svc-0000..., one instance each, port
// 1000+i) in the catalog on a node of their own: the agent's anti-entropy would remove
// services on its own node that it does not know locally.
func consulManyServices(t testing.TB, cat *api.Catalog, n int) {
	t.Helper()
	for i := range n {
		consulCatalogPort(t, cat, i, 1000+i)
	}
}

func consulCatalogPort(t testing.TB, cat *api.Catalog, i, port int) {
	t.Helper()
	name := fmt.Sprintf("svc-%04d", i)
	_, err := cat.Register(&api.CatalogRegistration{Node: "bench-node", Address: "127.0.0.1",
		Service: &api.AgentService{ID: name + "-1", Service: name, Port: port}}, nil)
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
}

// tcpConns counts pid's established TCP connections to 127.0.0.1:port.
func tcpConns(t testing.TB, pid, port int) int {
	t.Helper()
	inodes := map[string]bool{}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("0100007F:%04X", port)
	n := 0
	for _, l := range strings.Split(string(raw), "\n")[1:] {
		f := strings.Fields(l)
		if len(f) > 9 && f[2] == want && f[3] == "01" && inodes[f[9]] {
			n++
		}
	}
	return n
}

// 1,000 services watched over plain HTTP hold a few dozen connections, not 1,000 (the
// agent is set to refuse a client past 100), and every change reaches its watch: one
// instance changed, a burst of 50 services changed back to back, a deregistration.
func TestConsulThousandServicesOnFewConnections(t *testing.T) {
	t.Parallel()
	const n = 1000
	c := harness.StartConsul(t)
	consulSetConnLimit(t, c, 100)
	cat := c.Client(t).Catalog()
	consulManyServices(t, cat, n)
	s := consulStore(t, c)
	type ev struct {
		name string
		e    backends.Event
	}
	ch := make(chan ev, 4*n)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range n {
		q := backends.ServiceQuery{Name: fmt.Sprintf("svc-%04d", i)}
		out := make(chan backends.Event)
		wg.Go(func() { _ = s.Watch(ctx, backends.ServiceTarget(q), 0, out) })
		wg.Go(func() {
			for {
				select {
				case e := <-out:
					ch <- ev{q.Name, e}
				case <-ctx.Done():
					return
				}
			}
		})
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	port := map[string]int{}
	first := map[string][]backends.Service{}
	wait := func(what string, within time.Duration, done func() bool) {
		t.Helper()
		deadline := time.After(within)
		for !done() {
			select {
			case e := <-ch:
				if _, ok := first[e.name]; !ok {
					first[e.name] = e.e.Services
				}
				if len(e.e.Services) == 0 {
					port[e.name] = 0
				} else {
					port[e.name] = e.e.Services[0].Port
				}
			case <-deadline:
				t.Fatalf("%s: not within %v (%d services seen; state %+v)", what, within, len(port), s.State())
			}
		}
	}
	wait("first event of every watch", 60*time.Second, func() bool { return len(port) == n })
	_, portStr, _ := strings.Cut(c.Addr, ":")
	agentPort, _ := strconv.Atoi(portStr)
	conns := tcpConns(t, os.Getpid(), agentPort)
	// 32 watches with a query each, the shared one, and connections the start's burst
	// of reads left idle in the pool (they close after 90 s).
	if conns > 80 {
		t.Fatalf("%d connections to the agent for %d watched services", conns, n)
	}
	// Shared or not, a watch sends what the service's own health endpoint says.
	for i := 0; i < n; i += 37 {
		q := backends.ServiceQuery{Name: fmt.Sprintf("svc-%04d", i)}
		direct, _, err := s.Services(consulCtx(t, 5*time.Second), q)
		if err != nil {
			t.Fatal(err)
		}
		// Compared as printed: the dump leaves empty tags and meta null where the
		// health endpoint sends [] and {}, which templates cannot tell apart.
		if fmt.Sprintf("%+v", direct) != fmt.Sprintf("%+v", first[q.Name]) {
			t.Fatalf("%s: watch sent %+v, the health endpoint says %+v", q.Name, first[q.Name], direct)
		}
	}

	start := time.Now()
	consulCatalogPort(t, cat, 500, 5000)
	wait("one instance changed", 10*time.Second, func() bool { return port["svc-0500"] == 5000 })
	one := time.Since(start)

	for i := 900; i < 950; i++ {
		consulCatalogPort(t, cat, i, 9000+i)
	}
	wait("a burst of 50 changes", 20*time.Second, func() bool {
		for i := 900; i < 950; i++ {
			if port[fmt.Sprintf("svc-%04d", i)] != 9000+i {
				return false
			}
		}
		return true
	})
	if _, err := cat.Deregister(&api.CatalogDeregistration{Node: "bench-node", ServiceID: "svc-0007-1"}, nil); err != nil {
		t.Fatal(err)
	}
	wait("a deregistration", 10*time.Second, func() bool { return port["svc-0007"] == 0 })

	// A watch started now, past the first 32, is served by the shared query: an instance
	// on the agent's own node (with the node's serfHealth check), tags, metadata, a
	// tagged address and a critical TTL check reads as the health endpoint says, and a
	// check turning passing reaches it.
	ag := c.Client(t).Agent()
	consulRegister(t, ag, &api.AgentServiceRegistration{ID: "rich-1", Name: "rich", Port: 7000, Address: "10.9.0.1",
		Tags: []string{"b", "a"}, Meta: map[string]string{"zone": "z1"},
		TaggedAddresses: map[string]api.ServiceAddress{"wan": {Address: "192.0.2.1", Port: 7001}},
		Check:           &api.AgentServiceCheck{CheckID: "chk-rich", TTL: "1h", Status: "critical"}})
	q := consulQuery(t, "rich", "any")
	direct, _, err := s.Services(consulCtx(t, 5*time.Second), q)
	if err != nil || len(direct) != 1 || direct[0].Status != "critical" {
		t.Fatalf("rich, read directly: %+v, %v", direct, err)
	}
	rich := make(chan backends.Event, 8)
	wg.Go(func() { _ = s.Watch(ctx, backends.ServiceTarget(q), 0, rich) })
	// A watch started from nothing may first send the shared query's last answer, from
	// before the registration; the registration follows.
	got := consulNext(t, rich, 10*time.Second, "rich through the shared query", func(ev backends.Event) bool { return len(ev.Services) > 0 })
	if fmt.Sprintf("%+v", got.Services) != fmt.Sprintf("%+v", direct) {
		t.Fatalf("rich: shared query sent %+v, the health endpoint says %+v", got.Services, direct)
	}
	if err := ag.UpdateTTL("chk-rich", "ok", api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	consulNext(t, rich, 10*time.Second, "rich passing", func(ev backends.Event) bool {
		return len(ev.Services) == 1 && ev.Services[0].Status == "passing"
	})
	t.Logf("FIGURE %d services watched on %d connections to the agent; one change -> its watch %v",
		n, conns, one.Round(time.Millisecond))
}

// `herald watch` with one template listing 1,000 services, one instance changed per
// iteration: change → file p50/p99, herald's connections to the agent, the agent's CPU
// per change.
func BenchmarkWatchConsul1000Services(b *testing.B) {
	const n = 1000
	c := harness.StartConsul(b)
	cat := c.Client(b).Catalog()
	consulManyServices(b, cat, n)
	dir := benchDir(b)
	var tmpl strings.Builder
	for i := range n {
		fmt.Fprintf(&tmpl, "{{range service \"svc-%04d\"}}{{.Name}} {{.Port}}\n{{end}}", i)
	}
	writeTree(b, dir, map[string]string{
		"conf.d/all.toml":    "[template]\nsrc = \"all.tmpl\"\ndest = \"out/all\"\n",
		"templates/all.tmpl": tmpl.String(),
	})
	out := filepath.Join(dir, "out")
	os.MkdirAll(out, 0o755)
	rn := newRenames(b, out)
	p := startHerald(b, nil, "watch", "--confdir", dir, "--backend", "consul://"+c.Addr, "--log-level", "warn")
	rn.wait(b, 1, 120*time.Second)
	time.Sleep(2 * time.Second)
	rn.drain()
	_, portStr, _ := strings.Cut(c.Addr, ":")
	agentPort, _ := strconv.Atoi(portStr)
	conns := tcpConns(b, p.cmd.Process.Pid, agentPort)
	var lat []time.Duration
	a0 := consulProcCPU(b, c.Proc.PID())
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		consulCatalogPort(b, cat, 500, 20000+i)
		rn.wait(b, 1, 30*time.Second)
		lat = append(lat, time.Since(t0))
		time.Sleep(50 * time.Millisecond)
	}
	b.StopTimer()
	agent := consulProcCPU(b, c.Proc.PID()) - a0
	p50, p99 := percentiles(lat)
	b.ReportMetric(p50, "p50-ms")
	b.ReportMetric(p99, "p99-ms")
	b.ReportMetric(float64(conns), "conns")
	b.ReportMetric(float64(agent.Microseconds())/1000/float64(b.N), "agent-cpu-ms/change")
	b.ReportMetric(float64(readProc(p.cmd.Process.Pid).rssKB)/1024, "rss-MB")
	b.ReportMetric(0, "ns/op")
}
