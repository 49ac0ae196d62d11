package resources

import (
	"cmp"
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/resources/engine"
	"github.com/heraldhq/herald/resources/engine/cache"
)

// ResourceSet is a fresh load of the resource files, for hot reload. Resources of files
// listed in Failed, or below a directory in FailedDirs (conf.d itself when it could not
// be read at all), keep running in their previous version.
type ResourceSet struct {
	Resources  []*Resource
	Failed     map[string]bool // by resource file
	FailedDirs []string
	// Err is what the load found wrong (nil: nothing); /healthz reports it until a
	// load succeeds.
	Err error
}

// NewResourceSet sorts a Load's result for a hot reload: which files and directories
// failed, so that their resources keep their previous version.
func NewResourceSet(rs []*Resource, err error) ResourceSet {
	set := ResourceSet{Resources: rs, Failed: map[string]bool{}, Err: err}
	for _, e := range flattenErrors(err) {
		var re *Error
		switch {
		case !errors.As(e, &re):
		case re.Dir:
			set.FailedDirs = append(set.FailedDirs, re.File)
		default:
			set.Failed[re.File] = true
		}
	}
	return set
}

// keeps reports whether a resource file failed in this load, itself or through its
// directory.
func (set ResourceSet) keeps(file string) bool {
	if set.Failed[file] {
		return true
	}
	for _, d := range set.FailedDirs {
		if strings.HasPrefix(file, d+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// flattenErrors unpacks errors.Join trees.
func flattenErrors(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flattenErrors(e)...)
		}
		return out
	}
	return []error{err}
}

// retryable reports whether a render failed for a cause that passes by itself (the
// registry down, a write failing), rather than one that waits for a change.
func retryable(err error) bool {
	var we writeError
	return engine.IsLoadError(err) || errors.As(err, &we)
}

type result struct {
	st  *state
	o   Outcome
	err error
}

