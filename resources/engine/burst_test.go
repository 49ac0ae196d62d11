package engine

import (
	"testing"
	"time"
)

// Each change waits min again, but never past max after the burst's first change.
func TestBurstWaitsForCalmWithinMax(t *testing.T) {
	var b Burst
	t0 := time.Unix(1000, 0)
	if d := b.Change(300*time.Millisecond, time.Second, t0); d != 300*time.Millisecond {
		t.Fatalf("first change waits %v, want min", d)
	}
	if d := b.Change(300*time.Millisecond, time.Second, t0.Add(900*time.Millisecond)); d != 100*time.Millisecond {
		t.Fatalf("change 900ms in waits %v, want what is left of max (100ms)", d)
	}
	b.Reset()
	if b.Started() {
		t.Fatal("burst still started after Reset")
	}
	if d := b.Change(300*time.Millisecond, 0, t0.Add(5*time.Second)); d != 300*time.Millisecond {
		t.Fatalf("after Reset a change waits %v, want min (no max)", d)
	}
}
