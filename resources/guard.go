package resources

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/backends"
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

// With applies a resource's own settings.
func (g Guard) With(o GuardOverride) Guard {
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

// Check says why counts must wait after written ("" when they need not): the first
// service query, in order, whose list fell below MinInstances or by more than MaxDrop.
// Queries new to the template, or no longer read, are not compared.
func (g Guard) Check(written, counts map[string]int) string {
	for _, id := range slices.Sorted(maps.Keys(counts)) {
		n := counts[id]
		o, ok := written[id]
		if !ok || n >= o {
			continue
		}
		what, unit := "service "+id, "instance"
		if spec, ok := strings.CutPrefix(id, "each "); ok { // a fan-out resource's list
			what, unit = fmt.Sprintf("the list of each = %q", spec), "item"
		}
		if n < g.MinInstances {
			return fmt.Sprintf("%s fell from %d to %d %s(s), below min_instances %d", what, o, n, unit, g.MinInstances)
		}
		if float64(o-n) > g.MaxDrop*float64(o) {
			return fmt.Sprintf("%s fell from %d to %d %ss, more than max_drop %g%%", what, o, n, unit, g.MaxDrop*100)
		}
	}
	return ""
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
