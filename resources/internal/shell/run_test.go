//go:build unix

package shell

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestRunOutputBounds(t *testing.T) {
	head := &Head{Max: 4}
	if timedOut, err := Run(context.Background(), "printf abcdefgh", 0, head); err != nil || timedOut {
		t.Fatalf("Run = %v, %v", timedOut, err)
	}
	if got := head.String(); got != "abcd\n[output truncated]" {
		t.Fatalf("Head kept %q", got)
	}
	tail := &Tail{Max: 8}
	_, err := Run(context.Background(), "printf 'first\\nsecond\\nthird\\n'; exit 3", 0, tail)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("exit 3: err = %v", err)
	}
	if got := tail.String(); got != "d | third" {
		t.Fatalf("Tail kept %q", got)
	}
}

// A timeout kills the whole process group: the shell's background child too, so that
// Run returns at the timeout rather than when `sleep 30` would end.
func TestRunTimeoutKillsTheGroup(t *testing.T) {
	out := &Head{Max: 64}
	done := make(chan struct{})
	var timedOut bool
	var err error
	go func() {
		timedOut, err = Run(context.Background(), "sleep 30 & wait", 100*time.Millisecond, out)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run still running 10 s after a 100 ms timeout")
	}
	if !timedOut || err == nil {
		t.Fatalf("Run = %v, %v; want a timeout", timedOut, err)
	}
	// A parent context's end is not the timeout.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if timedOut, err := Run(ctx, "true", time.Minute, out); timedOut || err == nil || !strings.Contains(err.Error(), "canceled") {
		t.Fatalf("cancelled: %v, %v", timedOut, err)
	}
}
