package resources

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/resources/engine/cache"
	"github.com/heraldhq/herald/template"
)

// Guard holds back, in watch mode, a render whose service lists shrink the way a
// registry glitch shrinks them (a leader election, an agent restart): to nothing, or by
// more than a share at once. The smaller list is written once it has persisted for Hold;
// a real scale-down is thus late by Hold, a transient empty answer never reaches the
// file. `herald render` has no earlier list to compare with and is not guarded.
type Guard struct {
	MinInstances int           // a list falling below this is held; 0 turns it off
	MaxDrop      float64       // share of a list that may go at once, 0..1; 1 turns it off
	Hold         time.Duration // how long a smaller list must persist to be written
}

// DefaultGuard: a list falling to empty, or losing more than half its instances at
// once, waits 30 seconds. Leader elections and agent restarts last seconds; a real
// scale-down is rarely that steep, and when it is, the old instances are gone either way.
var DefaultGuard = Guard{MinInstances: 1, MaxDrop: 0.5, Hold: 30 * time.Second}

// GuardOverride is a resource's own guard settings; nil fields keep the runner's.
type GuardOverride struct {
	MinInstances *int
	MaxDrop      *float64
	Hold         *time.Duration
}

func (g Guard) with(o GuardOverride) Guard {
	if o.MinInstances != nil {
		g.MinInstances = *o.MinInstances
	}
	if o.MaxDrop != nil {
		g.MaxDrop = *o.MaxDrop
	}
	if o.Hold != nil {
		g.Hold = *o.Hold
	}
	return g
}

// ParseShare reads a max_drop: "50%" or a fraction "0.5", within 0..1.
func ParseShare(s string) (float64, error) {
	t := strings.TrimSpace(s)
	div := 1.0
	if p, ok := strings.CutSuffix(t, "%"); ok {
		t, div = strings.TrimSpace(p), 100
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 || v/div > 1 {
		return 0, fmt.Errorf("%q is not a share like \"50%%\" or 0.5 (0 to 100%%)", s)
	}
	return v / div, nil
}

// check says why counts must wait after written ("" when they need not): the first
// service query, in order, whose list fell below MinInstances or by more than MaxDrop.
// Queries new to the template, or no longer read, are not compared.
func (g Guard) check(written, counts map[string]int) string {
	for _, id := range slices.Sorted(maps.Keys(counts)) {
		n := counts[id]
		o, ok := written[id]
		if !ok || n >= o {
			continue
		}
		if n < g.MinInstances {
			return fmt.Sprintf("service %s fell from %d to %d instance(s), below min_instances %d", id, o, n, g.MinInstances)
		}
		if float64(o-n) > g.MaxDrop*float64(o) {
			return fmt.Sprintf("service %s fell from %d to %d instances, more than max_drop %g%%", id, o, n, g.MaxDrop*100)
		}
	}
	return ""
}

// guard decides, in watch mode, whether a render may be written now; when it may not,
// it returns how long until the smaller list has persisted long enough.
func (rn *Runner) guard(st *state, reads *template.Reads) time.Duration {
	g := DefaultGuard
	if rn.Guard != nil {
		g = *rn.Guard
	}
	g = g.with(st.r.Guard)
	rn.mu.Lock()
	defer rn.mu.Unlock()
	why := ""
	if st.written != nil && reads != nil {
		why = g.check(st.written, reads.Counts)
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
	msg := MissingServicesMessage(missing, names)
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

// MissingServicesMessage names the absent services and what the catalog has instead.
func MissingServicesMessage(missing []string, names []backends.ServiceSummary) string {
	have := make([]string, 0, min(len(names), 20))
	for i, n := range names {
		if i == 20 {
			have = append(have, fmt.Sprintf("... (%d in all)", len(names)))
			break
		}
		have = append(have, n.Name)
	}
	list := "none"
	if len(have) > 0 {
		list = strings.Join(have, ", ")
	}
	return fmt.Sprintf("service(s) %s not in the registry's catalog (it has: %s); check the name and, on etcd or ZooKeeper, --services-layout; a resource may list intentionally absent services in optional_services",
		strings.Join(missing, ", "), list)
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
		if !t.ServiceNames {
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
