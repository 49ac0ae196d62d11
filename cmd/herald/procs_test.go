package main

import (
	"runtime"
	"testing"

	"github.com/heraldhq/herald/resources"
	"github.com/heraldhq/herald/template"
)

// procs.fit: one P for at most fewResources resources none of which fans out, the
// runtime's default otherwise, and nothing at all when GOMAXPROCS is in the environment.
func TestProcsFit(t *testing.T) {
	t.Cleanup(runtime.SetDefaultGOMAXPROCS)
	runtime.SetDefaultGOMAXPROCS()
	cpus := runtime.GOMAXPROCS(0)
	if cpus == 1 {
		t.Fatal("one CPU here: the test needs two to see herald's choice")
	}
	plain := func(n int) []*resources.Resource {
		rs := make([]*resources.Resource, n)
		for i := range rs {
			rs[i] = &resources.Resource{}
		}
		return rs
	}
	noEnv := env{lookup: func(string) (string, bool) { return "", false }}
	p := newProcs(noEnv, discard())
	for _, c := range []struct {
		what string
		rs   []*resources.Resource
		want int
	}{
		{"1 resource", plain(1), 1},
		{"fewResources", plain(fewResources), 1},
		{"one more", plain(fewResources + 1), cpus},
		{"back to 2", plain(2), 1},
		{"a fan-out resource", []*resources.Resource{{Each: &template.Each{}}}, cpus},
		{"none", nil, 1},
	} {
		p.fit(c.rs)
		if got := runtime.GOMAXPROCS(0); got != c.want {
			t.Errorf("%s: GOMAXPROCS %d, want %d", c.what, got, c.want)
		}
	}

	runtime.GOMAXPROCS(3)
	pinned := newProcs(env{lookup: func(k string) (string, bool) { return "3", k == "GOMAXPROCS" }}, discard())
	pinned.fit(plain(1))
	if got := runtime.GOMAXPROCS(0); got != 3 {
		t.Errorf("GOMAXPROCS set in the environment: %d after fit, want it kept (3)", got)
	}
}
