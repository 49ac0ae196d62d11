package engine

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// The engine's retry delays, all in one place (each jittered to half-to-full):
//   - a watch a backend gave up on restarts after 100 ms, doubling to 5 s;
//   - a render that could not read the registry (or write its file) is tried again
//     after 1 s, doubling to 30 s (RetryAfter);
//   - exec's start-up load retries after 100 ms, doubling to 2 s (StartupBackoff).
const (
	rewatchFirst, rewatchMax = 100 * time.Millisecond, 5 * time.Second
	retryFirst, retryMax     = time.Second, 30 * time.Second
	startupFirst, startupMax = 100 * time.Millisecond, 2 * time.Second
)

// LoadError marks a render that failed because data could not be read (registry down),
// which is worth retrying by itself; a template or check failure waits for a change.
type LoadError struct{ Err error }

func (e LoadError) Error() string { return e.Err.Error() }
func (e LoadError) Unwrap() error { return e.Err }

// IsLoadError reports whether err, or an error it wraps, is a LoadError.
func IsLoadError(err error) bool {
	var le LoadError
	return errors.As(err, &le)
}

// Jitter spreads retries of many hosts: a delay in [d/2, d].
func Jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// RetryAfter is the next delay of a render that keeps failing for a cause that passes
// by itself, given the previous one (0 at first), before jitter.
func RetryAfter(prev time.Duration) time.Duration {
	return min(max(2*prev, retryFirst), retryMax)
}

// rewatch is a restarting watch's backoff.
type rewatch struct{ d time.Duration }

// sleep waits the next delay; false when ctx ended first.
func (b *rewatch) sleep(ctx context.Context) bool {
	if b.d == 0 {
		b.d = rewatchFirst
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(Jitter(b.d)):
	}
	b.d = min(2*b.d, rewatchMax)
	return true
}

// StartupBackoff is exec's backoff while the registry cannot be read before the first
// start of the child.
type StartupBackoff struct{ d time.Duration }

// Sleep waits the next delay; false when ctx ended first.
func (b *StartupBackoff) Sleep(ctx context.Context) bool {
	if b.d == 0 {
		b.d = startupFirst
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(Jitter(b.d)):
	}
	b.d = min(2*b.d, startupMax)
	return true
}
