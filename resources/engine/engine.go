// Package engine turns registry events into settled renders for `herald watch` and
// `herald exec` alike: it loads targets into the cache on demand (all prefixes in one
// consistent read), follows each loaded target with one watch, re-executes a render
// until everything it read is loaded, and holds the retry delays. What to do with a
// settled state (write files and reload, or restart the child) is its caller's business.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/resources/engine/cache"
)

// Engine is safe for concurrent use: renders load what they find missing in parallel.
type Engine struct {
	store  backends.Store
	cache  *cache.Cache
	log    *slog.Logger
	events chan backends.Event

	mu       sync.Mutex
	watching map[string]*watch // by target ID
	wg       sync.WaitGroup    // watch goroutines
}

type watch struct {
	target backends.Target
	cancel context.CancelFunc
}

// New returns an engine reading store into c; log may be nil.
func New(store backends.Store, c *cache.Cache, log *slog.Logger) *Engine {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Engine{store: store, cache: c, log: log, events: make(chan backends.Event, 1024),
		watching: map[string]*watch{}}
}

// Cache is what the engine loads into.
func (e *Engine) Cache() *cache.Cache { return e.cache }

// Events carries what the watches see; the caller applies them to the cache (in bursts,
// as it likes) and decides what to render again.
func (e *Engine) Events() <-chan backends.Event { return e.events }

// Ensure loads every target not in the cache yet — all prefixes in one consistent read —
// and, when watching, starts one watch for each from the revision it was read at.
func (e *Engine) Ensure(ctx context.Context, ts []backends.Target, watching bool) error {
	var prefixes []string
	var others []backends.Target
	for _, t := range ts {
		switch {
		case e.cache.Covered(t):
		case t.Kind() == backends.KindPrefix:
			prefixes = append(prefixes, t.Prefix)
		default:
			others = append(others, t)
		}
	}
	evs, err := e.read(ctx, backends.MinimalPrefixes(prefixes), others)
	if err != nil {
		return err
	}
	e.cache.ApplyAll(evs)
	if watching {
		for _, ev := range evs {
			e.startWatch(ev.Target, ev.Revision)
		}
	}
	return nil
}

// read reads the minimal prefixes in one request and each other target by itself, as
// Full events.
func (e *Engine) read(ctx context.Context, prefixes []string, others []backends.Target) ([]backends.Event, error) {
	var evs []backends.Event
	if len(prefixes) > 0 {
		kvs, rev, err := e.store.Get(ctx, prefixes)
		if err != nil {
			return nil, fmt.Errorf("read %v: %w", prefixes, err)
		}
		for p, sub := range splitByPrefix(kvs, prefixes) {
			evs = append(evs, backends.Event{Target: backends.PrefixTarget(p), Revision: rev, Full: true, KVs: sub})
		}
	}
	for _, t := range others {
		ev, err := e.readOther(ctx, t)
		if err != nil {
			return nil, err
		}
		evs = append(evs, ev)
	}
	return evs, nil
}

// readOther reads a service list, the service catalog or the datacenters.
func (e *Engine) readOther(ctx context.Context, t backends.Target) (backends.Event, error) {
	if t.Kind() == backends.KindDatacenters {
		dl, ok := e.store.(backends.DatacenterLister)
		if !ok {
			return backends.Event{}, errNoDatacenters
		}
		dcs, rev, err := dl.Datacenters(ctx)
		if err != nil {
			return backends.Event{}, fmt.Errorf("read datacenters: %w", err)
		}
		return backends.Event{Target: t, Revision: rev, Full: true, Datacenters: dcs}, nil
	}
	if t.Kind() == backends.KindServiceNames {
		names, rev, err := e.store.ServiceNames(ctx)
		if err != nil {
			return backends.Event{}, fmt.Errorf("read service catalog: %w", err)
		}
		return backends.Event{Target: t, Revision: rev, Full: true, Names: names}, nil
	}
	svcs, rev, err := e.store.Services(ctx, *t.Service)
	if err != nil {
		return backends.Event{}, fmt.Errorf("read service %s: %w", t.Service, err)
	}
	return backends.Event{Target: t, Revision: rev, Full: true, Services: svcs}, nil
}

// errNoDatacenters fails a render calling datacenters on a backend without them, rather
// than giving it a list that is silently empty.
var errNoDatacenters = errors.New("datacenters: this backend has no datacenters (only consul:// has)")

// splitByPrefix assigns each key of one read to the prefix holding it. The prefixes are
// minimal (none under another), so each key has exactly one, found by walking up its
// own path: O(keys x depth) rather than O(keys x prefixes). Every prefix gets an entry,
// empty when nothing lies under it, so its Full event clears what the cache held.
func splitByPrefix(kvs map[string]string, prefixes []string) map[string]map[string]string {
	out := make(map[string]map[string]string, len(prefixes))
	for _, p := range prefixes {
		out[p] = map[string]string{}
	}
	for k, v := range kvs {
		for a := k; ; a = path.Dir(a) {
			if sub, ok := out[a]; ok {
				sub[k] = v
				break
			}
			if a == "/" {
				break
			}
		}
	}
	return out
}

