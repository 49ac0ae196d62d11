package cache

import (
	"testing"
	"time"

	"github.com/heraldhq/herald/backends"
)

// An abandoned reader (a render past its timeout) must not hold the cache: once
// released its view is dark and writers go on, while it may still be reading.
func TestAcquireReleaseLetsWritersOnAndGoesDark(t *testing.T) {
	c := New()
	app := backends.PrefixTarget("/app")
	c.Apply(backends.Event{Target: app, Revision: 1, Full: true, KVs: map[string]string{"/app/a": "1"}})
	v, release := c.Acquire()
	if got, ok := v.Get("/app/a"); !ok || got != "1" || len(v.List("/app")) != 1 {
		t.Fatalf("view before release: %q %v", got, ok)
	}
	written := make(chan struct{})
	go func() {
		c.Apply(backends.Event{Target: app, Revision: 2, KVs: map[string]string{"/app/a": "2"}})
		close(written)
	}()
	release()
	release() // idempotent
	select {
	case <-written:
	case <-time.After(5 * time.Second):
		t.Fatal("a writer waits for a released reader")
	}
	if _, ok := v.Get("/app/a"); ok || v.List("/app") != nil || v.Memo("k", func() any { return 1 }) != 1 {
		t.Fatal("a released view still reads the cache")
	}
	c.Read(func(v View) {
		if got, _ := v.Get("/app/a"); got != "2" {
			t.Fatalf("after the write: %q", got)
		}
		if got := v.Memo("k", func() any { return 2 }); got != 2 {
			t.Fatalf("a dark view's value was memoized: %v", got)
		}
	})
}
