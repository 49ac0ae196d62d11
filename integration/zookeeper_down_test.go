package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/integration/harness"
)

// `herald watch` started while ZooKeeper is down says so at once (as with etcd and
// Consul), naming the server and the cause, instead of staying silent until it connects.
func TestZooKeeperDownAtStartWarnsAtOnce(t *testing.T) {
	t.Parallel()
	dead := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"out/a\"\nmake_dirs = true\nkeys = [\"/app\"]\n",
		"templates/a.tmpl": `{{getv "/app/a" "none"}}` + "\n",
	})
	heraldBinary(t) // built before the clock starts
	start := time.Now()
	p := startHerald(t, nil, "watch", "--confdir", dir, "--backend", "zookeeper://"+dead)
	for !strings.Contains(p.Output(), "zookeeper unreachable") {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("no warning %v after starting with ZooKeeper down:\n%s", time.Since(start), p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	line := ""
	for _, l := range strings.Split(p.Output(), "\n") {
		if strings.Contains(l, "zookeeper unreachable") {
			line = l
			break
		}
	}
	if !strings.Contains(line, "level=WARN") || !strings.Contains(line, dead) || !strings.Contains(line, "connection refused") {
		t.Fatalf("the warning lacks its level, the server or the cause: %s", line)
	}
	t.Logf("warned %v after start: %s", time.Since(start).Round(time.Millisecond), line)
}
