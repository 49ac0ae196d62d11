// Package cache holds what herald knows of a registry: every key under the watched
// prefixes and every watched service list, fed by one watch per target and read by all
// renders. It implements template.Source.
package cache

import (
	"maps"
	"slices"
	"sort"
	"sync"

	"github.com/heraldhq/herald/backends"
)

// Cache is safe for concurrent use. Readers see a consistent state for as long as they
// hold Read; Apply waits for them.
type Cache struct {
	mu sync.RWMutex
	kv map[string]string
	// sorted lists the keys of kv; sorted[:nsorted] is in order (List is two binary
	// searches there). Between applyLocked and reindexLocked it may also hold keys
	// appended after nsorted and stale keys already deleted from kv.
	sorted  []string
	nsorted int
	stale   int
	svcs    map[string][]backends.Service
	names   []backends.ServiceSummary
	dcs     []string
	loaded  map[string]uint64 // target ID -> revision it was loaded at

	// memo holds results derived from the data (template.Memoizer), dropped by every
	// change. Renders fill it under the read lock, hence its own mutex.
	memoMu sync.Mutex
	memo   map[string]any
}

// New returns an empty cache.
func New() *Cache {
	return &Cache{
		kv:     make(map[string]string),
		svcs:   make(map[string][]backends.Service),
		loaded: make(map[string]uint64),
	}
}

// Change says what an Apply changed, so the runner re-renders only what it touches.
type Change struct {
	Target backends.Target
	Keys   []string // keys whose value changed, appeared or vanished (prefix targets)
	Other  bool     // a service list, the catalog or the datacenters changed
}

// Empty reports whether nothing changed.
func (c Change) Empty() bool { return len(c.Keys) == 0 && !c.Other }

// Loaded reports whether a target's data is in the cache, and at which revision.
func (c *Cache) Loaded(t backends.Target) (uint64, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	rev, ok := c.loaded[t.ID()]
	return rev, ok
}

// Covered reports whether a prefix target is loaded, or lies under a loaded prefix.
func (c *Cache) Covered(t backends.Target) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.coveredLocked(t)
}

func (c *Cache) coveredLocked(t backends.Target) bool {
	if _, ok := c.loaded[t.ID()]; ok {
		return true
	}
	if t.Kind() != backends.KindPrefix {
		return false
	}
	for p := t.Prefix; ; {
		if _, ok := c.loaded["prefix:"+p]; ok {
			return true
		}
		if p == "/" {
			return false
		}
		p = parent(p)
	}
}

func parent(p string) string {
	i := len(p) - 1
	for i > 0 && p[i] != '/' {
		i--
	}
	if i == 0 {
		return "/"
	}
	return p[:i]
}

// Apply folds one event in and reports what changed. A Full event for a prefix replaces
// everything under it; an incremental one upserts and deletes.
func (c *Cache) Apply(ev backends.Event) Change {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := c.applyLocked(ev)
	c.reindexLocked()
	return ch
}

