package cache

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/heraldhq/herald/backends"
)

func keys(v View, prefix string) []string {
	var out []string
	for _, kv := range v.List(prefix) {
		out = append(out, kv.Key+"="+kv.Value)
	}
	return out
}

func TestApplyAndList(t *testing.T) {
	c := New()
	app := backends.PrefixTarget("/app")
	ch := c.Apply(backends.Event{Target: app, Revision: 5, Full: true, KVs: map[string]string{"/app": "root", "/app/b": "2", "/app/a": "1"}})
	if !slices.Equal(ch.Keys, []string{"/app", "/app/a", "/app/b"}) {
		t.Fatalf("change = %v", ch.Keys)
	}
	c.Apply(backends.Event{Target: backends.PrefixTarget("/apple"), Revision: 5, Full: true, KVs: map[string]string{"/apple": "x", "/apple/z": "y"}})
	c.Read(func(v View) {
		// Path boundaries: /app never lists /apple.
		if got := keys(v, "/app"); !slices.Equal(got, []string{"/app=root", "/app/a=1", "/app/b=2"}) {
			t.Errorf("List(/app) = %v", got)
		}
		if got := keys(v, "/"); len(got) != 5 {
			t.Errorf("List(/) = %v", got)
		}
		if got := keys(v, "/app/a"); !slices.Equal(got, []string{"/app/a=1"}) {
			t.Errorf("List(/app/a) = %v", got)
		}
		if got := keys(v, "/nope"); got != nil {
			t.Errorf("List(/nope) = %v", got)
		}
	})
	if rev, ok := c.Loaded(app); !ok || rev != 5 {
		t.Fatalf("Loaded = %d %v", rev, ok)
	}
	// Incremental: an unchanged value is no change; a delete is.
	ch = c.Apply(backends.Event{Target: app, Revision: 6, KVs: map[string]string{"/app/a": "1", "/app/c": "3"}, Deleted: []string{"/app/b", "/app/never"}})
	if !slices.Equal(ch.Keys, []string{"/app/b", "/app/c"}) {
		t.Fatalf("incremental change = %v", ch.Keys)
	}
	// Full replaces: keys the new state lacks are deleted.
	ch = c.Apply(backends.Event{Target: app, Revision: 9, Full: true, KVs: map[string]string{"/app/a": "1"}})
	if !slices.Equal(ch.Keys, []string{"/app", "/app/c"}) {
		t.Fatalf("full change = %v", ch.Keys)
	}
	c.Read(func(v View) {
		if got := keys(v, "/app"); !slices.Equal(got, []string{"/app/a=1"}) {
			t.Errorf("after full: %v", got)
		}
		if got := keys(v, "/apple"); len(got) != 2 {
			t.Errorf("a full event of /app touched /apple: %v", got)
		}
	})
}

func TestCoveredAndForget(t *testing.T) {
	c := New()
	c.Apply(backends.Event{Target: backends.PrefixTarget("/a"), Full: true, KVs: map[string]string{"/a/b/c": "1", "/a/x": "2"}})
	c.Apply(backends.Event{Target: backends.PrefixTarget("/a/b"), Full: true, KVs: map[string]string{"/a/b/c": "1"}})
	for p, want := range map[string]bool{"/a": true, "/a/b/c/d": true, "/ab": false, "/": false, "/b": false} {
		if got := c.Covered(backends.PrefixTarget(p)); got != want {
			t.Errorf("Covered(%s) = %v", p, got)
		}
	}
	// Forgetting the narrow target keeps keys the broad one still covers.
	c.Forget(backends.PrefixTarget("/a/b"))
	if c.Len() != 2 {
		t.Fatalf("Forget dropped covered keys: %d left", c.Len())
	}
	c.Forget(backends.PrefixTarget("/a"))
	if c.Len() != 0 || c.Covered(backends.PrefixTarget("/a")) {
		t.Fatalf("Forget kept %d keys", c.Len())
	}
}

func TestServices(t *testing.T) {
	c := New()
	q, _ := backends.ParseServiceQuery("web")
	tg := backends.ServiceTarget(q)
	s1 := []backends.Service{{Name: "web", ID: "1", Address: "10.0.0.1", Port: 80, Tags: []string{"a"}, Meta: map[string]string{"k": "v"}}}
	if ch := c.Apply(backends.Event{Target: tg, Full: true, Services: s1}); !ch.Other {
		t.Fatal("first load is a change")
	}
	same := []backends.Service{{Name: "web", ID: "1", Address: "10.0.0.1", Port: 80, Tags: []string{"a"}, Meta: map[string]string{"k": "v"}}}
	if ch := c.Apply(backends.Event{Target: tg, Full: true, Services: same}); !ch.Empty() {
		t.Fatal("an identical list is no change (no reload)")
	}
	meta := []backends.Service{{Name: "web", ID: "1", Address: "10.0.0.1", Port: 80, Tags: []string{"a"}, Meta: map[string]string{"k": "w"}}}
	if ch := c.Apply(backends.Event{Target: tg, Full: true, Services: meta}); !ch.Other {
		t.Fatal("a meta change is a change")
	}
	c.Read(func(v View) {
		if got := v.Services(q); len(got) != 1 || got[0].Meta["k"] != "w" {
			t.Fatalf("Services = %v", got)
		}
		other, _ := backends.ParseServiceQuery("web", "any")
		if got := v.Services(other); got != nil {
			t.Fatalf("a different filter is a different target: %v", got)
		}
	})
	names := backends.Target{ServiceNames: true}
	if ch := c.Apply(backends.Event{Target: names, Full: true}); !ch.Other {
		t.Fatal("first catalog load, even empty, is a change")
	}
	if ch := c.Apply(backends.Event{Target: names, Full: true}); !ch.Empty() {
		t.Fatal("same empty catalog is no change")
	}
}

