package render

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/resources"
	"github.com/heraldhq/herald/resources/engine/cache"
	"github.com/heraldhq/herald/template"
)

// guard decides, in watch mode, whether a render may be written now; when it may not,
// it returns how long until the smaller list has persisted long enough.
func (rn *Runner) guard(st *state, reads *template.Reads) time.Duration {
	g := resources.DefaultGuard
	if rn.Guard != nil {
		g = *rn.Guard
	}
	g = g.With(st.r.Guard)
	rn.mu.Lock()
	defer rn.mu.Unlock()
	why := ""
	if st.written != nil && reads != nil {
		why = g.Check(st.written, reads.Counts)
	}
	now := time.Now()
	if why == "" {
		if st.heldWhy != "" {
			rn.log().Info("service lists recovered; render no longer held", "resource", st.r.Name, "was", st.heldWhy,
				"held_for", now.Sub(st.heldSince).Round(time.Millisecond))
		}
		st.heldWhy, st.heldSince = "", time.Time{}
		return 0
	}
	if st.heldWhy == "" {
		st.heldSince = now
		rn.Metrics.held(st.r.Name)
		rn.log().Warn("render held back: a service list shrank too far at once; dest and reload unchanged until it persists",
			"resource", st.r.Name, "dest", st.r.Dest, "why", why, "hold", g.Hold)
	}
	st.heldWhy = why
	if left := st.heldSince.Add(g.Hold).Sub(now); left > 0 {
		return left
	}
	rn.log().Warn("smaller service list persisted for the hold time; writing it", "resource", st.r.Name, "why", why,
		"held_for", now.Sub(st.heldSince).Round(time.Millisecond))
	st.heldWhy, st.heldSince = "", time.Time{}
	return 0
}

// wrote records the counts a written (or found identical) render had: the baseline of
// the next guard check.
func (rn *Runner) wrote(st *state, reads *template.Reads) {
	if reads == nil {
		return
	}
	rn.mu.Lock()
	st.written = reads.Counts
	rn.mu.Unlock()
}

// absent handles the services a render asked for that the registry does not have. In
// watch mode each is logged once and shown on /healthz, and the render goes on; a
// one-off render fails naming them (dest unchanged), unless the resource lists them in
// optional_services.
func (rn *Runner) absent(st *state, reads *template.Reads, watching bool) error {
	var missing []string
	if reads != nil {
		for _, name := range reads.Absent {
			if !slices.Contains(st.r.OptionalServices, name) && !slices.Contains(st.r.OptionalServices, "*") {
				missing = append(missing, name)
			}
		}
	}
	rn.mu.Lock()
	prev := st.missing
	st.missing = missing
	rn.mu.Unlock()
	if len(missing) == 0 {
		return nil
	}
	var names []backends.ServiceSummary
	rn.Cache.Read(func(v cache.View) { names = v.ServiceNames() })
	msg := resources.MissingServicesMessage(missing, names)
	if !watching {
		return fmt.Errorf("%s", msg)
	}
	for _, name := range missing {
		if !slices.Contains(prev, name) {
			rn.log().Warn("template reads a service the registry does not have; its list is empty",
				"resource", st.r.Name, "service", name, "detail", msg)
		}
	}
	return nil
}

// ensureCatalog loads the service catalog when only herald's own checks read it (absent
// services, dotted names), and returns the other targets. A catalog the registry will not
// give (an ACL granting single services) does not fail the render: absent services then
// go undetected, said once in the log.
func (rn *Runner) ensureCatalog(ctx context.Context, missing []backends.Target, reads *template.Reads, watching bool) []backends.Target {
	if reads == nil || reads.ServiceNames {
		return missing
	}
	rest := missing[:0:0]
	for _, t := range missing {
		if t.Kind() != backends.KindServiceNames {
			rest = append(rest, t)
			continue
		}
		if err := rn.ensure(ctx, []backends.Target{t}, watching); err != nil && ctx.Err() == nil {
			rn.mu.Lock()
			first := rn.noCatalog == nil
			rn.noCatalog, rn.noCatalogAt = err, time.Now()
			rn.mu.Unlock()
			if first {
				rn.log().Warn("cannot read the service catalog; a service the registry does not have reads as an empty list", "err", err)
			}
		}
	}
	return rest
}

// catalogUnreadable: the catalog failed lately; it is tried again after a minute, since
// the failure may have been the registry's, not an ACL's.
func (rn *Runner) catalogUnreadable() bool {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.noCatalog != nil && time.Since(rn.noCatalogAt) < time.Minute
}