// ApplyAll folds in the events of one read (one per target) and reindexes once: loading
// 1,000 prefixes of 100 keys each costs one sort, not 1,000. Overlapping prefix targets
// are applied one by one, since a Full event must see the keys the others added.
func (c *Cache) ApplyAll(evs []backends.Event) []Change {
	var prefixes []string
	for _, ev := range evs {
		if ev.Target.Kind() == backends.KindPrefix {
			prefixes = append(prefixes, ev.Target.Prefix)
		}
	}
	out := make([]Change, 0, len(evs))
	if len(backends.MinimalPrefixes(prefixes)) != len(prefixes) {
		for _, ev := range evs {
			out = append(out, c.Apply(ev))
		}
		return out
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ev := range evs {
		out = append(out, c.applyLocked(ev))
	}
	c.reindexLocked()
	return out
}

func (c *Cache) applyLocked(ev backends.Event) Change {
	c.memo = nil
	ch := Change{Target: ev.Target}
	t := ev.Target
	switch t.Kind() {
	case backends.KindService:
		id := t.ID()
		old, had := c.svcs[id]
		if !had || !servicesEqual(old, ev.Services) {
			c.svcs[id] = slices.Clone(ev.Services)
			ch.Other = true
		}
	case backends.KindServiceNames:
		if _, had := c.loaded[t.ID()]; !had || !namesEqual(c.names, ev.Names) {
			// Loaded is never nil, even empty: nil tells a render the catalog is not
			// loaded yet, and an empty registry must still report an absent service.
			c.names = append([]backends.ServiceSummary{}, ev.Names...)
			ch.Other = true
		}
	case backends.KindDatacenters:
		if _, had := c.loaded[t.ID()]; !had || !slices.Equal(c.dcs, ev.Datacenters) {
			c.dcs = append([]string{}, ev.Datacenters...) // never nil once loaded
			ch.Other = true
		}
	default:
		del := func(k string) {
			delete(c.kv, k)
			c.stale++ // still listed in c.sorted until reindexLocked
			ch.Keys = append(ch.Keys, k)
		}
		if ev.Full {
			// Keys under the prefix that the new state lacks are deletions. Only the
			// sorted part is searched: keys appended by this batch belong to other,
			// disjoint targets.
			for _, k := range c.under(t.Prefix) {
				if _, ok := c.kv[k]; !ok {
					continue
				}
				if _, ok := ev.KVs[k]; !ok {
					del(k)
				}
			}
		}
		for _, k := range ev.Deleted {
			if _, ok := c.kv[k]; ok {
				del(k)
			}
		}
		for k, v := range ev.KVs {
			old, ok := c.kv[k]
			if ok && old == v {
				continue
			}
			if !ok {
				// A key deleted earlier in this batch may still be listed; the
				// rebuild in reindexLocked drops the duplicate.
				c.sorted = append(c.sorted, k)
			}
			c.kv[k] = v
			ch.Keys = append(ch.Keys, k)
		}
		sort.Strings(ch.Keys)
	}
	if ev.Revision > c.loaded[t.ID()] || ev.Full {
		c.loaded[t.ID()] = ev.Revision
	}
	return ch
}

// reindexLocked makes c.sorted exactly the keys of c.kv, in order again. A few changes
// are placed one by one (binary search + memmove); a bulk change is rebuilt with one
// sort, keeping a 100,000-key load O(n log n) instead of O(n^2).
func (c *Cache) reindexLocked() {
	added := len(c.sorted) - c.nsorted
	if added == 0 && c.stale == 0 {
		return
	}
	if added <= 8 && c.stale <= 8 {
		tail := slices.Clone(c.sorted[c.nsorted:])
		c.sorted = c.sorted[:c.nsorted]
		if c.stale > 0 {
			c.sorted = slices.DeleteFunc(c.sorted, func(k string) bool { _, ok := c.kv[k]; return !ok })
		}
		for _, k := range tail {
			if i, found := slices.BinarySearch(c.sorted, k); !found {
				c.sorted = slices.Insert(c.sorted, i, k)
			}
		}
	} else {
		c.sorted = slices.DeleteFunc(c.sorted, func(k string) bool { _, ok := c.kv[k]; return !ok })
		slices.Sort(c.sorted)
		c.sorted = slices.Compact(c.sorted)
	}
	c.nsorted, c.stale = len(c.sorted), 0
}

// Forget drops a target that no resource reads any more. Keys still covered by another
// loaded prefix stay.
func (c *Cache) Forget(t backends.Target) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.memo = nil
	delete(c.loaded, t.ID())
	switch t.Kind() {
	case backends.KindService:
		delete(c.svcs, t.ID())
	case backends.KindServiceNames:
		c.names = nil
	case backends.KindDatacenters:
		c.dcs = nil
	default:
		for _, k := range c.under(t.Prefix) {
			if !c.coveredLocked(backends.PrefixTarget(k)) {
				c.deleteLocked(k)
			}
		}
	}
}

func (c *Cache) deleteLocked(k string) {
	delete(c.kv, k)
	if i, ok := slices.BinarySearch(c.sorted[:c.nsorted], k); ok {
		c.sorted = slices.Delete(c.sorted, i, i+1)
		c.nsorted--
	}
}

// under returns the keys equal to prefix or below it, in order.
func (c *Cache) under(prefix string) []string {
	lo, hi := c.span(prefix)
	out := make([]string, 0, hi-lo+1)
	if _, ok := c.kv[prefix]; ok && prefix != "/" {
		out = append(out, prefix)
	}
	return append(out, c.sorted[lo:hi]...)
}

// span bounds the keys strictly below prefix in c.sorted: they all start with
// prefix+"/", which sorts before prefix+"0" ('0' follows '/').
func (c *Cache) span(prefix string) (int, int) {
	in := c.sorted[:c.nsorted]
	if prefix == "/" {
		return 0, len(in)
	}
	lo, _ := slices.BinarySearch(in, prefix+"/")
	hi, _ := slices.BinarySearch(in, prefix+"0")
	return lo, hi
}

// Read runs fn with the cache held still: a render inside sees one state.
func (c *Cache) Read(fn func(View)) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	fn(View{c: c})
}

// Len is the number of keys held.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.kv)
}

