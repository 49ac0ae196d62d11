// Package render renders resources from the engine's cache and syncs their files: once
// (herald render, herald template) or as the watch daemon (Runner.Run), with its worker
// pools, empty-drop guard, one reload per burst, metrics and /healthz status.
package render

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/resources"
	"github.com/heraldhq/herald/resources/engine"
	"github.com/heraldhq/herald/resources/engine/cache"
	"github.com/heraldhq/herald/template"
)

// Runner drives many resources over one backend and one cache.
type Runner struct {
	Store    backends.Store
	Cache    *cache.Cache
	Syncer   *resources.Syncer
	Log      *slog.Logger
	Metrics  *Metrics       // optional
	Wait     resources.Wait // global quiescence, for resources without their own
	Interval time.Duration  // watch mode: also re-read everything this often (0: never)
	// ReadTimeout bounds RenderOnce's reads from the registry (0: only ctx). It never
	// bounds check and reload commands: those have their own timeouts.
	ReadTimeout time.Duration
	// RenderTimeout bounds one template execution of a resource without its own
	// render_timeout (0: DefaultRenderTimeout).
	RenderTimeout time.Duration
	// Workers bounds the resources in flight at once. Most of a sync is waiting on
	// fsync, so the default is generous (64); template execution is held to Execs at
	// a time and check commands to Syncer.Checks.
	Workers int
	// Execs bounds the template executions at once (default: GOMAXPROCS when Run
	// starts).
	Execs int
	// Emit, when set, receives each successful render instead of Syncer (herald template
	// prints to stdout) and reports whether the output changed.
	Emit func(r *resources.Resource, content []byte) (changed bool, err error)
	// Guard holds back watch-mode renders whose service lists shrink too far at once;
	// nil is DefaultGuard. Resources may override it field by field.
	Guard *resources.Guard
	// Beat, when set, is called from Run's loop itself after each burst of renders ends
	// and every BeatEvery (default 5 s): a caller learns the loop is alive (systemd's
	// watchdog) and when to report progress. It must return quickly.
	Beat      func()
	BeatEvery time.Duration

	mu          sync.Mutex
	noCatalog   error // why the catalog, read only for herald's own checks, cannot be read
	noCatalogAt time.Time
	states      map[string]*state // by resource name
	bursts      uint64            // ended, for Progress
	eng         *engine.Engine    // loads, watches and settles renders
	syncs       *executor         // renders with their syncs, workers() at once
	execs       *slots            // template executions, Execs at once (see execute)
	loadErr     error             // what the last load of the resource files found wrong
	// targetsMoved: a state's targets changed, or a state went, since the last prune of
	// the watches (pruneWatches is O(states): with 1,000 files, most of a burst's work).
	targetsMoved bool
}

type state struct {
	r         *resources.Resource
	reads     *template.Reads
	targets   []backends.Target
	targetIDs []string // targets' IDs, for touched

	// owned by the watch loop
	why       string // what scheduled the next render, for its log line
	rendering bool
	again     bool
	burst     engine.Burst // changes waiting for quiescence
	timer     *time.Timer
	retry     backends.Backoff // of a render that failed for a passing cause

	// fan-out (fanout.go), owned by the watch loop
	fan    *fanout // a fan-out resource's files and record
	parent *state  // a fan-out file's resource
	// afterList: what changed for a fan-out file while its resource lists again; it
	// renders after the new list (its item may be gone).
	afterList string
	// reloadCmd is r's reload command expanded, once reloadKnown (reloadTimeouts).
	reloadCmd   string
	reloadKnown bool

	// running is set while an execution that outlived its render timeout still runs:
	// the next render fails at once rather than pile up another one.
	running atomic.Bool

	// guarded by Runner.mu, for /healthz
	rendered bool
	lastOK   time.Time
	lastErr  error

	// guarded by Runner.mu: the empty-drop guard and absent services (guard.go)
	written   map[string]int // instances per service query in the last written render
	heldWhy   string         // why the current render is held back, "" when not
	heldSince time.Time
	missing   []string // services read that the catalog does not have
}

