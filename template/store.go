package template

import (
	"context"
	"path"
	"slices"
	"strings"
	"text/template"

	"github.com/heraldhq/herald/backends"
)

// KeyError is the error of get and getv for a missing key. Its text is confd's, so logs
// read the same; it matches backends.ErrNotFound with errors.Is.
type KeyError struct {
	Key string // as the template spelled it, without the prefix
}

func (e *KeyError) Error() string { return "key does not exist: " + e.Key }

func (e *KeyError) Unwrap() error { return backends.ErrNotFound }

// execState is what one render reads through and records. confd copies the data into a
// memkv store per render; herald instead answers memkv's questions from the Source, so a
// render costs what the template reads, not the size of the cache. Each function below
// gives the answer memkv would give for the store confd would have built: keys with the
// prefix stripped, limited to the scope.
type execState struct {
	src    Source
	prefix string   // clean, "" for none
	scope  []string // minimal clean prefixes; nil for unrestricted
	// copyLists: the template calls a function that changes a list in place
	// (inPlaceFuncs), so it gets its own copy of every shared listing.
	copyLists bool
	// missingIsEmpty: see Options.
	missingIsEmpty bool

	keys     []string
	prefixes []string
	services []backends.ServiceQuery
	names    bool
	dcs      bool
	catalog  bool
	absent   []string
	counts   map[string]int

	// ctx stops the render (see alive); done is its Done channel, nil when none.
	ctx  context.Context
	done <-chan struct{}
}

// heraldFuncNames are the functions herald adds to confd's catalogue.
func heraldFuncNames() []string { return []string{"datacenters", "service", "services"} }

func (s *execState) funcs() template.FuncMap {
	return template.FuncMap{
		"get":      s.get,
		"gets":     s.gets,
		"getv":     s.getv,
		"getvs":    s.getvs,
		"exists":   s.exists,
		"ls":       s.ls,
		"lsdir":    s.lsdir,
		"service":  s.service,
		"services": s.serviceNames,

		"datacenters": s.datacenters,
	}
}

func (s *execState) begin(src Source, opts Options) {
	s.src = src
	s.missingIsEmpty = opts.missingIsEmpty
	s.ctx, s.done = opts.Context, nil
	if s.ctx != nil {
		s.done = s.ctx.Done()
	}
	s.prefix = backends.CleanKey(opts.Prefix)
	if s.prefix == "/" {
		s.prefix = ""
	}
	s.scope = nil
	if len(opts.Scope) > 0 {
		s.scope = backends.MinimalPrefixes(opts.Scope)
	}
}

// end returns what the render read and forgets it, keeping the buffers for the next one.
func (s *execState) end() *Reads {
	r := &Reads{Prefixes: sortedSet(s.prefixes), ServiceNames: s.names, Datacenters: s.dcs, Catalog: s.catalog, Absent: sortedSet(s.absent)}
	if len(s.counts) > 0 {
		r.Counts = s.counts
		s.counts = nil
	}
	// A key under a listed prefix adds nothing to Touches or Targets; a template that
	// lists servers and reads each one's keys would otherwise keep them all.
	slices.Sort(s.keys)
	for _, k := range slices.Compact(s.keys) {
		if !underAny(k, r.Prefixes) {
			r.Keys = append(r.Keys, k)
		}
	}
	if len(s.services) > 0 {
		seen := make(map[string]bool, len(s.services))
		for _, q := range s.services {
			if id := q.String(); !seen[id] {
				seen[id] = true
				r.Services = append(r.Services, q)
			}
		}
		slices.SortFunc(r.Services, func(a, b backends.ServiceQuery) int {
			return strings.Compare(a.String(), b.String())
		})
	}
	// Zeroed, not just truncated: an idle template must not pin its last render's strings.
	clear(s.keys[:cap(s.keys)])
	clear(s.prefixes[:cap(s.prefixes)])
	clear(s.services[:cap(s.services)])
	s.src, s.ctx, s.done = nil, nil, nil
	clear(s.absent[:cap(s.absent)])
	s.keys, s.prefixes, s.services, s.names, s.absent = s.keys[:0], s.prefixes[:0], s.services[:0], false, s.absent[:0]
	s.catalog, s.dcs = false, false
	return r
}