// Run renders every resource, then keeps their files current until ctx ends: one watch
// per distinct target feeds the cache, a change re-renders only the resources whose last
// render read what changed, after their quiescence. New resource sets arriving on
// updates replace the running ones. When ctx ends, in-flight renders and commands finish
// (bounded by their own timeouts), then Run returns nil.
func (rn *Runner) Run(ctx context.Context, rs []*Resource, updates <-chan ResourceSet) error {
	rn.init()
	var (
		due      = make(chan *state, 64)
		done     = make(chan result, 64)
		inflight int
		pending  []string // reload commands of the current burst, in order
		dirs     []string // directories whose fsync the burst still owes
		rl       = &reloader{rn: rn}
		// Commands and writes run to completion even after SIGTERM.
		workCtx = context.WithoutCancel(ctx)
	)
	defer rn.eng.Stop()

	dispatch := func(st *state) {
		if st.why == "" {
			st.why = "start"
		}
		if st.timer != nil {
			st.timer.Stop()
			st.timer = nil
		}
		st.first = time.Time{}
		if st.rendering {
			st.again = true
			return
		}
		st.rendering = true
		inflight++
		// On a pool worker: its stack has grown to what a render and a sync need.
		rn.syncs.submit(func() {
			o, err := rn.renderAndSync(workCtx, ctx, st, true)
			done <- result{st, o, err}
		})
	}
	schedule := func(st *state, delay time.Duration) {
		if delay <= 0 {
			dispatch(st)
			return
		}
		if st.timer != nil {
			st.timer.Stop()
		}
		st.timer = time.AfterFunc(delay, func() {
			select {
			case due <- st:
			case <-ctx.Done():
			}
		})
	}
	changed := func(st *state, why string) {
		if st.first.IsZero() && !st.rendering {
			st.why = why
		}
		w := st.r.Wait
		if w == (Wait{}) {
			w = rn.Wait
		}
		now := time.Now()
		if st.first.IsZero() {
			st.first = now
		}
		delay := w.Min
		if w.Max > 0 {
			delay = min(delay, st.first.Add(w.Max).Sub(now))
		}
		schedule(st, delay)
	}
	add := func(r *Resource, why string) {
		st := &state{r: r, why: why}
		rn.mu.Lock()
		rn.states[r.Name] = st
		rn.mu.Unlock()
		dispatch(st)
	}
	// One consistent read of every declared key before the first renders, so they
	// all see one revision and share one watch per prefix. If the registry is down,
	// the renders below fail and retry with backoff.
	var declared []backends.Target
	for _, r := range rs {
		declared = append(declared, r.Targets()...)
	}
	if err := rn.ensure(ctx, declared, true); err != nil {
		rn.log().Warn("registry not reachable; keeping the files as they are and retrying", "err", err)
	}
	for _, r := range rs {
		add(r, "start")
	}

	var tick <-chan time.Time
	if rn.Interval > 0 {
		t := time.NewTicker(rn.Interval)
		defer t.Stop()
		tick = t.C
	}
	beat := func() {
		if rn.Beat != nil {
			rn.Beat()
		}
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
			for _, st := range rn.snapshotStates() {
				if st.timer != nil {
					st.timer.Stop()
				}
			}
			for inflight > 0 {
				res := <-done
				inflight--
				if res.o.Reload != "" && !slices.Contains(pending, res.o.Reload) {
					pending = append(pending, res.o.Reload)
				}
				if res.o.Dir != "" && !slices.Contains(dirs, res.o.Dir) {
					dirs = append(dirs, res.o.Dir)
				}
			}
			SyncDirs(dirs)
			for _, cmd := range pending {
				rl.request(workCtx, cmd, rn.reloadTimeoutFor(cmd))
			}
			rl.wait()
			return nil

		case ev := <-rn.eng.Events():
			// Fold everything already queued into this burst before deciding what to render.
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
			for _, st := range rn.snapshotStates() {
				if why := rn.touched(st, changes); why != "" {
					changed(st, why)
				}
			}

		case st := <-due:
			if rn.current(st) {
				dispatch(st)
			}

		case res := <-done:
			inflight--
			st := res.st
			st.rendering = false
			if res.o.Reload != "" && !slices.Contains(pending, res.o.Reload) {
				pending = append(pending, res.o.Reload)
			}
			if res.o.Dir != "" && !slices.Contains(dirs, res.o.Dir) {
				dirs = append(dirs, res.o.Dir)
			}
			switch {
			case !rn.current(st):
			case st.again:
				st.again = false
				dispatch(st)
			case retryable(res.err):
				// The registry unreachable, or the file could not be written:
				// dest is stale until a retry, with backoff, succeeds.
				st.retry = engine.RetryAfter(st.retry)
				st.why = "retry after: " + res.err.Error()
				schedule(st, engine.Jitter(st.retry))
			case res.err == nil:
				st.retry = 0
				if res.o.heldFor > 0 {
					// A change meanwhile renders sooner; this one writes the smaller
					// list if it is still there when the hold is over.
					st.why = "hold over for a shrunken service list"
					schedule(st, res.o.heldFor)
				}
			}
			if inflight == 0 {
				// The burst is over: its renames are made durable, then each distinct
				// reload command runs once for it.
				SyncDirs(dirs)
				dirs = dirs[:0]
				for _, cmd := range pending {
					rl.request(workCtx, cmd, rn.reloadTimeoutFor(cmd))
				}
				pending = pending[:0]
				rn.pruneWatches()
				beat()
			}

		case set := <-updates:
			rn.replace(set, add)
			rn.pruneWatches()

		case <-beats:
			beat()

		case <-tick:
			rereading.Add(1)
			go func() {
				defer rereading.Done()
				rn.eng.Reread(ctx)
			}()
		}
	}
}

// current reports whether st is still the running version of its resource.
func (rn *Runner) current(st *state) bool {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.states[st.r.Name] == st
}

func (rn *Runner) snapshotStates() []*state {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	out := make([]*state, 0, len(rn.states))
	for _, st := range rn.states {
		out = append(out, st)
	}
	return out
}

