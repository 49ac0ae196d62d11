package engine_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/backends/open"
	"github.com/heraldhq/herald/resources/engine"
	"github.com/heraldhq/herald/resources/engine/cache"
	"github.com/heraldhq/herald/template"
)

// fileEngine is an engine over the file backend (a real store, no server needed).
func fileEngine(t *testing.T, yaml string) (*engine.Engine, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := open.Open(context.Background(), backends.Config{URL: "file://" + path})
	if err != nil {
		t.Fatal(err)
	}
	e := engine.New(s, cache.New(), nil)
	t.Cleanup(func() { e.Stop(); s.Close() })
	return e, path
}

func execute(e *engine.Engine, tm *template.Template, out *string) func() (*template.Reads, error) {
	return func() (reads *template.Reads, err error) {
		var b []byte
		e.Cache().Read(func(v cache.View) { b, reads, err = tm.Execute(v, template.Options{}) })
		*out = string(b)
		return reads, err
	}
}

// A key named by another key's value is found by executing, loading what was missing,
// and executing again: one render settles on both.
func TestSettleLoadsKeysTheTemplateTurnsOutToRead(t *testing.T) {
	e, _ := fileEngine(t, "ptr: /data/x\ndata:\n  x: found\n")
	tm, err := template.Parse("t", `{{getv (getv "/ptr")}}`)
	if err != nil {
		t.Fatal(err)
	}
	var out string
	loads := 0
	_, err = e.Settle(engine.Render{
		Execute: execute(e, tm, &out),
		Load: func(missing []backends.Target, _ *template.Reads) error {
			loads++
			return e.Ensure(context.Background(), missing, true)
		},
	})
	if err != nil || out != "found" {
		t.Fatalf("settled on %q, %v; want found", out, err)
	}
	if loads != 2 {
		t.Errorf("%d loads, want 2 (/ptr, then /data/x)", loads)
	}
	if n := e.WatchCount(); n != 2 {
		t.Errorf("%d watches, want one per loaded target (2): %v", n, e.WatchIDs())
	}
}

// A registry that cannot be read makes the render a LoadError: retried by itself, not
// waiting for a change like a template error.
func TestSettleLoadFailureIsALoadError(t *testing.T) {
	e, _ := fileEngine(t, "k: v\n")
	tm, err := template.Parse("t", `{{getv "/k"}}`)
	if err != nil {
		t.Fatal(err)
	}
	var out string
	down := errors.New("registry down")
	_, err = e.Settle(engine.Render{
		Execute: execute(e, tm, &out),
		Load:    func([]backends.Target, *template.Reads) error { return down },
	})
	if !engine.IsLoadError(err) || !errors.Is(err, down) {
		t.Fatalf("err = %v; want a LoadError wrapping the load's", err)
	}
}

// Prefixes are read in one request and split so that each gets its own Full event:
// a prefix with nothing under it is loaded (empty) too, and watched.
func TestEnsureSplitsOneReadByPrefix(t *testing.T) {
	e, _ := fileEngine(t, "a:\n  x: 1\n  y:\n    z: 2\nb:\n  x: 3\n")
	ts := []backends.Target{backends.PrefixTarget("/a"), backends.PrefixTarget("/a/y"), backends.PrefixTarget("/b"), backends.PrefixTarget("/none")}
	if err := e.Ensure(context.Background(), ts, false); err != nil {
		t.Fatal(err)
	}
	for _, tg := range ts {
		if !e.Cache().Covered(tg) {
			t.Errorf("%s not loaded", tg.ID())
		}
	}
	var got []string
	e.Cache().Read(func(v cache.View) {
		for _, kv := range v.List("/") {
			got = append(got, kv.Key+"="+kv.Value)
		}
	})
	if want := "[/a/x=1 /a/y/z=2 /b/x=3]"; fmt.Sprint(got) != want {
		t.Errorf("cache holds %v, want %s", got, want)
	}
	if n := e.WatchCount(); n != 0 {
		t.Errorf("%d watches for a one-off load", n)
	}
}

// datacenters on a backend without them fails the render and names why, rather than
// rendering an empty list; with a source that has them it renders them sorted.
func TestDatacentersOnlyWhereTheBackendHasThem(t *testing.T) {
	e, _ := fileEngine(t, "k: v\n")
	tm, err := template.Parse("t", `{{range datacenters}}{{.}} {{end}}`)
	if err != nil {
		t.Fatal(err)
	}
	var out string
	_, err = e.Settle(engine.Render{
		Execute: execute(e, tm, &out),
		Load: func(missing []backends.Target, _ *template.Reads) error {
			return e.Ensure(context.Background(), missing, false)
		},
	})
	if err == nil || !strings.Contains(err.Error(), "datacenters: this backend has no datacenters (only consul:// has)") {
		t.Fatalf("err = %v; want the backend named as having no datacenters", err)
	}
	if engine.IsLoadError(err) {
		t.Fatal("a backend without datacenters is the template's error, not one to retry")
	}
	b, reads, err := tm.Execute(template.MapSource{DCs: []string{"dc1", "dc2"}}, template.Options{})
	if err != nil || string(b) != "dc1 dc2 " || !reads.Datacenters {
		t.Fatalf("over a source with datacenters: %q, %v, reads.Datacenters=%v", b, err, reads != nil && reads.Datacenters)
	}
}

// A watched key's change arrives on Events.
func TestWatchFeedsEvents(t *testing.T) {
	e, path := fileEngine(t, "k: one\n")
	if err := e.Ensure(context.Background(), []backends.Target{backends.PrefixTarget("/k")}, true); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("k: two\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev := <-e.Events():
			e.Cache().Apply(ev)
			var v string
			e.Cache().Read(func(cv cache.View) { v, _ = cv.Get("/k") })
			if v == "two" {
				return
			}
		case <-deadline:
			t.Fatal("no event for the change within 10s")
		}
	}
}
