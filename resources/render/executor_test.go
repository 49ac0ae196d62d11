package render

import (
	"context"
	"runtime"
	"strings"
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

// goroutineID is the current goroutine's number, from its stack header: tests only.
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	return strings.Fields(string(buf))[1]
}

// A burst of executions from many callers at once runs on at most n workers, reused
// from one execution to the next: none is started for a job while another idles.
func TestSlotsReuseTheirWorkers(t *testing.T) {
	const n, callers, each = 2, 64, 20
	s := newSlots(n)
	var mu sync.Mutex
	workers := map[string]bool{}
	var running, peak atomic.Int32
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				sl, err := s.acquire(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				done := make(chan struct{})
				s.start(sl, func() {
					k := running.Add(1)
					for p := peak.Load(); k > p && !peak.CompareAndSwap(p, k); p = peak.Load() {
					}
					mu.Lock()
					workers[goroutineID()] = true
					mu.Unlock()
					running.Add(-1)
					close(done)
				})
				<-done
			}
		}()
	}
	wg.Wait()
	if peak.Load() > n || len(workers) > n {
		t.Fatalf("%d executions ran on %d goroutines, %d at once; want at most %d of each", callers*each, len(workers), peak.Load(), n)
	}
}

// An abandoned execution hands its slot back at once, so others run while it still
// does; when it returns at last, its worker exits without handing the slot back a second
// time (which would let n+1 run at once).
func TestSlotsAbandon(t *testing.T) {
	s := newSlots(1)
	sl, err := s.acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	stuck, unstick := make(chan struct{}), make(chan struct{})
	runaway := s.start(sl, func() { close(stuck); <-unstick })
	<-stuck
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := s.acquire(ctx); err == nil {
		t.Fatal("acquired a second slot of 1 while the first runs")
	}
	if !s.abandon(runaway) {
		t.Fatal("abandon of a running execution reported it finished")
	}
	sl, err = s.acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ran := make(chan struct{})
	s.start(sl, func() { close(ran) })
	<-ran
	close(unstick) // the runaway returns; its worker must exit, keeping no slot
	deadline := time.Now().Add(5 * time.Second)
	for len(s.held) != 0 { // the second worker idles out after a second
		if time.Now().After(deadline) {
			t.Fatalf("%d slots still held after every worker idled", len(s.held))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Had the runaway's worker handed its slot back too, held would have gone below
	// zero: a receive on the empty channel would block. Prove the count is exact: one
	// slot, one acquire, and a second one waits.
	if _, err := s.acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if _, err := s.acquire(ctx2); err == nil {
		t.Fatal("two slots of 1 acquired after an abandon")
	}
}
