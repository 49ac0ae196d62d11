package render

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/resources"
)

func TestGuardCheck(t *testing.T) {
	g := resources.DefaultGuard
	tests := []struct {
		name            string
		written, counts map[string]int
		want            string
	}{
		{"no baseline", nil, map[string]int{"web": 0}, ""},
		{"grows", map[string]int{"web": 2}, map[string]int{"web": 5}, ""},
		{"half may go", map[string]int{"web": 4}, map[string]int{"web": 2}, ""},
		{"more than half", map[string]int{"web": 4}, map[string]int{"web": 1}, "web fell from 4 to 1 instances, more than max_drop 50%"},
		{"to empty", map[string]int{"web": 1}, map[string]int{"web": 0}, "below min_instances 1"},
		{"new query", map[string]int{"api": 3}, map[string]int{"web": 0}, ""},
		{"first offender in order", map[string]int{"a": 2, "b": 2}, map[string]int{"a": 0, "b": 0}, "service a fell"},
	}
	for _, tt := range tests {
		if got := g.Check(tt.written, tt.counts); (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("%s: check = %q, want %q", tt.name, got, tt.want)
		}
	}
	off := resources.Guard{MinInstances: 0, MaxDrop: 1}
	if got := off.Check(map[string]int{"web": 9}, map[string]int{"web": 0}); got != "" {
		t.Errorf("guard turned off still held: %s", got)
	}
	for in, want := range map[string]float64{"50%": 0.5, "0.25": 0.25, "100%": 1, " 10 % ": 0.1} {
		if got, err := resources.ParseShare(in); err != nil || got != want {
			t.Errorf("ParseShare(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "150%", "-1", "half", "2"} {
		if _, err := resources.ParseShare(in); err == nil {
			t.Errorf("ParseShare(%q) accepted", in)
		}
	}
}

func instances(n int) []backends.Service {
	out := make([]backends.Service, n)
	for i := range out {
		out[i] = backends.Service{Name: "web", ID: fmt.Sprint(i), Address: fmt.Sprintf("10.0.0.%d", i+1), Port: 80, Status: "passing", Healthy: true}
	}
	return out
}

func hostports(n int) string {
	var b strings.Builder
	for _, s := range instances(n) {
		b.WriteString(s.HostPort() + " ")
	}
	return b.String()
}

func held(m *Metrics, name string) int {
	return int(testutil.ToFloat64(m.heldRenders.WithLabelValues(name)))
}

// A registry glitch empties the list for a moment: the render is held (dest and reload
// unchanged, counted, on /healthz), and the list coming back is written as if nothing
// had happened.
func TestWatchGuardHoldsTransientEmpty(t *testing.T) {
	m := newMem(nil)
	m.svcs["web"] = instances(4)
	met := NewMetrics(prometheus.NewRegistry())
	dir, rs := confdir(t, map[string][2]string{"lb": {"drop_hold = \"1h\"\n", `{{range service "web"}}{{.HostPort}} {{end}}`}})
	rn := &Runner{Store: m, Metrics: met}
	startRun(t, rn, rs, nil)
	dest := filepath.Join(dir, "out/lb")
	eventually(t, "first render", func() bool { return read(t, dest) == hostports(4) })
	eventually(t, "watch", func() bool { return m.watchCount() >= 1 })

	m.setServices("web", []backends.Service{})
	eventually(t, "the empty render held", func() bool { return held(met, "lb.toml") == 1 })
	if got := read(t, dest); got != hostports(4) {
		t.Fatalf("dest after a held render = %q, want the 4 instances", got)
	}
	st := rn.Statuses()
	if len(st) != 1 || !strings.Contains(st[0].Held, "fell from 4 to 0") {
		t.Errorf("/healthz status = %+v, want held with the reason", st)
	}

	m.setServices("web", instances(5))
	eventually(t, "the recovered list written", func() bool { return read(t, dest) == hostports(5) })
	if st := rn.Statuses(); st[0].Held != "" || held(met, "lb.toml") != 1 {
		t.Errorf("after recovery: status %+v, held %d; want not held, counted once", st, held(met, "lb.toml"))
	}
}

// A real scale-down (4 to 1, more than max_drop at once) is held, then written once it has
// persisted for the hold time; a scale-down within max_drop goes through at once.
func TestWatchGuardWritesRealScaleDownAfterHold(t *testing.T) {
	m := newMem(nil)
	m.svcs["web"] = instances(4)
	met := NewMetrics(prometheus.NewRegistry())
	const hold = 300 * time.Millisecond
	dir, rs := confdir(t, map[string][2]string{"lb": {"drop_hold = \"300ms\"\n", `{{range service "web"}}{{.HostPort}} {{end}}`}})
	startRun(t, &Runner{Store: m, Metrics: met}, rs, nil)
	dest := filepath.Join(dir, "out/lb")
	eventually(t, "first render", func() bool { return read(t, dest) == hostports(4) })
	eventually(t, "watch", func() bool { return m.watchCount() >= 1 })

	m.setServices("web", instances(2))
	eventually(t, "4 to 2 written at once", func() bool { return read(t, dest) == hostports(2) })
	if n := held(met, "lb.toml"); n != 0 {
		t.Fatalf("a drop within max_drop was held %d time(s)", n)
	}

	start := time.Now()
	m.setServices("web", instances(1)[:0])
	eventually(t, "the empty list held", func() bool { return held(met, "lb.toml") == 1 })
	if got := read(t, dest); got != hostports(2) {
		t.Fatalf("dest while held = %q", got)
	}
	eventually(t, "the empty list written after the hold", func() bool { return read(t, dest) == "" })
	if took := time.Since(start); took < hold {
		t.Errorf("written after %v, before the hold of %v", took, hold)
	}
	t.Logf("scale-down to 0 written %v after the change (hold %v)", time.Since(start).Round(time.Millisecond), hold)
}

// A service the registry does not have fails `herald render` naming it and what the
// catalog has, dest untouched; optional_services lets it be absent; watch mode shows it on
// /healthz and renders on.
func TestAbsentService(t *testing.T) {
	m := newMem(nil)
	m.svcs["web"] = instances(1)
	dir, rs := confdir(t, map[string][2]string{"lb": {"", `{{range service "wbe"}}{{.HostPort}}{{end}}`}})
	err := (&Runner{Store: m}).RenderOnce(context.Background(), rs)
	if err == nil || !strings.Contains(err.Error(), "wbe") || !strings.Contains(err.Error(), "it has: web") {
		t.Fatalf("RenderOnce = %v, want an error naming wbe and listing web", err)
	}
	if got := read(t, filepath.Join(dir, "out/lb")); !strings.HasPrefix(got, "<") {
		t.Errorf("dest written despite the absent service: %q", got)
	}

	dir, rs = confdir(t, map[string][2]string{"lb": {"optional_services = [\"wbe\"]\n", `{{range service "wbe"}}{{.HostPort}}{{end}}x`}})
	if err := (&Runner{Store: m}).RenderOnce(context.Background(), rs); err != nil {
		t.Fatalf("optional service: %v", err)
	}
	if got := read(t, filepath.Join(dir, "out/lb")); got != "x" {
		t.Errorf("dest = %q", got)
	}

	dir, rs = confdir(t, map[string][2]string{"lb": {"", `{{range service "wbe"}}{{.HostPort}}{{end}}y`}})
	rn := &Runner{Store: m}
	startRun(t, rn, rs, nil)
	eventually(t, "watch renders on", func() bool { return read(t, filepath.Join(dir, "out/lb")) == "y" })
	if st := rn.Statuses(); len(st) != 1 || len(st[0].MissingServices) != 1 || st[0].MissingServices[0] != "wbe" {
		t.Errorf("/healthz status = %+v, want wbe missing", st)
	}
	// The service appears: no longer reported.
	m.setServices("wbe", instances(1))
	eventually(t, "wbe appears", func() bool { return read(t, filepath.Join(dir, "out/lb")) == "10.0.0.1:80y" })
	if st := rn.Statuses(); len(st[0].MissingServices) != 0 {
		t.Errorf("status after wbe appeared: %+v", st)
	}
}
