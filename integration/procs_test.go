package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/heraldhq/herald/integration/harness"
)

// A watch with few resources (at most 4, none fanning out) runs on one P: each hand-off
// between its goroutines then wakes no other thread (a fleet of one-resource sidecars
// uses ~30% less CPU per change). A reload that takes it past 4 resources gives it the
// runtime's default again, and one that brings it back goes back to one P; a GOMAXPROCS
// in the environment is left alone.
func TestWatchRunsFewResourcesOnOneP(t *testing.T) {
	t.Parallel()
	if v, ok := os.LookupEnv("GOMAXPROCS"); ok {
		t.Fatalf("GOMAXPROCS=%s is set for the tests: every herald would keep it, so its own choice cannot be seen", v)
	}
	// herald's default is the test process's: same machine, same cgroup, no GOMAXPROCS.
	cpus := runtime.GOMAXPROCS(0)
	resource := func(name string) map[string]string {
		return map[string]string{
			"conf.d/" + name + ".toml":    "[template]\nsrc = \"" + name + ".tmpl\"\ndest = \"out/" + name + "\"\nkeys = [\"/app\"]\n",
			"templates/" + name + ".tmpl": name + "={{getv \"/app/value\"}}\n",
		}
	}
	dir, backend := fileTree(t, map[string]string{"data.yaml": "app:\n  value: one\n", "out/.keep": ""})
	writeTree(t, dir, resource("r0"))
	listen := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	p := startHerald(t, nil, "watch", "--confdir", dir, "--backend", backend, "--listen", listen)
	procs := func() int { return int(metric(t, listen, "go_sched_gomaxprocs_threads")) }
	waitFile(t, filepath.Join(dir, "out", "r0"), "r0=one\n", 20e9)
	waitFor(t, p, "one P with one resource", func() bool { return procs() == 1 })

	for i := 1; i <= 4; i++ {
		writeTree(t, dir, resource(fmt.Sprintf("r%d", i)))
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFile(t, filepath.Join(dir, "out", "r4"), "r4=one\n", 20e9)
	waitFor(t, p, fmt.Sprintf("the default %d Ps with 5 resources", cpus), func() bool { return procs() == cpus })

	for i := 1; i <= 4; i++ {
		name := fmt.Sprintf("r%d", i)
		os.Remove(filepath.Join(dir, "conf.d", name+".toml"))
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, p, "one P again with one resource", func() bool { return procs() == 1 })
	// Still rendering on one P.
	if err := os.WriteFile(filepath.Join(dir, "data.yaml"), []byte("app:\n  value: two\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(dir, "out", "r0"), "r0=two\n", 20e9)

	// GOMAXPROCS set by the user wins.
	pinned := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	q := startHerald(t, []string{"GOMAXPROCS=3"}, "watch", "--confdir", dir, "--backend", backend, "--listen", pinned)
	waitFor(t, q, "the second watch serving", func() bool { return strings.Contains(q.Output(), "herald watching") })
	waitFor(t, q, "GOMAXPROCS=3 kept", func() bool { return int(metric(t, pinned, "go_sched_gomaxprocs_threads")) == 3 })
}
