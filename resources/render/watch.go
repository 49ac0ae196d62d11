package render

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/resources"
	"github.com/heraldhq/herald/resources/engine"
	"github.com/heraldhq/herald/resources/engine/cache"
)

// retryable reports whether a render failed for a cause that passes by itself (the
// registry down, a write failing), rather than one that waits for a change.
func retryable(err error) bool {
	var slot slotWaitError
	return engine.IsLoadError(err) || resources.IsWriteError(err) || errors.As(err, &slot)
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
// ids[i] is changes[i].Target.ID() for the changes with Other set: computed once per
// batch, not once per resource.
func (rn *Runner) touched(st *state, changes []cache.Change, ids []string) string {
	rn.mu.Lock()
	reads, targets, targetIDs := st.reads, st.targets, st.targetIDs
	rn.mu.Unlock()
	if reads == nil {
		// Its first render has not recorded what it reads yet (services are read
		// even with keys declared) and may have read the cache before this change:
		// render again to be sure.
		return "change before the first render recorded its reads"
	}
	if targets == nil {
		targets = st.r.Targets()
		targetIDs = idsOf(targets)
	}
	for i, ch := range changes {
		if ch.Other {
			if slices.Contains(targetIDs, ids[i]) {
				return "changed " + ids[i]
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
				if t.Kind() == backends.KindPrefix && backends.UnderPrefix(k, t.Prefix) {
					return "changed key " + k
				}
			}
		}
	}
	return ""
}

// idsOf is each target's ID, in order.
func idsOf(ts []backends.Target) []string {
	ids := make([]string, len(ts))
	for i, t := range ts {
		ids[i] = t.ID()
	}
	return ids
}

// replace swaps in a new resource set: new and changed resources render, removed ones
// stop, and resources whose file failed to load keep their previous version.
func (rn *Runner) replace(set resources.ResourceSet, add func(*resources.Resource, string)) {
	next := map[string]*resources.Resource{}
	for _, r := range set.Resources {
		next[r.Name] = r
	}
	rn.mu.Lock()
	rn.loadErr = set.Err
	rn.mu.Unlock()
	for _, st := range rn.snapshotStates() {
		if set.Keeps(st.r.File) {
			rn.log().Warn("resource file invalid; previous version keeps running", "resource", st.r.Name)
			continue
		}
		// A fan-out file goes with its resource, and when the resource changed: the
		// new version lists its items again.
		name := st.r.Name
		if st.r.Parent != "" {
			name = st.r.Parent
		}
		nr := next[name]
		if nr == nil || (st.r.Parent != "" && nr.Fingerprint != st.r.Fingerprint) {
			if st.timer != nil {
				st.timer.Stop()
			}
			rn.mu.Lock()
			delete(rn.states, st.r.Name)
			rn.targetsMoved = true
			rn.mu.Unlock()
			if st.r.Parent == "" {
				rn.log().Info("resource removed", "resource", st.r.Name)
			}
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
	if !rn.targetsMoved {
		return
	}
	need := map[string]bool{}
	for _, st := range rn.states {
		if st.reads == nil {
			// A first render (a new or reloaded resource) has not recorded what it
			// reads yet, and may have read the cache already: dropping a watch now
			// would leave it deaf. The prune after the burst will know.
			return
		}
		ids := st.targetIDs
		if st.targets == nil {
			ids = idsOf(st.r.Targets())
		}
		for _, id := range ids {
			need[id] = true
		}
	}
	rn.targetsMoved = false
	rn.eng.Prune(need)
}

// reloadTimeouts maps each running resource's expanded reload command to the longest
// reload_timeout among the resources sharing it. Each state expands its command once
// (its dest and item never change): with 1,000 fan-out files, a burst would otherwise
// parse 1,000 commands per reload.
func (rn *Runner) reloadTimeouts() map[string]time.Duration {
	m := map[string]time.Duration{}
	for _, st := range rn.snapshotStates() {
		if !st.reloadKnown {
			st.reloadCmd, _ = resources.ExpandReload(st.r, st.r.Dest, "")
			st.reloadKnown = true
		}
		m[st.reloadCmd] = max(m[st.reloadCmd], st.r.ReloadTimeout)
	}
	return m
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