// Status is one resource's health, for /healthz.
type Status struct {
	Name        string    `json:"name"`
	Dest        string    `json:"dest"`
	Rendered    bool      `json:"rendered"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	LastError   string    `json:"last_error,omitempty"` // Summary: no values, no output
	// Behind: the last render or write failed, so dest may not hold what the registry
	// says (it is retried, or waits for a change).
	Behind bool `json:"behind,omitempty"`
	// Held says why the latest render is held back by the empty-drop guard.
	Held string `json:"held,omitempty"`
	// MissingServices are services the template reads that the registry does not have.
	MissingServices []string `json:"missing_services,omitempty"`
}

func (rn *Runner) log() *slog.Logger {
	if rn.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return rn.Log
}

func (rn *Runner) init() {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	if rn.states == nil {
		rn.states = make(map[string]*state)
		rn.syncs = newExecutor(rn.workers())
		rn.execs = newSlots(cmp.Or(rn.Execs, runtime.GOMAXPROCS(0)))
	}
	if rn.Cache == nil {
		rn.Cache = cache.New()
	}
	if rn.eng == nil {
		rn.eng = engine.New(rn.Store, rn.Cache, rn.Log)
	}
	if rn.Syncer == nil {
		rn.Syncer = &resources.Syncer{Log: rn.Log}
	}
	rn.Syncer.DeferDirSync = true
}

// SetLoadError records what loading the resource files found wrong (nil: nothing), for
// /healthz; a hot reload's ResourceSet replaces it.
func (rn *Runner) SetLoadError(err error) {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	rn.loadErr = err
}

// LoadError is what the last load of the resource files found wrong, nil when nothing.
func (rn *Runner) LoadError() error {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.loadErr
}

// Statuses reports every resource's state, sorted by name.
func (rn *Runner) Statuses() []Status {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	out := make([]Status, 0, len(rn.states))
	for _, st := range rn.states {
		s := Status{Name: st.r.Name, Dest: st.r.Dest, Rendered: st.rendered, LastSuccess: st.lastOK,
			Held: st.heldWhy, MissingServices: slices.Clone(st.missing)}
		if st.lastErr != nil {
			s.LastError, s.Behind = resources.Summary(st.lastErr), true
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Status) int { return compareStrings(a.Name, b.Name) })
	return out
}

// Progress is what a status line needs, without building every Status (it runs after
// each burst; with 1,000 files, sorting them all would be most of a burst's work).
type Progress struct {
	Rendered, Total int
	Failing         []string // resources whose last render or write failed, sorted
	// Bursts counts the bursts of renders that have ended: unchanged between two beats,
	// the runner rendered nothing in between.
	Bursts uint64
}

// Progress counts the resources rendered and names the failing ones.
func (rn *Runner) Progress() Progress {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	p := Progress{Total: len(rn.states), Bursts: rn.bursts}
	for _, st := range rn.states {
		if st.rendered {
			p.Rendered++
		}
		if st.lastErr != nil {
			p.Failing = append(p.Failing, st.r.Name)
		}
	}
	slices.Sort(p.Failing)
	return p
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// RenderOnce renders every resource once from one consistent read, syncs each, then runs
// each distinct reload command once. It processes every resource even when some fail,
// and returns an error naming each failure.
func (rn *Runner) RenderOnce(ctx context.Context, rs []*resources.Resource) error {
	rn.init()
	readCtx := ctx
	if rn.ReadTimeout > 0 {
		var cancel context.CancelFunc
		readCtx, cancel = context.WithTimeout(ctx, rn.ReadTimeout)
		defer cancel()
	}
	var declared []backends.Target
	for _, r := range rs {
		declared = append(declared, r.Targets()...)
		rn.mu.Lock()
		rn.states[r.Name] = &state{r: r, retry: engine.RetryBackoff()}
		rn.mu.Unlock()
	}
	if err := rn.ensure(readCtx, declared, false); err != nil {
		return err
	}
	rs, fans, errs := rn.expandOnce(ctx, readCtx, rs)
	results := rn.syncOnce(ctx, readCtx, rs)
	var w owed
	sums := make(map[string]string, len(rs))
	for i, r := range rs {
		o, err := results[i].o, results[i].err
		sums[r.Name] = o.sum
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.Name, err))
			o.Reload = "" // a failed render owes its directory's fsync, never a reload
		}
		w.add(o)
	}
	for _, f := range fans {
		outs, err := rn.sweepOnce(f, sums)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.parent.Name, err))
		}
		for _, o := range outs {
			w.add(o)
		}
	}
	rn.Syncer.SyncDirs(w.dirs)
	timeouts := map[string]time.Duration{}
	for _, r := range rs {
		cmd, _ := resources.ExpandReload(r, r.Dest, "")
		timeouts[cmd] = max(timeouts[cmd], r.ReloadTimeout)
	}
	for _, cmd := range w.reloads {
		if err := rn.reload(ctx, cmd, timeouts[cmd]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

type onceResult struct {
	o   outcome
	err error
}

// syncOnce renders and syncs rs in parallel (their fsyncs overlap) and returns the
// results in resource order, so errors and reloads come out the same on every run. A
// dry run stays sequential so its diffs print in order.
func (rn *Runner) syncOnce(ctx, readCtx context.Context, rs []*resources.Resource) []onceResult {
	results := make([]onceResult, len(rs))
	workers := rn.workers()
	if rn.Syncer.DryRun {
		workers = 1
	}
	pool := rn.syncs
	if workers != rn.workers() {
		pool = newExecutor(workers)
	}
	var wg sync.WaitGroup
	for i, r := range rs {
		st := rn.states[r.Name]
		wg.Add(1)
		pool.submit(func() {
			defer wg.Done()
			o, err := rn.renderAndSync(ctx, readCtx, st, false)
			results[i] = onceResult{o, err}
		})
	}
	wg.Wait()
	return results
}

func (rn *Runner) reload(ctx context.Context, cmd string, timeout time.Duration) error {
	start := time.Now()
	out, err := resources.RunCommand(ctx, "reload_cmd", cmd, timeout)
	rn.Metrics.reload(err, time.Since(start))
	if err != nil {
		rn.log().Error("reload failed", "cmd", cmd, "err", err)
		return err
	}
	rn.log().Info("reloaded", "cmd", cmd, "duration", time.Since(start).Round(time.Millisecond), "output", out)
	return nil
}

// renderAndSync renders one resource from the cache, loading whatever the template turns
// out to read that is not loaded yet, then syncs the result.
// Reads from the registry use readCtx, the write and its commands ctx: in watch mode
// SIGTERM abandons a render still waiting for an unreachable registry (dest stays as it
// is) but lets one that is writing or checking finish.
func (rn *Runner) renderAndSync(ctx, readCtx context.Context, st *state, watching bool) (outcome, error) {
	r := st.r
	start := time.Now()
	out, items, reads, err := rn.settle(ctx, readCtx, st, watching)
	if reads != nil {
		targets := mergeTargets(r.Targets(), reads.Targets())
		rn.mu.Lock()
		ids := idsOf(targets)
		if !slices.Equal(st.targetIDs, ids) {
			rn.targetsMoved = true
		}
		st.reads, st.targets, st.targetIDs = reads, targets, ids
		rn.mu.Unlock()
	}
	if err == nil {
		err = rn.absent(st, reads, watching)
	}
	if err != nil {
		rn.Metrics.render(r.Name, "error", time.Since(start))
		rn.fail(st, err)
		return outcome{}, err
	}
	if r.Each != nil && reads != nil {
		reads.Counts = maps.Clone(reads.Counts)
		if reads.Counts == nil {
			reads.Counts = map[string]int{}
		}
		reads.Counts[eachCountKey(r)] = len(items)
	}
	if watching {
		if left := rn.guard(st, reads); left > 0 {
			rn.Metrics.render(r.Name, "held", time.Since(start))
			return outcome{heldFor: left}, nil
		}
	}
	var o outcome
	if r.Each != nil {
		if o.children, err = rn.children(r, items); err != nil {
			rn.Metrics.render(r.Name, "error", time.Since(start))
			rn.fail(st, err)
			return outcome{}, err
		}
		rn.synced(ctx, st, reads, false, start)
		return o, nil
	}
	if rn.Emit != nil {
		o.Changed, err = rn.Emit(r, out)
	} else {
		o.Outcome, err = rn.Syncer.Sync(ctx, r, out)
	}
	if err != nil {
		var ce *resources.CommandError
		if errors.As(err, &ce) {
			rn.Metrics.checkFailed(r.Name)
		}
		rn.Metrics.render(r.Name, "error", time.Since(start))
		rn.fail(st, err)
		return o, err
	}
	if r.Parent != "" && !rn.Syncer.DryRun {
		o.sum = contentSum(out)
	}
	rn.synced(ctx, st, reads, o.Changed, start)
	return o, nil
}

// settle executes st's template until what it reads is loaded (see engine.Settle).
// A fan-out resource's execution lists its items instead.
func (rn *Runner) settle(ctx, readCtx context.Context, st *state, watching bool) ([]byte, []template.Item, *template.Reads, error) {
	var res execResult
	opts := template.Options{Prefix: st.r.Prefix, Scope: st.r.Scope(), Data: st.r.Item}
	reads, err := rn.eng.Settle(engine.Render{
		// Bounded by its render timeout, not by the registry wait; in watch mode an
		// execution in flight at SIGTERM finishes (within that timeout) like the rest
		// of its render.
		Execute: func() (*template.Reads, error) {
			var err error
			res, err = rn.execute(ctx, st, opts)
			return res.reads, err
		},
		Load: func(missing []backends.Target, reads *template.Reads) error {
			return rn.ensure(readCtx, rn.ensureCatalog(readCtx, missing, reads, watching), watching)
		},
		Final: func(err error) bool { return errors.Is(err, errAbandoned) }, // no second try: it would take as long
		Skip: func(t backends.Target, reads *template.Reads) bool {
			return t.Kind() == backends.KindServiceNames && !reads.ServiceNames && rn.catalogUnreadable()
		},
	})
	return res.out, res.items, reads, err
}

// synced records a render written (or found identical): metrics, the guard's baseline,
// /healthz, and the log line.
func (rn *Runner) synced(ctx context.Context, st *state, reads *template.Reads, changed bool, start time.Time) {
	r := st.r
	result := "unchanged"
	if changed {
		result = "changed"
	}
	rn.Metrics.render(r.Name, result, time.Since(start))
	rn.wrote(st, reads)
	rn.mu.Lock()
	st.rendered, st.lastOK, st.lastErr = true, time.Now(), nil
	rn.mu.Unlock()
	rn.Metrics.success(r.Name)
	lvl := slog.LevelDebug
	if changed {
		lvl = slog.LevelInfo
	}
	why := st.why
	if why == "" {
		why = "start"
	}
	rn.log().Log(ctx, lvl, "rendered", "resource", r.Name, "dest", r.Dest, "changed", changed,
		"reason", why, "dry_run", rn.Syncer.DryRun, "duration", time.Since(start).Round(time.Microsecond))
}

func (rn *Runner) fail(st *state, err error) {
	rn.mu.Lock()
	st.lastErr = err
	rn.mu.Unlock()
	rn.log().Error("render failed; dest left as it was", "resource", st.r.Name, "dest", st.r.Dest, "err", err)
}

func mergeTargets(a, b []backends.Target) []backends.Target {
	seen := map[string]bool{}
	var out []backends.Target
	for _, t := range append(slices.Clone(a), b...) {
		if !seen[t.ID()] {
			seen[t.ID()] = true
			out = append(out, t)
		}
	}
	return out
}

// ensure loads every target not in the cache yet and, in watch mode, watches it.
func (rn *Runner) ensure(ctx context.Context, ts []backends.Target, watching bool) error {
	if err := rn.eng.Ensure(ctx, ts, watching); err != nil {
		return err
	}
	rn.Metrics.cacheKeys(rn.Cache.Len())
	return nil
}

// WatchCount is the number of running watches (one per distinct target).
func (rn *Runner) WatchCount() int {
	if eng := rn.engine(); eng != nil {
		return eng.WatchCount()
	}
	return 0
}

func (rn *Runner) watchIDs() []string { return rn.engine().WatchIDs() }

// engine is nil until Run or RenderOnce starts.
func (rn *Runner) engine() *engine.Engine {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.eng
}

func (rn *Runner) workers() int {
	if rn.Workers > 0 {
		return rn.Workers
	}
	return 64
}
