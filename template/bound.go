package template

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig/v3"
)

// MaxOutput bounds what one render may produce. A template looping practically forever
// while it prints would otherwise fill memory before its render timeout ends it.
const MaxOutput = 256 << 20

// Stopping a render. text/template cannot be interrupted from outside: an execution ends
// only when it returns or a function it calls fails. So a render's context (Options.
// Context) is checked wherever a long execution spends its time — every write of output,
// every read of the store, and the list-making functions (seq, until, untilStep,
// repeat) — and each then fails with the context's cause. A loop that calls none of them
// (ranging over a list already made, printing nothing) cannot be stopped: its caller
// stops waiting for it (see the runner's render_timeout) and it runs on until it ends.

// alive returns the cause once the render's context has ended, else nil.
func (s *execState) alive() error {
	if s.done == nil {
		return nil
	}
	select {
	case <-s.done:
		return fmt.Errorf("stopped: %w", context.Cause(s.ctx))
	default:
		return nil
	}
}

// outWriter is a render's output: bounded, and failing once the render is stopped.
type outWriter struct {
	buf *bytes.Buffer
	st  *execState
}

func (w outWriter) Write(p []byte) (int, error) {
	if err := w.st.alive(); err != nil {
		return 0, err
	}
	if w.buf.Len()+len(p) > MaxOutput {
		return 0, fmt.Errorf("output larger than %d bytes", MaxOutput)
	}
	return w.buf.Write(p)
}

// boundedFuncs replace functions (confd's seq, sprig's until, untilStep and repeat) that
// make a list or string as long as their argument says: bounded like seq, so a corrupt
// registry value cannot exhaust memory, and stopping with the render.
func (s *execState) boundedFuncs() template.FuncMap {
	sp := sprig.TxtFuncMap()
	until := sp["until"].(func(int) []int)
	untilStep := sp["untilStep"].(func(int, int, int) []int)
	return template.FuncMap{
		"seq": func(first, last int) ([]int, error) {
			if err := s.alive(); err != nil {
				return nil, err
			}
			return seq(first, last)
		},
		"until": func(count int) ([]int, error) {
			if err := s.alive(); err != nil {
				return nil, err
			}
			if n := uint64(max(count, -count)); n > maxSeq || count == math.MinInt {
				return nil, fmt.Errorf("until %d: more than %d numbers", count, maxSeq)
			}
			return until(count), nil
		},
		"untilStep": func(start, stop, step int) ([]int, error) {
			if err := s.alive(); err != nil {
				return nil, err
			}
			if n := stepCount(start, stop, step); n > maxSeq {
				return nil, fmt.Errorf("untilStep %d %d %d: more than %d numbers", start, stop, step, maxSeq)
			}
			return untilStep(start, stop, step), nil
		},
		"repeat": func(count int, str string) (string, error) {
			if err := s.alive(); err != nil {
				return "", err
			}
			if count > maxSeq || (count > 0 && len(str) > MaxOutput/count) {
				return "", fmt.Errorf("repeat %d: more than %d copies or %d bytes", count, maxSeq, MaxOutput)
			}
			return strings.Repeat(str, max(count, 0)), nil
		},
	}
}

// stepCount is how many numbers sprig's untilStep makes, exact even where stop-start
// overflows int.
func stepCount(start, stop, step int) uint64 {
	switch {
	case step > 0 && start < stop:
		return (uint64(stop)-uint64(start)-1)/uint64(step) + 1
	case step < 0 && start > stop:
		return (uint64(start)-uint64(stop)-1)/uint64(-int64(step)) + 1
	}
	return 0
}