func sortedSet(in []string) []string {
	if len(in) == 0 {
		return nil
	}
	out := slices.Clone(in)
	slices.Sort(out)
	return slices.Compact(out)
}

// abs turns a template key (clean, absolute) into the Source's key.
func (s *execState) abs(key string) string {
	switch {
	case s.prefix == "":
		return key
	case key == "/":
		return s.prefix
	default:
		return s.prefix + key
	}
}

// rel turns a Source key under the prefix into the key the template sees.
func (s *execState) rel(abs string) string {
	if !strings.HasPrefix(abs, s.prefix) {
		return abs // only a Source breaking its List contract gets here: pass it through, never panic
	}
	if len(abs) == len(s.prefix) {
		return "/"
	}
	return abs[len(s.prefix):]
}

func (s *execState) inScope(abs string) bool {
	if s.scope == nil {
		return true
	}
	for _, p := range s.scope {
		if backends.UnderPrefix(abs, p) {
			return true
		}
	}
	return false
}

// lookup reads one key and records it, present or not: a later put must re-render.
func (s *execState) lookup(key string) (string, bool) {
	// memkv holds keys joined onto "/", so a key that is not clean and absolute is
	// never there; nothing can make it appear, so there is nothing to record.
	if !strings.HasPrefix(key, "/") || path.Clean(key) != key {
		return "", false
	}
	abs := s.abs(key)
	if !s.inScope(abs) {
		return "", false
	}
	s.keys = append(s.keys, abs)
	return s.src.Get(abs)
}

// list returns the pairs under the absolute prefix p that are in scope, sorted by key,
// and records the regions it read.
func (s *execState) list(p string) []backends.KVPair {
	return s.fetch(s.regions(p))
}

// regions is what reading the absolute prefix p reads, recorded: p itself when in
// scope, else the scoped prefixes below it.
func (s *execState) regions(p string) []string {
	rs := s.scoped(p)
	s.prefixes = append(s.prefixes, rs...)
	return rs
}

func (s *execState) scoped(p string) []string {
	if s.inScope(p) {
		return []string{p}
	}
	var out []string
	for _, sp := range s.scope {
		if backends.UnderPrefix(sp, p) {
			out = append(out, sp)
		}
	}
	return out
}

