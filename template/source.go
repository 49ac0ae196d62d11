package template

import "github.com/heraldhq/herald/backends"

// Source is the read-only, consistent view of registry data a render reads from. The
// runner's cache implements it; tests may use a map.
type Source interface {
	// Get returns the value of one absolute key ("/app/db/host").
	Get(key string) (string, bool)
	// List returns every key equal to prefix or below it on path boundaries, sorted by key.
	List(prefix string) []backends.KVPair
	// Services returns the instances matching q, sorted; nil when none or not loaded.
	Services(q backends.ServiceQuery) []backends.Service
	// ServiceNames returns the catalog, sorted by name; nil when not loaded.
	ServiceNames() []backends.ServiceSummary
}

// Memoizer is an optional extension of Source for sources shared by many renders (the
// runner's cache): Memo returns what compute returns for key, calling compute at most
// about once per version of the data, so 200 renders over one snapshot share the work
// of, say, ls over 1,000 keys. The value is shared: callers must not modify it.
type Memoizer interface {
	Memo(key string, compute func() any) any
}

// DatacenterSource is an optional extension of Source for registries that span
// datacenters: Datacenters returns their names, sorted; nil when not loaded.
type DatacenterSource interface {
	Datacenters() []string
}

// LoadReporter is an optional extension of Source: ServiceLoaded tells an empty list
// from one not loaded yet, so that herald consults the catalog (to report a service
// the registry does not have) only for lists that really are empty. A Source without it
// counts every list as loaded.
type LoadReporter interface {
	ServiceLoaded(q backends.ServiceQuery) bool
}
