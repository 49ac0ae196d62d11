package engine

import (
	"errors"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/template"
)

// MaxDiscovery bounds how often one render may find that it read data not loaded yet
// (keys inferred from the template, e.g. getv (printf "/x/%s" (getv "/y"))).
const MaxDiscovery = 8

// Render is one render being settled.
type Render struct {
	// Execute runs the template once from the cache and says what it read (nil when it
	// could not tell).
	Execute func() (*template.Reads, error)
	// Load reads the missing targets into the cache.
	Load func(missing []backends.Target, reads *template.Reads) error
	// Final, when set, reports an execution error no second try could change (a render
	// abandoned past its timeout would take as long again).
	Final func(error) bool
	// Skip, when set, reports a missing target not to load (a catalog known unreadable).
	Skip func(t backends.Target, reads *template.Reads) bool
}

// Settle executes r until every target the execution read is loaded, loading what it
// finds missing in between, at most MaxDiscovery times more. It returns the last
// execution's reads and error; a failed load is returned as a LoadError.
func (e *Engine) Settle(r Render) (*template.Reads, error) {
	// checked holds the targets found loaded after the previous execution: an execution
	// whose targets all lie in it began with its data in place.
	var checked map[string]bool
	for round := 0; ; round++ {
		reads, err := r.Execute()
		if r.Final != nil && r.Final(err) {
			return reads, err
		}
		missing, read := e.missing(r, reads)
		if round == MaxDiscovery {
			return reads, err
		}
		if len(missing) == 0 {
			if settled(err, read, checked) {
				return reads, err
			}
			checked = read
			continue
		}
		checked = nil
		if lerr := r.Load(missing, reads); lerr != nil {
			if errors.Is(lerr, errNoDatacenters) {
				return reads, lerr // the template's error: no retry can change it
			}
			return reads, LoadError{lerr}
		}
	}
}

// missing lists the targets reads names that the cache does not hold, and the IDs of
// all it names.
func (e *Engine) missing(r Render, reads *template.Reads) ([]backends.Target, map[string]bool) {
	var missing []backends.Target
	read := map[string]bool{}
	if reads == nil {
		return nil, read
	}
	for _, t := range reads.Targets() {
		read[t.ID()] = true
		if !e.cache.Covered(t) && (r.Skip == nil || !r.Skip(t, reads)) {
			missing = append(missing, t)
		}
	}
	return missing, read
}

// settled: renders run in parallel, so another one may have loaded a target this
// execution found missing between the execution and the check. Its error is the
// template's own only once an execution that began with all its targets loaded fails
// too.
func settled(err error, read, checked map[string]bool) bool {
	if err == nil {
		return true
	}
	if checked == nil {
		return false
	}
	for id := range read {
		if !checked[id] {
			return false
		}
	}
	return true
}
