package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/heraldhq/herald/integration/harness"
)

// hungAgent is a real listener on 127.0.0.1 that accepts connections and never answers
// (what a wedged or SIGSTOPped agent looks like from the client once its backlog took
// the connection). It returns the address.
func hungAgent(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never read nor answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

type healthBody struct {
	Backend struct {
		State string `json:"state"`
		Parts []struct {
			Name  string `json:"name"`
			Up    bool   `json:"up"`
			Error string `json:"error"`
		} `json:"parts"`
	} `json:"backend"`
}

// partUp finds a part in a /healthz body: found, up.
func (h healthBody) partUp(name string) (bool, bool) {
	for _, p := range h.Backend.Parts {
		if p.Name == name {
			return true, p.Up
		}
	}
	return false, false
}

func getHealth(t testing.TB, addr string) (healthBody, string) {
	t.Helper()
	_, raw := httpGet(t, "http://"+addr+"/healthz")
	var h healthBody
	_ = json.Unmarshal([]byte(raw), &h)
	return h, raw
}

// With two addresses where the first accepts connections but never answers, render,
// services and register go on to the second well within --timeout; watch shows the hung
// agent in /healthz and metrics while serving through the other.
func TestConsulHungAgentFailsOver(t *testing.T) {
	t.Parallel()
	c := harness.StartConsul(t)
	cli := c.Client(t)
	consulPut(t, cli.KV(), "app/a", "1")
	consulRegister(t, cli.Agent(), &api.AgentServiceRegistration{ID: "web-1", Name: "web", Port: 80, Address: "10.0.0.1"})
	hung := hungAgent(t)
	backend := "consul://" + hung + "," + c.Addr
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"out/a\"\nmake_dirs = true\nkeys = [\"/app\"]\n",
		"templates/a.tmpl": `a={{getv "/app/a"}}{{range service "web"}} {{.HostPort}}{{end}}` + "\n",
	})

	t.Run("render", func(t *testing.T) {
		bin := heraldBinary(t) // built before the clock starts
		start := time.Now()
		out, err := exec.Command(bin, "render", "--confdir", dir, "--backend", backend, "--timeout", "10s").CombinedOutput()
		el := time.Since(start)
		if err != nil {
			t.Fatalf("render with the first agent hung: %v\n%s", err, out)
		}
		waitFile(t, filepath.Join(dir, "out", "a"), "a=1 10.0.0.1:80\n", time.Second)
		// One bounded attempt at the hung agent (2 s), then the next one answers.
		if el > 6*time.Second {
			t.Errorf("render took %v; the hung agent held it", el)
		}
		if !strings.Contains(string(out), hung) {
			t.Errorf("render did not say which agent hung:\n%s", out)
		}
		t.Logf("FIGURE render with the first of two agents hung: %v", el.Round(time.Millisecond))
	})

	t.Run("services", func(t *testing.T) {
		out, err := exec.Command(heraldBinary(t), "services", "--backend", backend, "--timeout", "10s", "web", "any").CombinedOutput()
		if err != nil || regInstanceLine(string(out), "web-1") == "" {
			t.Fatalf("services with the first agent hung: %v\n%s", err, out)
		}
	})

	t.Run("register", func(t *testing.T) {
		addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
		startHerald(t, nil, "register", "--backend", backend, "--listen", addr,
			"--service", "api", "--address", "10.2.0.1", "--port", "9090")
		consulEventually(t, 15*time.Second, "api registered through the second agent", func() error {
			svcs, _, err := cli.Health().Service("api", "", false, nil)
			if err == nil && len(svcs) != 1 {
				err = fmt.Errorf("%d instances", len(svcs))
			}
			return err
		})
		consulEventually(t, 5*time.Second, "/healthz shows the hung agent", func() error {
			h, raw := getHealth(t, addr)
			found, up := h.partUp("agent " + hung)
			if !found || up {
				return fmt.Errorf("hung agent not shown down: %s", raw)
			}
			return nil
		})
	})

	t.Run("watch", func(t *testing.T) {
		addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
		wdir := t.TempDir()
		writeTree(t, wdir, map[string]string{
			"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"out/a\"\nmake_dirs = true\nkeys = [\"/app\"]\n",
			"templates/a.tmpl": `a={{getv "/app/a"}}` + "\n",
		})
		startHerald(t, nil, "watch", "--confdir", wdir, "--backend", backend, "--listen", addr)
		out := filepath.Join(wdir, "out", "a")
		waitFile(t, out, "a=1\n", 15*time.Second)
		h, raw := getHealth(t, addr)
		if found, up := h.partUp("agent " + hung); !found || up || h.Backend.State != "up" {
			t.Fatalf("/healthz: want the backend up and agent %s down: %s", hung, raw)
		}
		if found, up := h.partUp("agent " + c.Addr); !found || !up {
			t.Fatalf("/healthz: want agent %s up: %s", c.Addr, raw)
		}
		if v := metric(t, addr, `herald_backend_part_up{part="agent `+hung+`"}`); v != 0 {
			t.Fatalf("metric for the hung agent = %v", v)
		}
		if v := metric(t, addr, `herald_backend_part_up{part="agent `+c.Addr+`"}`); v != 1 {
			t.Fatalf("metric for the answering agent = %v", v)
		}
		// The watch follows through the agent that answered, at once (it was remembered).
		start := time.Now()
		consulPut(t, cli.KV(), "app/a", "2")
		waitFile(t, out, "a=2\n", 5*time.Second)
		if el := time.Since(start); el > time.Second {
			t.Errorf("a change took %v through the remembered agent", el)
		}
	})
}
