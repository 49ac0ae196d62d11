package cache_test

import (
	"fmt"
	"testing"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/resources/engine/cache"
	"github.com/heraldhq/herald/template"
)

func render(t *testing.T, c *cache.Cache, tm *template.Template) string {
	t.Helper()
	var (
		out []byte
		err error
	)
	c.Read(func(v cache.View) { out, _, err = tm.Execute(v, template.Options{}) })
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// Renders share ls and lsdir results through the cache's memo: a change must drop them,
// and one render reversing its list in place (confd's reverse does) must not reorder
// another's.
func TestMemoizedListingsFollowChangesAndAreNotShared(t *testing.T) {
	c := cache.New()
	p := backends.PrefixTarget("/svc")
	c.Apply(backends.Event{Target: p, Revision: 1, Full: true, KVs: map[string]string{
		"/svc/a/addr": "1", "/svc/b/addr": "2", "/svc/c": "3",
	}})
	ls, err := template.Parse("ls", `{{range ls "/svc"}}{{.}} {{end}}|{{range lsdir "/svc"}}{{.}} {{end}}`)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := template.Parse("rev", `{{range reverse (ls "/svc")}}{{.}} {{end}}`)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := render(t, c, ls), "a b c |a b "; got != want {
		t.Fatalf("first render %q, want %q", got, want)
	}
	if got, want := render(t, c, rev), "c b a "; got != want {
		t.Fatalf("reverse %q, want %q", got, want)
	}
	if got, want := render(t, c, ls), "a b c |a b "; got != want {
		t.Fatalf("after another render reversed its list: %q, want %q", got, want)
	}
	c.Apply(backends.Event{Target: p, Revision: 2, KVs: map[string]string{"/svc/d/addr": "4"}, Deleted: []string{"/svc/a/addr"}})
	if got, want := render(t, c, ls), "b c d |b d "; got != want {
		t.Fatalf("after a change %q, want %q", got, want)
	}
	c.Forget(p)
	if got, want := render(t, c, ls), "|"; got != want {
		t.Fatalf("after Forget %q, want %q", got, want)
	}
}

// BenchmarkExecuteSmallOverSharedPrefix is one of the 200 small renders a change to a
// 1,000-key prefix triggers (BenchmarkChangeTo200SmallFiles in resources/): two getv
// and an ls whose result the memo shares between renders.
func BenchmarkExecuteSmallOverSharedPrefix(b *testing.B) {
	c := cache.New()
	kvs := map[string]string{}
	for i := range 1000 {
		kvs[fmt.Sprintf("/bench/k%04d", i)] = fmt.Sprintf("10.0.%d.%d:80", i/256, i%256)
	}
	c.Apply(backends.Event{Target: backends.PrefixTarget("/bench"), Revision: 1, Full: true, KVs: kvs})
	tm, err := template.Parse("small", "# 7\nbackend {{getv \"/bench/k0500\"}}\nself {{getv \"/bench/k0007\"}}\ncount {{len (ls \"/bench\")}}\n")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		c.Read(func(v cache.View) {
			if _, _, err := tm.Execute(v, template.Options{}); err != nil {
				b.Fatal(err)
			}
		})
	}
}
