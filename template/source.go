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
