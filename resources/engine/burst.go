package engine

import "time"

// Burst is quiescence, for watch and exec alike: a burst of changes is acted on once
// it has been calm for min, or max after its first change (max 0: no bound).
type Burst struct {
	first time.Time // first change of the current burst; zero: none
}

// Change records a change at now and returns how long to wait before acting on the
// burst (<= 0: now).
func (b *Burst) Change(minWait, maxWait time.Duration, now time.Time) time.Duration {
	if b.first.IsZero() {
		b.first = now
	}
	delay := minWait
	if maxWait > 0 {
		delay = min(delay, b.first.Add(maxWait).Sub(now))
	}
	return delay
}

// Started reports whether a burst is waiting to be acted on.
func (b *Burst) Started() bool { return !b.first.IsZero() }

// Reset ends the burst: it is being acted on, or dropped.
func (b *Burst) Reset() { b.first = time.Time{} }
