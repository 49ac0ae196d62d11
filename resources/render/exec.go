package render

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald/resources"
	"github.com/heraldhq/herald/template"
)

// errAbandoned marks an execution given up on: past its render timeout, or its
// context ended.
var errAbandoned = errors.New("render abandoned")

// slotWaitError is a render that timed out before it started: runaway templates held
// every CPU slot. It read nothing, so no watch would bring the change that renders it
// again: it is retried by itself (retryable), after its backoff. It is abandoned too
// (the embedded Is).
type slotWaitError struct{ abandonedError }

// abandonedError is an execution's own error when it stopped for its timeout: its
// message stays the template's, and errors.Is(err, errAbandoned) holds.
type abandonedError struct{ error }

func (e abandonedError) Is(target error) bool { return target == errAbandoned }

func (rn *Runner) renderTimeout(r *resources.Resource) time.Duration {
	switch {
	case r.RenderTimeout > 0:
		return r.RenderTimeout
	case rn.RenderTimeout > 0:
		return rn.RenderTimeout
	}
	return resources.DefaultRenderTimeout
}

// execute runs one execution of st's template over the cache, at most GOMAXPROCS at
// once, bounded by the resource's render timeout and by ctx (SIGTERM in watch mode).
//
// text/template cannot be interrupted, so the execution runs on its own worker while
// this one waits. The template stops by itself at its next output, store read or
// list-making function once its context ends (template.Options.Context). If it does not
// return even so, it is abandoned: its view of the cache goes dark (the cache's writers
// go on), its CPU slot is handed back (slots.abandon), this returns an error naming the
// timeout, and the resource renders no more until that execution has ended.
func (rn *Runner) execute(ctx context.Context, st *state, opts template.Options) (execResult, error) {
	r := st.r
	if st.running.Load() {
		return execResult{}, abandonedError{fmt.Errorf("render %s: its previous execution, past its render timeout, is still running", r.Src)}
	}
	timeout := rn.renderTimeout(r)
	cause := fmt.Errorf("took longer than render_timeout %s", timeout)
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, cause)
	defer cancel()
	opts.Context = ctx

	sl, err := rn.execs.acquire(ctx)
	if err != nil {
		return execResult{}, slotWaitError{abandonedError{fmt.Errorf("render %s: waiting for a CPU slot: %w", r.Src, err)}}
	}
	done := make(chan execResult, 1)
	view, release := rn.Cache.Acquire()
	defer release()
	st.running.Store(true)
	job := rn.execs.start(sl, func() {
		var res execResult
		if r.Each != nil {
			res.items, res.reads, res.err = r.Each.List(view, opts)
		} else {
			res.out, res.reads, res.err = r.Template.Execute(view, opts)
		}
		st.running.Store(false) // before done: the next render must not see it set
		done <- res
	})
	select {
	case res := <-done:
		return res, res.err
	case <-ctx.Done():
	}
	// Its own checks usually end it at once: wait a moment for that (on a busy
	// machine, its goroutine may wait that long for a CPU).
	grace := time.NewTimer(500 * time.Millisecond)
	defer grace.Stop()
	select {
	case res := <-done:
		return ended(res)
	case <-grace.C:
	}
	if !rn.execs.abandon(job) {
		return ended(<-done) // it returned just now: its result is there
	}
	rn.log().Error("render abandoned: the template ignores its timeout and keeps a CPU busy until it ends",
		"resource", r.Name, "timeout", timeout)
	return execResult{}, abandonedError{fmt.Errorf("render %s: abandoned, as it does not stop by itself: %w", r.Src, context.Cause(ctx))}
}

// ended is the result of an execution that returned after its context ended: its own
// error, if any, counts as abandoned (a stop at its timeout).
func ended(res execResult) (execResult, error) {
	if res.err != nil {
		return execResult{}, abandonedError{res.err}
	}
	return res, nil
}

// execResult is one execution's: the output, or a fan-out resource's items.
type execResult struct {
	out   []byte
	items []template.Item
	reads *template.Reads
	err   error
}
