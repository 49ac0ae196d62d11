package integration

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServicesSeveralRoots: one registry holds instances written by two registrants
// with different roots and depths (as happens when teams share a cluster), and one
// --services-layout with two patterns reads both: `herald services` lists each service,
// `herald render` and `herald watch` put both lists in one HAProxy config, and a killed
// registrant of either root leaves the file. Each registrant is the real client library.
func TestServicesSeveralRoots(t *testing.T) {
	const py = "/usr/bin/python3"
	cases := []struct {
		name, registry, layout string
		a, b                   registrantSpec
	}{
		{
			name: "etcd", registry: "etcd",
			// python-etcd3 under /registry/<name>/<uuid>; npm etcd3 as node-etcd lays out.
			layout: "/registry/{name}/{id},/services/{name}/{dc}/{id}",
			a: registrantSpec{query: "web", argv: func(t *testing.T, srv regServer, port int) []string {
				return []string{"env", "REGISTRANT_ROOT=/registry", py, registrantScript(t, "registrant.py"), "etcd3", registrantAddr(srv), "web", "127.0.0.1", fmt.Sprint(port)}
			}},
			b: registrantSpec{query: "service_a@datacenter_x", argv: func(t *testing.T, srv regServer, port int) []string {
				return []string{"node", registrantScript(t, "registrant.mjs"), registrantAddr(srv), "service_a", "datacenter_x", "127.0.0.1", fmt.Sprint(port)}
			}},
		},
		{
			name: "zookeeper", registry: "zookeeper",
			// kazoo (zc.zk's host:port nodes) under /zc; Curator's ServiceDiscovery under /services.
			layout: "/zc/{name}/{id},/services/{name}/{id}",
			a: registrantSpec{query: "web", argv: func(t *testing.T, srv regServer, port int) []string {
				return []string{"env", "REGISTRANT_ROOT=/zc", py, registrantScript(t, "registrant.py"), "kazoo", registrantAddr(srv), "web", "127.0.0.1", fmt.Sprint(port)}
			}},
			b: registrantSpec{query: "com.example.Greeter", argv: func(t *testing.T, srv regServer, port int) []string {
				return []string{"java", "-Xmx64m", "-cp", curatorClasspath(t), "CuratorRegistrant", "register",
					registrantAddr(srv), "com.example.Greeter", "127.0.0.1", fmt.Sprint(port)}
			}},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv := startRegServer(t, c.registry)
			a1 := startRegistrant(t, c.a.argv(t, srv, 14001), 14001)
			startRegistrant(t, c.a.argv(t, srv, 14002), 14002)
			startRegistrant(t, c.b.argv(t, srv, 14011), 14011)
			b2 := startRegistrant(t, c.b.argv(t, srv, 14012), 14012)
			flags := []string{"--backend", srv.url, "--services-layout", c.layout}

			// herald services finds each service at its own root.
			for q, port := range map[string]string{c.a.query: "14001", c.b.query: "14011"} {
				name, _, _ := strings.Cut(q, "@")
				out, err := exec.Command(heraldBinary(t), append([]string{"services", name}, flags...)...).CombinedOutput()
				if err != nil || !strings.Contains(string(out), port) {
					t.Fatalf("herald services %s: %v\n%s", name, err, out)
				}
			}

			dir, dest := registrantConf(t, c.a.query)
			// One backend listing both services.
			writeTree(t, dir, map[string]string{"templates/haproxy.tmpl": strings.Replace(
				fmt.Sprintf(registrantHAProxyTmpl, c.a.query),
				"{{- end}}\n", fmt.Sprintf("{{- end}}\n{{- range service %q}}\n  server s{{.Port}} {{.HostPort}} check\n{{- end}}\n", c.b.query), 1)})
			out, err := exec.Command(heraldBinary(t), append([]string{"render", "--confdir", dir, "--timeout", "20s"}, flags...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("herald render: %v\n%s", err, out)
			}
			waitServers(t, dest, []int{14001, 14002, 14011, 14012}, time.Second)

			startHerald(t, nil, append([]string{"watch", "--confdir", dir}, flags...)...)
			a1.kill()
			b2.kill()
			took := waitServers(t, dest, []int{14002, 14011}, 60*time.Second)
			t.Logf("killed registrants of both roots gone from the file %v after SIGKILL", took.Round(time.Millisecond))
		})
	}
}

// registrantSpec is one registrant of TestServicesSeveralRoots: the template's query for
// what it registers, and its command line for a port.
type registrantSpec struct {
	query string
	argv  func(t *testing.T, srv regServer, port int) []string
}

// registrantScript is the absolute path of a registrant script in testdata.
func registrantScript(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", "registrants", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}
