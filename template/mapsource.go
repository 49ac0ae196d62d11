package template

import (
	"slices"
	"strings"

	"github.com/heraldhq/herald/backends"
)

// MapSource is a Source over plain maps, for tests and one-off renders. Keys are
// absolute and clean ("/app/db/host"). It scans the whole map on List, which is fine for
// what it is for; the runner's cache keeps an index instead.
type MapSource struct {
	KV    map[string]string
	Svcs  map[string][]backends.Service // by ServiceQuery.Name
	Names []backends.ServiceSummary
	DCs   []string // the datacenters; nil: a registry without them
}

var (
	_ Source           = MapSource{}
	_ DatacenterSource = MapSource{}
)

// Datacenters returns DCs.
func (m MapSource) Datacenters() []string { return m.DCs }

// Get returns the value of one key.
func (m MapSource) Get(key string) (string, bool) {
	v, ok := m.KV[key]
	return v, ok
}

// List returns the keys equal to prefix or below it on path boundaries, sorted.
func (m MapSource) List(prefix string) []backends.KVPair {
	p := backends.CleanKey(prefix)
	var out []backends.KVPair
	for k, v := range m.KV {
		if backends.UnderPrefix(k, p) {
			out = append(out, backends.KVPair{Key: k, Value: v})
		}
	}
	slices.SortFunc(out, func(a, b backends.KVPair) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// Services returns the instances of q.Name that q accepts (tag and status) and, when q
// names a datacenter, that are not known to be in another one; sorted.
func (m MapSource) Services(q backends.ServiceQuery) []backends.Service {
	var out []backends.Service
	for _, s := range m.Svcs[q.Name] {
		if q.Datacenter != "" && s.Datacenter != "" && s.Datacenter != q.Datacenter {
			continue
		}
		if q.Accepts(s) {
			out = append(out, s)
		}
	}
	backends.SortServices(out)
	return out
}

// ServiceNames returns the catalog sorted by name; nil when Names is nil.
func (m MapSource) ServiceNames() []backends.ServiceSummary {
	if m.Names == nil {
		return nil
	}
	out := slices.Clone(m.Names)
	slices.SortStableFunc(out, func(a, b backends.ServiceSummary) int { return strings.Compare(a.Name, b.Name) })
	return out
}