// startWatch follows one target into Events until Stop or Prune ends it.
func (e *Engine) startWatch(t backends.Target, from uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.watching[t.ID()]; ok {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.watching[t.ID()] = &watch{target: t, cancel: cancel}
	e.log.Debug("watching", "target", t.ID(), "from", from) // before the goroutine may change from
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.follow(ctx, t, from)
	}()
}

// follow runs one target's watch. The contract is to retry inside Watch; if a backend
// gives up anyway, it starts over from what the cache holds rather than lose the target.
// Meanwhile renders keep the data they have.
func (e *Engine) follow(ctx context.Context, t backends.Target, from uint64) {
	backoff := RewatchBackoff()
	for {
		err := e.store.Watch(ctx, t, from, e.events)
		if ctx.Err() != nil {
			return
		}
		e.log.Warn("watch ended; restarting", "target", t.ID(), "err", err)
		if !Sleep(ctx, &backoff) {
			return
		}
		if rev, ok := e.cache.Loaded(t); ok {
			from = rev
		}
	}
}

// WatchCount is the number of running watches (one per distinct target).
func (e *Engine) WatchCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.watching)
}

// WatchIDs lists the watched targets' IDs, sorted.
func (e *Engine) WatchIDs() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var ids []string
	for id := range e.watching {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Prune stops the watches of targets not in need (by ID) and drops their data from the
// cache, keeping keys still under another loaded prefix.
func (e *Engine) Prune(need map[string]bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for id, w := range e.watching {
		if need[id] && !e.redundant(w.target) {
			continue
		}
		if !need[id] && !e.redundant(w.target) && coveredBy(w.target, need) {
			// Not named any more, but its keys are still read through a broader target
			// whose watch has not started yet; keep it until that one runs.
			continue
		}
		w.cancel()
		delete(e.watching, id)
		e.cache.Forget(w.target)
		e.log.Debug("stopped watching", "target", id)
	}
}

// redundant reports whether another running watch covers a prefix target: concurrent
// first renders may have started a narrow watch before the broad one. Caller holds mu.
func (e *Engine) redundant(t backends.Target) bool {
	if t.Kind() != backends.KindPrefix {
		return false
	}
	for id, w := range e.watching {
		if id != t.ID() && w.target.Kind() == backends.KindPrefix && backends.UnderPrefix(t.Prefix, w.target.Prefix) {
			return true
		}
	}
	return false
}

// coveredBy reports whether a prefix target lies under a needed prefix.
func coveredBy(t backends.Target, need map[string]bool) bool {
	if t.Kind() != backends.KindPrefix {
		return false
	}
	for id := range need {
		if strings.HasPrefix(id, "prefix:") && backends.UnderPrefix(t.Prefix, id[len("prefix:"):]) {
			return true
		}
	}
	return false
}

// Stop ends every watch and waits for them.
func (e *Engine) Stop() {
	e.mu.Lock()
	for id, w := range e.watching {
		w.cancel()
		delete(e.watching, id)
	}
	e.mu.Unlock()
	e.wg.Wait()
}

// Reread reads every watched target again and feeds the result into Events as Full
// events, for --interval: a watch alone may not be trusted on some networks.
func (e *Engine) Reread(ctx context.Context) {
	e.mu.Lock()
	var ts []backends.Target
	for _, w := range e.watching {
		ts = append(ts, w.target)
	}
	e.mu.Unlock()
	var prefixes []string
	for _, t := range ts {
		if t.Kind() == backends.KindPrefix {
			prefixes = append(prefixes, t.Prefix)
		}
	}
	send := func(ev backends.Event) {
		select {
		case e.events <- ev:
		case <-ctx.Done():
		}
	}
	if len(prefixes) > 0 {
		kvs, rev, err := e.store.Get(ctx, prefixes)
		if err != nil {
			e.log.Warn("interval re-read failed; keeping last good data", "err", err)
			return
		}
		for p, sub := range splitByPrefix(kvs, backends.MinimalPrefixes(prefixes)) {
			send(backends.Event{Target: backends.PrefixTarget(p), Revision: rev, Full: true, KVs: sub})
		}
	}
	for _, t := range ts {
		if t.Kind() == backends.KindPrefix {
			continue
		}
		ev, err := e.readOther(ctx, t)
		if err != nil {
			e.log.Warn("interval re-read failed; keeping last good data", "target", t.ID(), "err", err)
			continue
		}
		send(ev)
	}
}
