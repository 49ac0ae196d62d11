package backends

import (
	"math/rand/v2"
	"time"
)

// Backoff is herald's one retry delay: it doubles from Min to Max after each failure
// and is drawn at random from the upper half [d/2, d], so that many watches (or herald
// instances) that fail together do not retry in step, yet the wait never exceeds Max.
// Call Reset after a success. Each caller keeps its own bounds: a reconnect waits
// 100 ms to 5 s, a re-read of znodes that moved 1 ms to 50 ms.
//
// The zero value is not useful; set Min and Max (0 < Min <= Max). Not safe for
// concurrent use: one Backoff per retry loop.
type Backoff struct {
	Min, Max time.Duration
	d        time.Duration // the current step, before jitter; 0 before the first retry
}

// Next returns the wait before the next retry and moves one step up.
func (b *Backoff) Next() time.Duration {
	b.d = min(max(2*b.d, b.Min), b.Max)
	return b.d/2 + rand.N(b.d/2+1)
}

// Reset starts over from Min: the operation succeeded.
func (b *Backoff) Reset() { b.d = 0 }

// Retrying reports whether a retry has been drawn since the last Reset.
func (b *Backoff) Retrying() bool { return b.d != 0 }