// The datacenter list: loaded even when empty (nil means not loaded), a change only
// when it differs, gone with Forget.
func TestDatacenters(t *testing.T) {
	c := New()
	tg := backends.Target{Datacenters: true}
	read := func() (dcs []string) {
		c.Read(func(v View) { dcs = v.Datacenters() })
		return dcs
	}
	if read() != nil {
		t.Fatal("not loaded yet must read nil")
	}
	if ch := c.Apply(backends.Event{Target: tg, Full: true}); !ch.Other {
		t.Fatal("first load, even empty, is a change")
	}
	if got := read(); got == nil || len(got) != 0 {
		t.Fatalf("loaded empty list reads %#v, want empty non-nil", got)
	}
	if ch := c.Apply(backends.Event{Target: tg, Full: true, Datacenters: []string{"dc1", "dc2"}}); !ch.Other {
		t.Fatal("a new datacenter is a change")
	}
	if ch := c.Apply(backends.Event{Target: tg, Full: true, Datacenters: []string{"dc1", "dc2"}}); !ch.Empty() {
		t.Fatal("the same list is no change (no reload)")
	}
	if got := read(); !slices.Equal(got, []string{"dc1", "dc2"}) {
		t.Fatalf("Datacenters = %v", got)
	}
	c.Forget(tg)
	if _, ok := c.Loaded(tg); ok || read() != nil {
		t.Fatal("Forget must drop the list")
	}
}

func BenchmarkApplyOneKeyOf100k(b *testing.B) {
	c := New()
	kvs := make(map[string]string, 100_000)
	for i := range 100_000 {
		kvs[fmt.Sprintf("/svc/%05d/addr", i)] = "10.0.0.1"
	}
	c.Apply(backends.Event{Target: backends.PrefixTarget("/svc"), Full: true, KVs: kvs})
	b.ResetTimer()
	for i := range b.N {
		c.Apply(backends.Event{Target: backends.PrefixTarget("/svc"), KVs: map[string]string{fmt.Sprintf("/svc/new/%d", i%1000): "x"}})
	}
}

// The sorted index must always hold exactly the map's keys, in order, whatever mix of
// bulk loads, small upserts, deletes and delete-then-put events arrives.
func TestSortedIndexStaysExact(t *testing.T) {
	c := New()
	rng := rand.New(rand.NewPCG(1, 2))
	key := func() string { return fmt.Sprintf("/p/%d/%d", rng.IntN(30), rng.IntN(30)) }
	tg := backends.PrefixTarget("/p")
	for round := range 3000 {
		ev := backends.Event{Target: tg, KVs: map[string]string{}}
		switch rng.IntN(4) {
		case 0: // bulk Full load
			ev.Full = true
			for range rng.IntN(400) {
				ev.KVs[key()] = fmt.Sprint(round)
			}
		case 1: // small upsert
			for range rng.IntN(5) {
				ev.KVs[key()] = fmt.Sprint(round)
			}
		case 2: // deletes, some of them put again in the same event
			for range rng.IntN(20) {
				k := key()
				ev.Deleted = append(ev.Deleted, k)
				if rng.IntN(2) == 0 {
					ev.KVs[k] = "again"
				}
			}
		case 3: // many deletes
			for range rng.IntN(100) {
				ev.Deleted = append(ev.Deleted, key())
			}
		}
		c.Apply(ev)
		want := make([]string, 0, len(c.kv))
		for k := range c.kv {
			want = append(want, k)
		}
		slices.Sort(want)
		if !slices.Equal(c.sorted, want) {
			t.Fatalf("round %d: sorted index %d keys, map %d keys", round, len(c.sorted), len(want))
		}
	}
}

func BenchmarkApplyFull100k(b *testing.B) {
	kvs := make(map[string]string, 100_000)
	for i := range 100_000 {
		kvs[fmt.Sprintf("/svc/%05d/addr", i)] = "10.0.0.1"
	}
	for range b.N {
		New().Apply(backends.Event{Target: backends.PrefixTarget("/svc"), Full: true, KVs: kvs})
	}
}
