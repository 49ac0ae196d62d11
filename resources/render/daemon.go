package render

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/resources"
	"github.com/heraldhq/herald/resources/engine"
)

// outcome is a render's: what its sync did, or how long the guard holds it back.
type outcome struct {
	resources.Outcome
	heldFor  time.Duration         // render again after this long
	children []*resources.Resource // a fan-out resource's files, one per item
	sum      string                // a fan-out file's: the SHA-256 of what it wrote
}

type result struct {
	st  *state
	o   outcome
	err error
}

// daemon is Run's state. Only Run's goroutine touches it; renders run on the pool and
// report on done, timers on due.
type daemon struct {
	rn       *Runner
	ctx      context.Context // ends at SIGTERM: no new renders, registry reads abandoned
	workCtx  context.Context // commands and writes run to completion even after SIGTERM
	due      chan *state
	done     chan result
	inflight int
	owed     owed // the current burst's reload commands and directory fsyncs
	rl       *reloader

	// A burst is over when no render is in flight and no resource still waits for its
	// quiescence: written key by key, one burst ends each resource's quiet time at a
	// different moment, and their shared reload must still run once. It waits at most
	// the longest quiescence (Wait.Max) after the burst's first finished render, so a
	// registry that never stops changing cannot starve the reloads.
	pendingSince time.Time     // the first finished render the burst owes a reload or fsync
	overdue      chan struct{} // the bound above has passed
	overdueTimer *time.Timer
}

// Run renders every resource, then keeps their files current until ctx ends: one watch
// per distinct target feeds the cache, a change re-renders only the resources whose last
// render read what changed, after their quiescence. New resource sets arriving on
// updates replace the running ones. When ctx ends, in-flight renders and commands finish
// (bounded by their own timeouts), then Run returns nil.
func (rn *Runner) Run(ctx context.Context, rs []*resources.Resource, updates <-chan resources.ResourceSet) error {
	rn.init()
	d := &daemon{rn: rn, ctx: ctx, workCtx: context.WithoutCancel(ctx),
		due: make(chan *state, 64), done: make(chan result, 64), rl: &reloader{rn: rn},
		overdue: make(chan struct{}, 1)}
	defer rn.eng.Stop()
	d.start(rs)

	var tick <-chan time.Time
	if rn.Interval > 0 {
		t := time.NewTicker(rn.Interval)
		defer t.Stop()
		tick = t.C
	}
	var beats <-chan time.Time
	if rn.Beat != nil {
		t := time.NewTicker(cmp.Or(rn.BeatEvery, 5*time.Second))
		defer t.Stop()
		beats = t.C
	}
	var rereading sync.WaitGroup
	defer rereading.Wait()

	for {
		select {
		case <-ctx.Done():
			d.finish()
			return nil
		case ev := <-rn.eng.Events():
			d.events(ev)
		case st := <-d.due:
			if rn.current(st) {
				d.dispatch(st)
			}
		case res := <-d.done:
			d.finished(res)
		case <-d.overdue:
			if d.inflight == 0 {
				d.burstOver()
			}
		case set := <-updates:
			d.flushRecords(true) // a replaced fan-out resource's successor reads it
			rn.replace(set, d.add)
			rn.pruneWatches()
		case <-beats:
			d.beat()
		case <-tick:
			rereading.Go(func() { rn.eng.Reread(ctx) })
		}
	}
}

// start reads every declared key in one consistent read before the first renders, so
// they all see one revision and share one watch per prefix, then renders every
// resource. If the registry is down, the renders fail and retry with backoff.
func (d *daemon) start(rs []*resources.Resource) {
	var declared []backends.Target
	for _, r := range rs {
		declared = append(declared, r.Targets()...)
	}
	if err := d.rn.ensure(d.ctx, declared, true); err != nil {
		d.rn.log().Warn("registry not reachable; keeping the files as they are and retrying", "err", err)
	}
	for _, r := range rs {
		d.add(r, "start")
	}
}