// Acquire is Read for a reader that may have to be abandoned (a render past its
// timeout, which Go cannot interrupt): the view stays valid until release, which may be
// called from any goroutine, at any time, more than once. After release the view is
// dark: every read through it finds nothing, never touching the cache again, so the
// cache's writers go on whatever the abandoned reader still does.
func (c *Cache) Acquire() (v View, release func()) {
	c.mu.RLock()
	g := &guard{}
	var once sync.Once
	return View{c: c, g: g}, func() {
		once.Do(func() {
			g.mu.Lock()
			g.dark = true
			g.mu.Unlock()
			c.mu.RUnlock()
		})
	}
}

// guard makes a view go dark: each read holds mu and checks dark first. Only the
// reader and its one release take mu, so it costs an uncontended lock per read.
type guard struct {
	mu   sync.Mutex
	dark bool
}

// enter locks the view's guard for one read; false when the view is dark.
func (v View) enter() bool {
	if v.g == nil {
		return true
	}
	v.g.mu.Lock()
	if v.g.dark {
		v.g.mu.Unlock()
		return false
	}
	return true
}

func (v View) leave() {
	if v.g != nil {
		v.g.mu.Unlock()
	}
}

// View is the cache as a template.Source; valid only inside Read, or until Acquire's
// release.
type View struct {
	c *Cache
	g *guard // nil for Read
}

func (v View) Get(key string) (string, bool) {
	if !v.enter() {
		return "", false
	}
	defer v.leave()
	s, ok := v.c.kv[key]
	return s, ok
}

func (v View) List(prefix string) []backends.KVPair {
	if !v.enter() {
		return nil
	}
	defer v.leave()
	lo, hi := v.c.span(prefix)
	out := make([]backends.KVPair, 0, hi-lo+1)
	if val, ok := v.c.kv[prefix]; ok && prefix != "/" {
		out = append(out, backends.KVPair{Key: prefix, Value: val})
	}
	for _, k := range v.c.sorted[lo:hi] {
		out = append(out, backends.KVPair{Key: k, Value: v.c.kv[k]})
	}
	return out
}

// Memo implements template.Memoizer. Every writer holds c.mu exclusively and drops the
// memo, so a value found here was computed from the data the caller sees.
func (v View) Memo(key string, compute func() any) any {
	c := v.c
	if !v.enter() {
		return compute() // over a dark view, never stored
	}
	c.memoMu.Lock()
	val, ok := c.memo[key]
	c.memoMu.Unlock()
	v.leave()
	if ok {
		return val
	}
	// Computed outside the mutex: two renders may both compute it, never block each other.
	val = compute()
	if !v.enter() {
		return val // computed (partly) over a dark view: not for the memo
	}
	defer v.leave()
	c.memoMu.Lock()
	if c.memo == nil {
		c.memo = make(map[string]any)
	}
	c.memo[key] = val
	c.memoMu.Unlock()
	return val
}

func (v View) Services(q backends.ServiceQuery) []backends.Service {
	if !v.enter() {
		return nil
	}
	defer v.leave()
	return v.c.svcs[backends.ServiceTarget(q).ID()]
}

func (v View) ServiceNames() []backends.ServiceSummary {
	if !v.enter() {
		return nil
	}
	defer v.leave()
	return v.c.names
}

// Datacenters is the datacenter list, sorted; nil when not loaded.
func (v View) Datacenters() []string {
	if !v.enter() {
		return nil
	}
	defer v.leave()
	return v.c.dcs
}

// ServiceLoaded reports whether q's list is loaded: an empty list then means empty, not
// not read yet.
func (v View) ServiceLoaded(q backends.ServiceQuery) bool {
	_, ok := v.c.loaded[backends.ServiceTarget(q).ID()]
	return ok
}

// Snapshot copies the keys under prefix, for `herald get`.
func (c *Cache) Snapshot(prefix string) map[string]string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string]string)
	for _, k := range c.under(prefix) {
		out[k] = c.kv[k]
	}
	return out
}

func servicesEqual(a, b []backends.Service) bool {
	return slices.EqualFunc(a, b, func(x, y backends.Service) bool {
		return x.Name == y.Name && x.ID == y.ID && x.Address == y.Address && x.Port == y.Port &&
			x.Status == y.Status && x.Healthy == y.Healthy && x.Weight == y.Weight &&
			x.Datacenter == y.Datacenter && x.Node == y.Node && x.Key == y.Key && x.Format == y.Format &&
			slices.Equal(x.Tags, y.Tags) && maps.Equal(x.Meta, y.Meta) && maps.Equal(x.Endpoints, y.Endpoints)
	})
}

func namesEqual(a, b []backends.ServiceSummary) bool {
	return slices.EqualFunc(a, b, func(x, y backends.ServiceSummary) bool {
		return x.Name == y.Name && slices.Equal(x.Tags, y.Tags)
	})
}
