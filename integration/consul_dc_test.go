package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/heraldhq/herald/integration/harness"
)

// Two real Consul datacenters joined over the WAN on loopback, read through dc1's agent:
// a template lists `web` in both; a change in dc2 reaches the file about as fast as one in
// dc1; when dc2's server stops, dc1's changes keep rendering, dc2's list keeps its last
// data (never emptied), /healthz and metrics say dc2 is down; when dc2 is back the file
// catches up. KV read with ?dc=dc2 keeps its last data the same way.
func TestConsulTwoDatacenters(t *testing.T) {
	t.Parallel()
	dc1, dc2 := harness.StartConsulPair(t)
	c1, c2 := dc1.Client(t), dc2.Client(t)
	reg := func(c *api.Client, id, addr string) {
		t.Helper()
		consulRegister(t, c.Agent(), &api.AgentServiceRegistration{ID: id, Name: "web", Port: 80, Address: addr})
	}
	reg(c1, "web-a", "10.1.0.1")
	reg(c2, "web-b", "10.2.0.1")
	consulPut(t, c1.KV(), "app/x", "1")
	consulPut(t, c2.KV(), "app/x", "dc2-1")

	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"conf.d/web.toml": "[template]\nsrc = \"web.tmpl\"\ndest = \"out/web\"\nmake_dirs = true\nkeys = [\"/app\"]\n",
		"templates/web.tmpl": `{{range service "web"}}dc1 {{.ID}} {{.HostPort}}` + "\n{{end}}" +
			`{{range service "web@dc2"}}dc2 {{.ID}} {{.HostPort}}` + "\n{{end}}" +
			`x={{getv "/app/x"}}` + "\n",
	})
	writeTree(t, dir, map[string]string{
		"conf.d/dcs.toml":    "[template]\nsrc = \"dcs.tmpl\"\ndest = \"out/dcs\"\nmake_dirs = true\n",
		"templates/dcs.tmpl": `{{join datacenters ","}}` + "\n",
	})
	kvDir := t.TempDir()
	writeTree(t, kvDir, map[string]string{
		"conf.d/kv2.toml":    "[template]\nsrc = \"kv2.tmpl\"\ndest = \"out/kv2\"\nmake_dirs = true\nkeys = [\"/app\"]\n",
		"templates/kv2.tmpl": `x={{getv "/app/x"}}` + "\n",
	})
	listen := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	startHerald(t, nil, "watch", "--confdir", dir, "--backend", "consul://"+dc1.Addr, "--listen", listen)
	kvListen := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	startHerald(t, nil, "watch", "--confdir", kvDir, "--backend", "consul://"+dc1.Addr+"?dc=dc2", "--listen", kvListen)
	web, kv2 := filepath.Join(dir, "out", "web"), filepath.Join(kvDir, "out", "kv2")
	want := func(a, b, x string) string { return a + b + "x=" + x + "\n" }
	line := func(dc, id, addr string) string { return dc + " " + id + " " + addr + ":80\n" }
	waitFile(t, web, want(line("dc1", "web-a", "10.1.0.1"), line("dc2", "web-b", "10.2.0.1"), "1"), 20*time.Second)
	waitFile(t, kv2, "x=dc2-1\n", 20*time.Second)
	dcs := filepath.Join(dir, "out", "dcs")
	waitFile(t, dcs, "dc1,dc2\n", 20*time.Second)

	// A change in each datacenter, timed from the registration returning.
	timed := func(c *api.Client, id, addr, wantFile string) time.Duration {
		t.Helper()
		start := time.Now()
		reg(c, id, addr)
		waitFile(t, web, wantFile, 10*time.Second)
		return time.Since(start)
	}
	var d1, d2 []time.Duration
	a, b := line("dc1", "web-a", "10.1.0.1"), line("dc2", "web-b", "10.2.0.1")
	for i := range 5 {
		a = line("dc1", "web-a", fmt.Sprintf("10.1.1.%d", i))
		d1 = append(d1, timed(c1, "web-a", fmt.Sprintf("10.1.1.%d", i), want(a, b, "1")))
		b = line("dc2", "web-b", fmt.Sprintf("10.2.1.%d", i))
		d2 = append(d2, timed(c2, "web-b", fmt.Sprintf("10.2.1.%d", i), want(a, b, "1")))
	}
	p1, _ := percentiles(d1)
	p2, _ := percentiles(d2)
	t.Logf("FIGURE instance change -> file, p50 of 5: dc1 %.1f ms, dc2 (over the WAN) %.1f ms", p1, p2)

	// A third datacenter joins: `datacenters` lists it (Consul has no blocking query
	// on the list, so herald reads it again every 10 s).
	joined := time.Now()
	harness.StartConsul(t, harness.ConsulWANJoin("dc3", dc1, dc2))
	waitFile(t, dcs, "dc1,dc2,dc3\n", 40*time.Second)
	t.Logf("FIGURE datacenter joined -> datacenters in the file: %.1f s", time.Since(joined).Seconds())

	// dc2 goes away.
	dc2.Proc.Stop(t)
	consulEventually(t, 30*time.Second, "/healthz shows dc2 down", func() error {
		h, raw := getHealth(t, listen)
		if found, up := h.partUp("datacenter dc2"); !found || up {
			return fmt.Errorf("dc2 not shown down: %s", raw)
		}
		if h.Backend.State != "up" {
			return fmt.Errorf("backend not up while dc1 serves: %s", raw)
		}
		return nil
	})
	if v := metric(t, listen, `herald_backend_part_up{part="datacenter dc2"}`); v != 0 {
		t.Fatalf("metric for dc2 = %v while it is down", v)
	}
	// dc1 keeps rendering; dc2's instances stay as last seen.
	a = line("dc1", "web-a", "10.1.9.9")
	reg(c1, "web-a", "10.1.9.9")
	consulPut(t, c1.KV(), "app/x", "2")
	waitFile(t, web, want(a, b, "2"), 10*time.Second)
	consulEventually(t, 30*time.Second, "the ?dc=dc2 herald shows its backend down", func() error {
		h, raw := getHealth(t, kvListen)
		if h.Backend.State == "up" {
			return fmt.Errorf("still up: %s", raw)
		}
		return nil
	})
	if got, _ := os.ReadFile(kv2); string(got) != "x=dc2-1\n" {
		t.Fatalf("dc2's KV file changed while dc2 is down: %q", got)
	}

	// dc2 comes back (an empty -dev server: its instance registers again, changed).
	dc2.Proc.Restart(t)
	c2 = dc2.Client(t)
	reg(c2, "web-b", "10.2.7.7")
	consulPut(t, c2.KV(), "app/x", "dc2-2")
	b = line("dc2", "web-b", "10.2.7.7")
	waitFile(t, web, want(a, b, "2"), 30*time.Second)
	waitFile(t, kv2, "x=dc2-2\n", 30*time.Second)
	consulEventually(t, 10*time.Second, "/healthz shows dc2 up", func() error {
		h, raw := getHealth(t, listen)
		if found, up := h.partUp("datacenter dc2"); !found || !up {
			return fmt.Errorf("dc2 not shown up: %s", raw)
		}
		return nil
	})
	if v := metric(t, listen, `herald_backend_part_up{part="datacenter dc2"}`); v != 1 {
		t.Fatalf("metric for dc2 = %v after it came back", v)
	}
}