func (s *execState) fetch(regions []string) []backends.KVPair {
	if len(regions) == 1 {
		return s.src.List(regions[0])
	}
	var out []backends.KVPair
	for _, r := range regions {
		out = append(out, s.src.List(r)...)
	}
	// Disjoint prefixes in string order do not give keys in string order: "/a-b/x"
	// sorts before "/a/x".
	slices.SortFunc(out, func(a, b backends.KVPair) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// memoNames runs names(pairs) over what reading the absolute prefix p returns, recording
// the read; a Source that memoizes computes it once per version of its data for every
// render asking the same question. A template that may change the list in place
// (confd's reverse does) gets its own copy; the others share it.
func (s *execState) memoNames(kind, filePath, p string, names func([]backends.KVPair) []string) []string {
	rs := s.regions(p)
	m, ok := s.src.(Memoizer)
	if !ok {
		return names(s.fetch(rs))
	}
	// The answer depends on the name as written, the prefix stripped and the regions.
	key := kind + "\x00" + filePath + "\x00" + s.prefix + "\x00" + strings.Join(rs, "\x00")
	v := m.Memo(key, func() any { return names(s.fetch(rs)) }).([]string)
	if s.copyLists {
		return slices.Clone(v)
	}
	return v
}

func (s *execState) get(key string) (backends.KVPair, error) {
	if err := s.alive(); err != nil {
		return backends.KVPair{}, err
	}
	v, ok := s.lookup(key)
	if !ok && !s.missingIsEmpty {
		return backends.KVPair{}, &KeyError{Key: key}
	}
	return backends.KVPair{Key: key, Value: v}, nil
}

// getv returns the value of key, or the first default when the key is missing.
func (s *execState) getv(key string, def ...string) (string, error) {
	if err := s.alive(); err != nil {
		return "", err
	}
	v, ok := s.lookup(key)
	if !ok {
		if len(def) > 0 {
			return def[0], nil
		}
		if s.missingIsEmpty {
			return "", nil
		}
		return "", &KeyError{Key: key}
	}
	return v, nil
}

func (s *execState) exists(key string) bool {
	_, ok := s.lookup(key)
	return ok
}

// gets returns the pairs whose key matches pattern (path.Match), sorted by key; an empty
// list, not an error, when none match.
func (s *execState) gets(pattern string) (KVPairs, error) {
	out := make(KVPairs, 0)
	err := s.match(pattern, func(k, v string) { out = append(out, backends.KVPair{Key: k, Value: v}) })
	if err != nil {
		return nil, err
	}
	return out, nil
}

// getvs returns the values of the keys matching pattern, sorted by value.
func (s *execState) getvs(pattern string) ([]string, error) {
	out := make([]string, 0)
	err := s.match(pattern, func(_, v string) { out = append(out, v) })
	if err != nil {
		return out, err
	}
	slices.Sort(out)
	return out, nil
}

// match calls fn, in key order, for every key matching pattern. Only keys under the
// pattern's literal leading part can match, so only those are listed.
func (s *execState) match(pattern string, fn func(key, value string)) error {
	if err := s.alive(); err != nil {
		return err
	}
	// memkv reports a malformed pattern only when its store holds at least one key;
	// herald reports it always.
	if _, err := path.Match(pattern, ""); err != nil {
		return &PatternError{Pattern: pattern, Err: err}
	}
	i := strings.IndexAny(pattern, `*?[\`)
	if i < 0 {
		if v, ok := s.lookup(pattern); ok {
			fn(pattern, v)
		}
		return nil
	}
	dir := "/"
	if lit := pattern[:i]; strings.HasPrefix(lit, "/") {
		dir = path.Dir(lit)
	}
	for _, kv := range s.list(s.abs(dir)) {
		k := s.rel(kv.Key)
		if ok, _ := path.Match(pattern, k); ok {
			fn(k, kv.Value)
		}
	}
	return nil
}

// PatternError is the error of gets and getvs for a malformed pattern.
type PatternError struct {
	Pattern string
	Err     error // path.ErrBadPattern
}

func (e *PatternError) Error() string { return "pattern " + e.Pattern + ": " + e.Err.Error() }

func (e *PatternError) Unwrap() error { return e.Err }

// ls is memkv's List: the names of the entries directly under dir, sorted. Its quirks are
// kept: a key equal to dir lists its own base name; "/" lists only the keys right under
// the root, not the directories; dir is matched as written when the prefix is stripped,
// so "/a//b" lists "a".
func (s *execState) ls(filePath string) []string {
	dir := path.Clean(filePath)
	if !strings.HasPrefix(dir, "/") {
		return make([]string, 0)
	}
	return s.memoNames("ls", filePath, s.abs(dir), func(kvs []backends.KVPair) []string {
		out := make([]string, 0, len(kvs))
		for _, kv := range kvs {
			k := s.rel(kv.Key)
			if k == filePath {
				out = appendNew(out, path.Base(k))
				continue
			}
			d := parent(k)
			if dir == "/" && d != "/" || dir != "/" && !backends.UnderPrefix(d, dir) {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(k, filePath), "/"), "/")
			out = appendNew(out, name)
		}
		slices.Sort(out)
		return slices.Compact(out)
	})
}

// appendNew appends name unless it repeats the last one: keys come sorted, so the keys of
// one entry are adjacent and most duplicates never reach the sort.
func appendNew(out []string, name string) []string {
	if n := len(out); n > 0 && out[n-1] == name {
		return out
	}
	return append(out, name)
}

// parent is path.Dir for the clean absolute keys a Source holds, without re-cleaning.
func parent(k string) string {
	i := strings.LastIndexByte(k, '/')
	if i <= 0 {
		return "/"
	}
	return k[:i]
}

// lsdir is memkv's ListDir: the names of the entries under dir that have entries of
// their own, sorted. The key must start with dir as written, and memkv never lists
// anything under "/".
func (s *execState) lsdir(filePath string) []string {
	dir := path.Clean(filePath)
	if !strings.HasPrefix(dir, "/") || dir == "/" {
		return make([]string, 0) // the same answer whatever the data: nothing to record
	}
	return s.memoNames("lsdir", filePath, s.abs(dir), func(kvs []backends.KVPair) []string {
		out := make([]string, 0)
		for _, kv := range kvs {
			k := s.rel(kv.Key)
			if !strings.HasPrefix(k, filePath) {
				continue
			}
			d := parent(k)
			if len(d) <= len(dir) || !strings.HasPrefix(d, dir) || d[len(dir)] != '/' {
				continue
			}
			name, _, _ := strings.Cut(d[len(dir)+1:], "/")
			out = appendNew(out, name)
		}
		slices.Sort(out)
		return slices.Compact(out)
	})
}

// service returns the instances of one service, passing only unless filters say
// otherwise: `service "web"`, `service "tag.web@dc1" "any"`, `service "web|passing,warning"`.
func (s *execState) service(spec string, filters ...string) ([]backends.Service, error) {
	if err := s.alive(); err != nil {
		return nil, err
	}
	q, err := backends.ParseServiceQuery(spec, filters...)
	if err != nil {
		return nil, err
	}
	if q.Dotted {
		// com.example.Greeter or tag prod of web: the catalog says which exists. Not
		// loaded yet, the exact name stands in; the runner loads the catalog and
		// renders again.
		if names := s.readCatalog(); names != nil {
			q = backends.ResolveQuery(q, names)
		}
	}
	s.services = append(s.services, q)
	list := s.src.Services(q)
	if s.counts == nil {
		s.counts = make(map[string]int)
	}
	s.counts[q.String()] = len(list)
	if len(list) == 0 && s.loaded(q) {
		// Empty because nothing passes, or because the registry has no such service
		// at all: only the catalog tells, so it is read (and watched) for this case.
		if names := s.readCatalog(); names != nil && !backends.InCatalog(names, q.Name) {
			s.absent = append(s.absent, q.Name)
		}
		return nil, nil
	}
	// The Source's slices are shared with every other render; reverse and sortByLength
	// work in place, so each render gets its own tag lists.
	out := slices.Clone(list)
	for i := range out {
		out[i].Tags = slices.Clone(out[i].Tags)
	}
	return out, nil
}

// readCatalog reads the service catalog for herald's own decisions (nil: not loaded).
func (s *execState) readCatalog() []backends.ServiceSummary {
	s.catalog = true
	return s.src.ServiceNames()
}

// loaded reports whether q's (empty) list is loaded rather than not read yet.
func (s *execState) loaded(q backends.ServiceQuery) bool {
	lr, ok := s.src.(LoadReporter)
	return !ok || lr.ServiceLoaded(q)
}

// datacenters is `datacenters`: the registry's datacenters, sorted by name. Before the
// list is loaded it is empty, and the engine loads it and renders again; a backend
// without datacenters fails the render rather than giving an empty list.
func (s *execState) datacenters() []string {
	s.dcs = true
	ds, ok := s.src.(DatacenterSource)
	if !ok {
		return nil
	}
	return slices.Clone(ds.Datacenters())
}

// serviceNames is `services`: the catalog, sorted by name.
func (s *execState) serviceNames() []backends.ServiceSummary {
	s.names = true
	list := s.src.ServiceNames()
	if list == nil {
		return nil
	}
	out := slices.Clone(list)
	for i := range out {
		out[i].Tags = slices.Clone(out[i].Tags)
	}
	return out
}