// add starts running a resource (new, or a new version of one).
func (d *daemon) add(r *resources.Resource, why string) {
	st := &state{r: r, why: why, retry: engine.RetryBackoff()}
	if r.Each != nil {
		d.rn.newFanout(st, why == "start")
	}
	d.rn.mu.Lock()
	d.rn.states[r.Name] = st
	d.rn.targetsMoved = true // it may replace a state whose targets it does not share
	d.rn.mu.Unlock()
	d.dispatch(st)
}

// dispatch renders st now, or once more after the render in flight.
func (d *daemon) dispatch(st *state) {
	if st.why == "" {
		st.why = "start"
	}
	if st.timer != nil {
		st.timer.Stop()
		st.timer = nil
	}
	st.burst.Reset()
	if st.rendering {
		st.again = true
		return
	}
	st.rendering = true
	d.inflight++
	// On a pool worker: its stack has grown to what a render and a sync need.
	d.rn.syncs.submit(func() {
		o, err := d.rn.renderAndSync(d.workCtx, d.ctx, st, true)
		d.done <- result{st, o, err}
	})
}

// schedule renders st after delay (now when delay <= 0).
func (d *daemon) schedule(st *state, delay time.Duration) {
	if delay <= 0 {
		d.dispatch(st)
		return
	}
	if st.timer != nil {
		st.timer.Stop()
	}
	st.timer = time.AfterFunc(delay, func() {
		select {
		case d.due <- st:
		case <-d.ctx.Done():
		}
	})
}

// changed schedules st after its quiescence: Wait.Min after the last change, at most
// Wait.Max after the first of the burst.
func (d *daemon) changed(st *state, why string) {
	if !st.burst.Started() && !st.rendering {
		st.why = why
	}
	w := d.wait(st)
	d.schedule(st, st.burst.Change(w.Min, w.Max, time.Now()))
}

// wait is st's quiescence: its own, or the runner's.
func (d *daemon) wait(st *state) resources.Wait {
	if st.r.Wait == (resources.Wait{}) {
		return d.rn.Wait
	}
	return st.r.Wait
}

// quiescing is how long the burst's end may still wait for resources whose changes
// wait for their quiescence (0: none does).
func (d *daemon) quiescing() time.Duration {
	var longest time.Duration
	for _, st := range d.rn.snapshotStates() {
		if st.burst.Started() && d.rn.current(st) {
			w := d.wait(st)
			longest = max(longest, w.Max, w.Min)
		}
	}
	if longest == 0 {
		return 0
	}
	return longest - time.Since(d.pendingSince)
}

// events folds everything already queued into this burst, then schedules the resources
// whose last render read what changed.
func (d *daemon) events(ev backends.Event) {
	rn := d.rn
	evs := []backends.Event{ev}
	for more := true; more && len(evs) < 4096; {
		select {
		case ev := <-rn.eng.Events():
			evs = append(evs, ev)
		default:
			more = false
		}
	}
	changes := rn.Cache.ApplyAll(evs)
	rn.Metrics.cacheKeys(rn.Cache.Len())
	ids := make([]string, len(changes))
	for i, ch := range changes {
		if ch.Other {
			ids[i] = ch.Target.ID()
		}
	}
	touched := map[*state]string{}
	for _, st := range rn.snapshotStates() {
		if why := rn.touched(st, changes, ids); why != "" {
			touched[st] = why
		}
	}
	for st, why := range touched {
		if _, relisting := touched[st.parent]; st.parent != nil && relisting {
			// Its item may be gone with this change: render after the new list, not
			// into a missing key. afterList.
			st.afterList = why
			continue
		}
		d.changed(st, why)
	}
}

// afterList renders the files of a fan-out resource that waited for its new list.
func (d *daemon) afterList(p *state) {
	for _, c := range p.fan.children {
		if c.afterList != "" {
			why := c.afterList
			c.afterList = ""
			d.changed(c, why)
		}
	}
}

// collect remembers what a finished render owes the end of its burst.
func (d *daemon) collect(o outcome) {
	d.owed.add(o)
	if d.pendingSince.IsZero() && !d.owed.empty() {
		d.pendingSince = time.Now()
	}
}

