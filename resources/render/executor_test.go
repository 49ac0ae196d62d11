package render

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The executor runs every job, never more than n at once, and its workers go away
// when idle.
func TestExecutorBoundsAndIdles(t *testing.T) {
	e := newExecutor(2)
	var running, peak, ran atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		e.submit(func() {
			defer wg.Done()
			n := running.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			time.Sleep(2 * time.Millisecond)
			running.Add(-1)
			ran.Add(1)
		})
	}
	wg.Wait()
	if ran.Load() != 20 || peak.Load() > 2 {
		t.Fatalf("ran %d jobs with %d at once, want 20 with at most 2", ran.Load(), peak.Load())
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(e.slots) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d workers still alive after idling", len(e.slots))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
