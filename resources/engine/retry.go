package engine

import (
	"context"
	"errors"
	"time"

	"github.com/heraldhq/herald/backends"
)

// The engine's retry delays, all in one place; each is a backends.Backoff (doubling,
// drawn from the upper half of the step):
//   - a watch a backend gave up on restarts after 100 ms, doubling to 5 s (RewatchBackoff);
//   - a render that could not read the registry (or write its file) is tried again
//     after 1 s, doubling to 30 s (RetryBackoff);
//   - exec's start-up load retries after 100 ms, doubling to 2 s (StartupBackoff).
func RewatchBackoff() backends.Backoff {
	return backends.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
}

// RetryBackoff is the delay of a render that keeps failing for a cause that passes by
// itself (the registry down, a full disk).
func RetryBackoff() backends.Backoff {
	return backends.Backoff{Min: time.Second, Max: 30 * time.Second}
}

// StartupBackoff is exec's delay while the registry cannot be read before the first
// start of the child.
func StartupBackoff() backends.Backoff {
	return backends.Backoff{Min: 100 * time.Millisecond, Max: 2 * time.Second}
}

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

// Sleep waits b's next delay; false when ctx ended first.
func Sleep(ctx context.Context, b *backends.Backoff) bool {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