// owed is what finished renders owe the end of their burst: each distinct reload
// command and each directory to fsync, in the order they came.
type owed struct{ reloads, dirs []string }

func (w *owed) add(o outcome) {
	if o.Reload != "" && !slices.Contains(w.reloads, o.Reload) {
		w.reloads = append(w.reloads, o.Reload)
	}
	if o.Dir != "" && !slices.Contains(w.dirs, o.Dir) {
		w.dirs = append(w.dirs, o.Dir)
	}
}

func (w *owed) empty() bool { return len(w.reloads) == 0 && len(w.dirs) == 0 }

// finished handles a render's end: again if asked meanwhile, a retry, or a hold; the
// burst's end when it was the last in flight.
func (d *daemon) finished(res result) {
	d.inflight--
	st := res.st
	st.rendering = false
	d.collect(res.o)
	if st.parent != nil {
		d.childDone(st, res.o)
	}
	switch {
	case !d.rn.current(st):
	case st.again:
		st.again = false
		d.dispatch(st)
	case retryable(res.err):
		// The registry unreachable, or the file could not be written: dest is stale
		// until a retry, with backoff, succeeds.
		st.why = "retry after: " + res.err.Error()
		d.schedule(st, st.retry.Next())
	case res.err == nil:
		st.retry.Reset()
		if res.o.heldFor > 0 {
			// A change meanwhile renders sooner; this one writes the smaller list if it
			// is still there when the hold is over.
			st.why = "hold over for a shrunken service list"
			d.schedule(st, res.o.heldFor)
		} else if st.fan != nil {
			d.fanout(st, res.o.children)
		}
	}
	if st.fan != nil && res.o.heldFor == 0 && d.rn.current(st) {
		d.afterList(st)
	}
	if d.inflight == 0 {
		if left := d.quiescing(); left > 0 && d.ctx.Err() == nil {
			d.overdueAfter(left)
		} else {
			d.burstOver()
		}
		d.rn.pruneWatches()
		d.beat()
	}
}

// burstOver makes the burst's renames durable, then runs each distinct reload command
// once for it.
func (d *daemon) burstOver() {
	d.pendingSince = time.Time{}
	if d.overdueTimer != nil {
		d.overdueTimer.Stop()
	}
	select {
	case <-d.overdue: // fired for this burst, before the timer could be stopped
	default:
	}
	d.rn.Syncer.SyncDirs(d.owed.dirs)
	d.owed.dirs = d.owed.dirs[:0]
	d.flushRecords(d.ctx.Err() != nil)
	if len(d.owed.reloads) > 0 {
		timeouts := d.rn.reloadTimeouts()
		for _, cmd := range d.owed.reloads {
			d.rl.request(d.workCtx, cmd, timeouts[cmd])
		}
	}
	d.owed.reloads = d.owed.reloads[:0]
	d.rn.mu.Lock()
	d.rn.bursts++
	d.rn.mu.Unlock()
}

// finish ends Run: no more scheduled renders; those in flight end, then their burst's
// reloads run and are waited for.
func (d *daemon) finish() {
	for _, st := range d.rn.snapshotStates() {
		if st.timer != nil {
			st.timer.Stop()
		}
	}
	for d.inflight > 0 {
		res := <-d.done
		d.inflight--
		d.collect(res.o)
		if res.st.parent != nil {
			d.childDone(res.st, res.o)
		}
	}
	d.burstOver()
	d.rl.wait()
}

// overdueAfter ends the burst after left even if resources still wait for quiescence.
func (d *daemon) overdueAfter(left time.Duration) {
	if d.overdueTimer != nil {
		d.overdueTimer.Stop()
	}
	d.overdueTimer = time.AfterFunc(left, func() {
		select {
		case d.overdue <- struct{}{}:
		default:
		}
	})
}

func (d *daemon) beat() {
	if d.rn.Beat != nil {
		d.rn.Beat()
	}
}
