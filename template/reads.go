package template

import (
	"path"
	"slices"
	"strings"

	"github.com/heraldhq/herald/backends"
)

// Reads is what one render read: enough to load what it needs, to watch it, and to tell
// whether a change can alter its output. Keys and Prefixes are absolute (Prefix applied),
// clean, deduplicated and sorted; Services are deduplicated and sorted by their String.
type Reads struct {
	Keys         []string                // read by get, getv, exists (present or not), unless under one of Prefixes
	Prefixes     []string                // listed by gets, getvs, ls, lsdir
	Services     []backends.ServiceQuery // read by service
	ServiceNames bool                    // read by services
	Datacenters  bool                    // read by datacenters
	// Catalog: herald itself read the catalog (dotted names, absent services). Unlike
	// ServiceNames it may be unreadable (a registry ACL) without failing the render.
	Catalog bool
	// Absent lists the services a render asked for that the registry's catalog does not
	// have at all (sorted): a typo or a wrong layout, never silently an empty list.
	Absent []string
	// Counts is how many instances each service query returned, by its String, for
	// the runner's guard against a registry glitch emptying a list.
	Counts map[string]int
}

// Targets returns the fewest watch targets that cover the reads: one prefix per region of
// the key space (a key is watched as a prefix), one per service query, and the catalog.
func (r *Reads) Targets() []backends.Target {
	if r == nil {
		return nil
	}
	var out []backends.Target
	if n := len(r.Keys) + len(r.Prefixes); n > 0 {
		all := make([]string, 0, n)
		all = append(all, r.Keys...)
		all = append(all, r.Prefixes...)
		for _, p := range backends.MinimalPrefixes(all) {
			out = append(out, backends.PrefixTarget(p))
		}
	}
	for _, q := range r.Services {
		out = append(out, backends.ServiceTarget(q))
	}
	if r.ServiceNames || r.Catalog {
		out = append(out, backends.Target{ServiceNames: true})
	}
	if r.Datacenters {
		out = append(out, backends.Target{Datacenters: true})
	}
	return out
}

// Touches reports whether a change of the absolute key can change the render: the key
// itself was read, or it lies under a listed prefix.
func (r *Reads) Touches(key string) bool {
	if r == nil {
		return false
	}
	if !strings.HasPrefix(key, "/") || path.Clean(key) != key {
		key = backends.CleanKey(key)
	}
	_, ok := slices.BinarySearch(r.Keys, key)
	return ok || underAny(key, r.Prefixes)
}

// underAny reports whether the clean key is one of the sorted prefixes or lies below one.
// It walks up from the key, so it costs the key's depth in lookups, not a scan.
func underAny(key string, prefixes []string) bool {
	if len(prefixes) == 0 {
		return false
	}
	for p := key; ; p = path.Dir(p) {
		if _, ok := slices.BinarySearch(prefixes, p); ok {
			return true
		}
		if p == "/" {
			return false
		}
	}
}