// touched reports what, among the changes, can alter st's output ("" for nothing).
func (rn *Runner) touched(st *state, changes []cache.Change) string {
	rn.mu.Lock()
	reads, targets := st.reads, st.targets
	rn.mu.Unlock()
	if reads == nil {
		// Its first render has not recorded what it reads yet (services are read
		// even with keys declared) and may have read the cache before this change:
		// render again to be sure.
		return "change before the first render recorded its reads"
	}
	if targets == nil {
		targets = st.r.Targets()
	}
	for _, ch := range changes {
		if ch.Other {
			for _, t := range targets {
				if t.ID() == ch.Target.ID() {
					return "changed " + t.ID()
				}
			}
			continue
		}
		for _, k := range ch.Keys {
			if reads != nil {
				if reads.Touches(k) {
					return "changed key " + k
				}
				continue
			}
			for _, t := range targets {
				if t.Service == nil && !t.ServiceNames && backends.UnderPrefix(k, t.Prefix) {
					return "changed key " + k
				}
			}
		}
	}
	return ""
}

// replace swaps in a new resource set: new and changed resources render, removed ones
// stop, and resources whose file failed to load keep their previous version.
func (rn *Runner) replace(set ResourceSet, add func(*Resource, string)) {
	next := map[string]*Resource{}
	for _, r := range set.Resources {
		next[r.Name] = r
	}
	rn.mu.Lock()
	rn.loadErr = set.Err
	rn.mu.Unlock()
	for _, st := range rn.snapshotStates() {
		if set.keeps(st.r.File) {
			rn.log().Warn("resource file invalid; previous version keeps running", "resource", st.r.Name)
			continue
		}
		if _, ok := next[st.r.Name]; !ok {
			if st.timer != nil {
				st.timer.Stop()
			}
			rn.mu.Lock()
			delete(rn.states, st.r.Name)
			rn.mu.Unlock()
			rn.log().Info("resource removed", "resource", st.r.Name)
		}
	}
	for _, r := range set.Resources {
		rn.mu.Lock()
		old := rn.states[r.Name]
		rn.mu.Unlock()
		if old != nil && old.r.Fingerprint == r.Fingerprint {
			continue
		}
		if old != nil && old.timer != nil {
			old.timer.Stop()
		}
		rn.log().Info("resource loaded", "resource", r.Name, "new", old == nil)
		add(r, "resource file changed")
	}
}

// pruneWatches stops watches that no resource reads any more.
func (rn *Runner) pruneWatches() {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	need := map[string]bool{}
	for _, st := range rn.states {
		if st.reads == nil {
			// A first render (a new or reloaded resource) has not recorded what it
			// reads yet, and may have read the cache already: dropping a watch now
			// would leave it deaf. The prune after the burst will know.
			return
		}
		ts := st.targets
		if ts == nil {
			ts = st.r.Targets()
		}
		for _, t := range ts {
			need[t.ID()] = true
		}
	}
	rn.eng.Prune(need)
}

func (rn *Runner) reloadTimeoutFor(cmd string) time.Duration {
	var rs []*Resource
	for _, st := range rn.snapshotStates() {
		rs = append(rs, st.r)
	}
	return rn.reloadTimeout(cmd, rs)
}

// reloader runs each reload command at most once at a time; a request while it runs is
// folded into one more run afterwards, so a burst never becomes a reload storm.
type reloader struct {
	rn      *Runner
	mu      sync.Mutex
	running map[string]bool
	again   map[string]bool
	wg      sync.WaitGroup
}

func (l *reloader) request(ctx context.Context, cmd string, timeout time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.running == nil {
		l.running, l.again = map[string]bool{}, map[string]bool{}
	}
	if l.running[cmd] {
		l.again[cmd] = true
		return
	}
	l.running[cmd] = true
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			// A failing reload is logged and counted; it never stops the daemon.
			_ = l.rn.reload(ctx, cmd, timeout)
			l.mu.Lock()
			if !l.again[cmd] {
				l.running[cmd] = false
				l.mu.Unlock()
				return
			}
			l.again[cmd] = false
			l.mu.Unlock()
		}
	}()
}

func (l *reloader) wait() { l.wg.Wait() }
