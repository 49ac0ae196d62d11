package backends

import (
	"testing"
	"time"
)

// Every caller's bounds hold, the delay grows to about Max, varies (jitter), and
// Reset starts over from Min.
func TestBackoffBoundedJitteredAndReset(t *testing.T) {
	for _, c := range []struct{ min, max time.Duration }{
		{100 * time.Millisecond, 5 * time.Second}, // etcd, ZooKeeper reconnects
		{250 * time.Millisecond, 5 * time.Second}, // Consul
		{time.Millisecond, 50 * time.Millisecond}, // ZooKeeper re-reads
	} {
		b := Backoff{Min: c.min, Max: c.max}
		if d := b.Next(); d < c.min/2 || d > c.min {
			t.Errorf("%v..%v: first wait %v, want [%v, %v]", c.min, c.max, d, c.min/2, c.min)
		}
		seen := map[time.Duration]bool{}
		var top time.Duration
		for range 40 {
			d := b.Next()
			if d < c.min/2 || d > c.max {
				t.Fatalf("%v..%v: wait %v out of bounds", c.min, c.max, d)
			}
			seen[d], top = true, max(top, d)
		}
		if len(seen) < 20 {
			t.Errorf("%v..%v: only %d distinct waits in 40: no jitter?", c.min, c.max, len(seen))
		}
		if top < c.max/2 {
			t.Errorf("%v..%v: never grew past %v", c.min, c.max, top)
		}
		b.Reset()
		if b.Retrying() {
			t.Error("Retrying after Reset")
		}
		if d := b.Next(); d > c.min {
			t.Errorf("%v..%v: after Reset waits %v, want <= %v", c.min, c.max, d, c.min)
		}
	}
}
