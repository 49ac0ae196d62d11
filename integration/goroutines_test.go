package integration

import (
	"bytes"
	"context"
	"fmt"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"
)

// goroutineScope labels the calling goroutine (the test's own) so that the goroutines it
// starts from now on, and the ones those start, carry the label too; the returned
// function counts the live ones, the test's own goroutine included. Leak checks count
// these instead of runtime.NumGoroutine, which also sees the tests running in parallel.
func goroutineScope(t testing.TB) func() int {
	label := fmt.Sprintf("%s/%p", t.Name(), t)
	pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("herald-test-scope", label)))
	mark := []byte(strconv.Quote("herald-test-scope") + ":" + strconv.Quote(label))
	return func() int {
		var buf bytes.Buffer
		pprof.Lookup("goroutine").WriteTo(&buf, 1)
		// debug=1: "N @ pc pc ..." then "# labels: {...}" for each distinct stack.
		n, count := 0, 0
		for _, line := range bytes.Split(buf.Bytes(), []byte("\n")) {
			if i := bytes.Index(line, []byte(" @ ")); i > 0 {
				count, _ = strconv.Atoi(string(line[:i]))
				continue
			}
			if bytes.HasPrefix(line, []byte("# labels: ")) && bytes.Contains(line, mark) {
				n += count
			}
		}
		return n
	}
}

// waitGoroutines waits until at most want goroutines of the scope are left.
func waitGoroutines(t testing.TB, owned func() int, want int, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := owned()
		if n <= want {
			return
		}
		if time.Now().After(deadline) {
			var buf bytes.Buffer
			pprof.Lookup("goroutine").WriteTo(&buf, 1)
			t.Fatalf("%s: %d goroutines started by the test are still running, want at most %d; all goroutines:\n%s", what, n, want, buf.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The scope counts what the test started, and its children, but not what other
// goroutines start at the same time.
func TestGoroutineScopeCountsOnlyTheTestsOwn(t *testing.T) {
	outside := make(chan struct{})
	ready := make(chan struct{})
	go func() { // started before the scope: not counted, nor what it starts
		close(ready)
		<-outside
	}()
	<-ready
	owned := goroutineScope(t)
	if n := owned(); n != 1 {
		t.Fatalf("scope counts %d right after it starts, want 1 (the test itself)", n)
	}
	stop := make(chan struct{})
	for range 3 {
		go func() {
			go func() { <-stop }() // a grandchild inherits the label
			<-stop
		}()
	}
	for deadline := time.Now().Add(5 * time.Second); owned() != 7; {
		if time.Now().After(deadline) {
			t.Fatalf("scope counts %d with 3 children and 3 grandchildren running, want 7", owned())
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	waitGoroutines(t, owned, 1, "after they end")
	close(outside)
}
