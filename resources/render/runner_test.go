package render

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/resources"
)

func confdir(t *testing.T, res map[string][2]string) (string, []*resources.Resource) {
	t.Helper()
	files := map[string]string{}
	for name, rt := range res {
		files["conf.d/"+name+".toml"] = "[template]\nsrc = \"" + name + ".tmpl\"\ndest = \"out/" + name + "\"\n" + rt[0]
		files["templates/"+name+".tmpl"] = rt[1]
	}
	dir := tree(t, files)
	os.Mkdir(filepath.Join(dir, "out"), 0o755)
	rs, err := resources.Load(resources.LoadOptions{ConfDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return dir, rs
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRenderOnceSharesOneReadAndOneReload(t *testing.T) {
	m := newMem(map[string]string{"/app/a": "1", "/app/b": "2", "/other/x": "x"})
	dir, rs := confdir(t, map[string][2]string{
		"one": {`keys = ["/app"]` + "\nreload_cmd = \"echo r >> " + "RELOADLOG\"\n", `a={{getv "/app/a"}}`},
		"two": {`keys = ["/app/b", "/other"]` + "\nreload_cmd = \"echo r >> " + "RELOADLOG\"\n", `b={{getv "/app/b"}} x={{getv "/other/x"}}`},
	})
	log := filepath.Join(dir, "reloads")
	for _, r := range rs {
		r.ReloadCmd = strings.ReplaceAll(r.ReloadCmd, "RELOADLOG", log)
	}
	rn := &Runner{Store: m}
	if err := rn.RenderOnce(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(dir, "out/one")); got != "a=1" {
		t.Fatalf("one = %q", got)
	}
	if got := read(t, filepath.Join(dir, "out/two")); got != "b=2 x=x" {
		t.Fatalf("two = %q", got)
	}
	if m.gets != 1 {
		t.Fatalf("declared keys took %d reads, want 1 consistent read", m.gets)
	}
	if got := read(t, log); got != "r\n" {
		t.Fatalf("shared reload ran %q, want once", got)
	}
	// Second run: nothing changed, so no reload at all.
	if err := rn.RenderOnce(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	if got := read(t, log); got != "r\n" {
		t.Fatalf("unchanged render reloaded: %q", got)
	}
}

func TestRenderOnceInfersKeysFromTheTemplate(t *testing.T) {
	m := newMem(map[string]string{"/cfg/env": "prod", "/db/prod/host": "db1", "/db/staging/host": "db2"})
	dir, rs := confdir(t, map[string][2]string{
		"app": {"", `host={{getv (printf "/db/%s/host" (getv "/cfg/env"))}}`},
	})
	if err := (&Runner{Store: m}).RenderOnce(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(dir, "out/app")); got != "host=db1" {
		t.Fatalf("app = %q", got)
	}
}

func TestRenderOnceOneFailureDoesNotStopOthers(t *testing.T) {
	m := newMem(map[string]string{"/a": "1"})
	dir, rs := confdir(t, map[string][2]string{
		"bad":  {`keys = ["/a"]`, `{{getv "/missing"}}`},
		"good": {`keys = ["/a"]`, `{{getv "/a"}}`},
		"chk":  {"keys = [\"/a\"]\ncheck_cmd = \"false\"", `{{getv "/a"}}`},
	})
	os.WriteFile(filepath.Join(dir, "out/chk"), []byte("previous"), 0o644)
	rn := &Runner{Store: m}
	err := rn.RenderOnce(context.Background(), rs)
	if err == nil {
		t.Fatal("no error")
	}
	// The systemd status line's counts.
	if p := rn.Progress(); p.Rendered != 1 || p.Total != 3 || strings.Join(p.Failing, " ") != "bad.toml chk.toml" {
		t.Errorf("progress %+v", p)
	}
	for _, w := range []string{"bad.toml:", "key does not exist: /missing", "chk.toml:", "check_cmd"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q: %v", w, err)
		}
	}
	if got := read(t, filepath.Join(dir, "out/good")); got != "1" {
		t.Fatalf("good = %q", got)
	}
	if got := read(t, filepath.Join(dir, "out/chk")); got != "previous" {
		t.Fatalf("failed check replaced dest: %q", got)
	}
}

func TestRenderOnceBackendDown(t *testing.T) {
	m := newMem(nil)
	m.down = true
	dir, rs := confdir(t, map[string][2]string{"app": {`keys = ["/a"]`, `{{getv "/a/x" "d"}}`}})
	os.WriteFile(filepath.Join(dir, "out/app"), []byte("last good"), 0o644)
	err := (&Runner{Store: m}).RenderOnce(context.Background(), rs)
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %v", err)
	}
	if got := read(t, filepath.Join(dir, "out/app")); got != "last good" {
		t.Fatalf("dest = %q", got)
	}
}

// startRun runs the watch loop in the background and returns a stop function.
func startRun(t *testing.T, rn *Runner, rs []*resources.Resource, updates chan resources.ResourceSet) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rn.Run(ctx, rs, updates) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// bursts counts the ends of render bursts (Runner.Beat with no periodic beat): the end
// of the burst a change started proves every render it dispatched has finished.
type bursts struct{ n atomic.Int64 }

func (b *bursts) watch(rn *Runner) *Runner {
	rn.Beat, rn.BeatEvery = func() { b.n.Add(1) }, time.Hour
	return rn
}

// after runs change, then waits for cond and for a burst to end after the change.
func (b *bursts) after(t *testing.T, what string, change func(), cond func() bool) {
	t.Helper()
	before := b.n.Load()
	change()
	eventually(t, what, func() bool { return cond() && b.n.Load() > before })
}

func renders(m *Metrics, name string) int {
	return int(testutil.ToFloat64(m.renders.WithLabelValues(name, "changed")) +
		testutil.ToFloat64(m.renders.WithLabelValues(name, "unchanged")) +
		testutil.ToFloat64(m.renders.WithLabelValues(name, "error")))
}

func TestWatchRerendersOnlyTouchedResources(t *testing.T) {
	m := newMem(map[string]string{"/app/a": "1", "/app/b": "1", "/x": "1"})
	dir, rs := confdir(t, map[string][2]string{
		"a": {`keys = ["/app"]`, `{{getv "/app/a"}}`},
		"b": {"", `{{getv "/app/b"}}`}, // inferred keys
		"x": {"", `{{getv "/x"}}`},
	})
	met := NewMetrics(prometheus.NewRegistry())
	var b bursts
	rn := b.watch(&Runner{Store: m, Metrics: met})
	startRun(t, rn, rs, nil)
	eventually(t, "first render", func() bool {
		return read(t, filepath.Join(dir, "out/a")) == "1" && read(t, filepath.Join(dir, "out/b")) == "1" && read(t, filepath.Join(dir, "out/x")) == "1"
	})
	// One watch per distinct target: "/app" (a declares it; b's "/app/b" is under it) and "/x".
	eventually(t, "watches", func() bool { return rn.WatchCount() == 2 })
	if ids := rn.watchIDs(); strings.Join(ids, " ") != "prefix:/app prefix:/x" {
		t.Fatalf("watching %v", ids)
	}

	b.after(t, "b re-rendered", func() { m.put("/app/b", "2") }, func() bool { return read(t, filepath.Join(dir, "out/b")) == "2" })
	if n := renders(met, "a.toml"); n != 1 {
		t.Errorf("a rendered %d times; /app/b does not touch its reads", n)
	}
	if n := renders(met, "x.toml"); n != 1 {
		t.Errorf("x rendered %d times", n)
	}
	if n := renders(met, "b.toml"); n != 2 {
		t.Errorf("b rendered %d times, want 2", n)
	}

	// A key read but missing at first: its appearance re-renders the resource.
	m.put("/app/a", "3")
	eventually(t, "a re-rendered", func() bool { return read(t, filepath.Join(dir, "out/a")) == "3" })
}

func TestWatchMissingKeyAppearsLater(t *testing.T) {
	m := newMem(map[string]string{})
	dir, rs := confdir(t, map[string][2]string{"a": {"", `v={{getv "/late/key"}}`}})
	rn := &Runner{Store: m}
	startRun(t, rn, rs, nil)
	eventually(t, "watch on the missing key", func() bool { return m.watchCount() == 1 })
	if _, err := os.Stat(filepath.Join(dir, "out/a")); err == nil {
		t.Fatal("rendered although the key is missing")
	}
	m.put("/late/key", "here")
	eventually(t, "render after the key appears", func() bool { return read(t, filepath.Join(dir, "out/a")) == "v=here" })
}

func TestWatchQuiescence(t *testing.T) {
	m := newMem(map[string]string{"/k": "0"})
	dir, rs := confdir(t, map[string][2]string{"a": {"keys = [\"/k\"]\nwait = \"600ms:3s\"", `{{getv "/k"}}`}})
	met := NewMetrics(prometheus.NewRegistry())
	startRun(t, &Runner{Store: m, Metrics: met}, rs, nil)
	eventually(t, "first render", func() bool { return read(t, filepath.Join(dir, "out/a")) == "0" })
	eventually(t, "watch", func() bool { return m.watchCount() == 1 })

	start := time.Now()
	for i := 1; i <= 5; i++ {
		m.put("/k", fmt.Sprint(i))
		time.Sleep(100 * time.Millisecond)
	}
	if got := read(t, filepath.Join(dir, "out/a")); got != "0" {
		t.Fatalf("rendered %q during the burst; min wait is 600ms of calm", got)
	}
	eventually(t, "render after calm", func() bool { return read(t, filepath.Join(dir, "out/a")) == "5" })
	if d := time.Since(start); d < 1000*time.Millisecond {
		t.Fatalf("rendered after %v, before 600ms of calm", d)
	}
	// The file appears a moment before the render is counted.
	eventually(t, "two renders", func() bool { return renders(met, "a.toml") >= 2 })
	// One more change renders once more: a third render before it was a spare one.
	m.put("/k", "6")
	eventually(t, "render of a later change", func() bool {
		return read(t, filepath.Join(dir, "out/a")) == "6" && renders(met, "a.toml") >= 3
	})
	if n := renders(met, "a.toml") - 1; n != 2 {
		t.Fatalf("%d renders, want the initial one and one for the burst", n)
	}

}

func TestWatchQuiescenceMax(t *testing.T) {
	m := newMem(map[string]string{"/k": "0"})
	dir, rs := confdir(t, map[string][2]string{"a": {"keys = [\"/k\"]\nwait = \"200ms:500ms\"", `{{getv "/k"}}`}})
	startRun(t, &Runner{Store: m}, rs, nil)
	eventually(t, "watch", func() bool { return m.watchCount() == 1 && read(t, filepath.Join(dir, "out/a")) == "0" })
	start := time.Now()
	var sawAt time.Duration
	for i := 1; time.Since(start) < 2*time.Second; i++ {
		m.put("/k", fmt.Sprint(i)) // every 50ms: never 200ms of calm
		time.Sleep(50 * time.Millisecond)
		if sawAt == 0 && read(t, filepath.Join(dir, "out/a")) != "0" {
			sawAt = time.Since(start)
		}
	}
	if sawAt == 0 || sawAt > 1200*time.Millisecond {
		t.Fatalf("first render during a continuous burst at %v; max wait is 500ms", sawAt)
	}
}

func TestWatchBurstCoalesces(t *testing.T) {
	m := newMem(map[string]string{"/k": "0"})
	dir, rs := confdir(t, map[string][2]string{"a": {"keys = [\"/k\"]", `{{getv "/k"}}`}})
	met := NewMetrics(prometheus.NewRegistry())
	var b bursts
	startRun(t, b.watch(&Runner{Store: m, Metrics: met, Wait: resources.Wait{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond}}), rs, nil)
	eventually(t, "watch", func() bool { return m.watchCount() == 1 && read(t, filepath.Join(dir, "out/a")) == "0" })
	b.after(t, "final value", func() {
		for i := 1; i <= 1000; i++ {
			m.put("/k", fmt.Sprint(i))
		}
	}, func() bool { return read(t, filepath.Join(dir, "out/a")) == "1000" })
	if n := renders(met, "a.toml"); n > 6 {
		t.Fatalf("1,000 changes caused %d renders", n)
	}
}

func TestWatchServices(t *testing.T) {
	m := newMem(nil)
	m.svcs["web"] = []backends.Service{{Name: "web", ID: "1", Address: "10.0.0.1", Port: 80, Status: "passing", Healthy: true}}
	dir, rs := confdir(t, map[string][2]string{"lb": {"", `{{range service "web"}}{{.HostPort}} {{end}}`}})
	startRun(t, &Runner{Store: m}, rs, nil)
	eventually(t, "first", func() bool { return read(t, filepath.Join(dir, "out/lb")) == "10.0.0.1:80 " })
	eventually(t, "watch", func() bool { return m.watchCount() == 1 })
	m.setServices("web", []backends.Service{
		{Name: "web", ID: "1", Address: "10.0.0.1", Port: 80, Status: "critical"},
		{Name: "web", ID: "2", Address: "10.0.0.2", Port: 80, Status: "passing", Healthy: true},
	})
	eventually(t, "update", func() bool { return read(t, filepath.Join(dir, "out/lb")) == "10.0.0.2:80 " })
}

func TestWatchHotReload(t *testing.T) {
	m := newMem(map[string]string{"/k": "v"})
	dir, rs := confdir(t, map[string][2]string{"a": {"", `a={{getv "/k"}}`}})
	updates := make(chan resources.ResourceSet)
	var bs bursts
	startRun(t, bs.watch(&Runner{Store: m}), rs, updates)
	eventually(t, "a", func() bool { return read(t, filepath.Join(dir, "out/a")) == "a=v" })

	write := func(p, s string) { os.WriteFile(filepath.Join(dir, p), []byte(s), 0o644) }
	load := func() resources.ResourceSet {
		return resources.NewResourceSet(resources.Load(resources.LoadOptions{ConfDir: dir}))
	}
	// add
	write("conf.d/b.toml", "[template]\nsrc = \"b.tmpl\"\ndest = \"out/b\"\n")
	write("templates/b.tmpl", `b={{getv "/k"}}`)
	updates <- load()
	eventually(t, "b added", func() bool { return read(t, filepath.Join(dir, "out/b")) == "b=v" })
	// change the template
	write("templates/a.tmpl", `A={{getv "/k"}}`)
	updates <- load()
	eventually(t, "a changed", func() bool { return read(t, filepath.Join(dir, "out/a")) == "A=v" })
	// break it: the previous version keeps running and following changes
	write("templates/a.tmpl", `A={{getv "/k"`)
	updates <- load()
	m.put("/k", "w")
	eventually(t, "broken a keeps running", func() bool { return read(t, filepath.Join(dir, "out/a")) == "A=w" })
	// fix it
	write("templates/a.tmpl", `fixed={{getv "/k"}}`)
	updates <- load()
	eventually(t, "a fixed", func() bool { return read(t, filepath.Join(dir, "out/a")) == "fixed=w" })
	// delete b: it stops following changes
	os.Remove(filepath.Join(dir, "conf.d/b.toml"))
	updates <- load() // taken by Run's loop, which replaces the set before it reads the next event
	bs.after(t, "a follows", func() { m.put("/k", "z") }, func() bool { return read(t, filepath.Join(dir, "out/a")) == "fixed=z" })
	if got := read(t, filepath.Join(dir, "out/b")); got != "b=w" {
		t.Fatalf("deleted resource still rendered: %q", got)
	}
}

func TestWatchBackendDownAtStartThenUp(t *testing.T) {
	m := newMem(map[string]string{"/k": "v"})
	m.down = true
	dir, rs := confdir(t, map[string][2]string{"a": {`keys = ["/k"]`, `{{getv "/k"}}`}})
	os.WriteFile(filepath.Join(dir, "out/a"), []byte("last good"), 0o644)
	met := NewMetrics(prometheus.NewRegistry())
	startRun(t, &Runner{Store: m, Metrics: met}, rs, nil)
	// Two failed renders: the first, and a retry after it.
	eventually(t, "a render and its retry failing", func() bool {
		return testutil.ToFloat64(met.renders.WithLabelValues("a.toml", "error")) >= 2
	})
	if got := read(t, filepath.Join(dir, "out/a")); got != "last good" {
		t.Fatalf("dest changed while the backend was down: %q", got)
	}
	m.mu.Lock()
	m.down = false
	m.mu.Unlock()
	eventually(t, "catch up", func() bool { return read(t, filepath.Join(dir, "out/a")) == "v" })
}

func TestWatchSIGTERMFinishesSlowReload(t *testing.T) {
	m := newMem(map[string]string{"/k": "v"})
	dir, rs := confdir(t, map[string][2]string{"a": {`keys = ["/k"]`, `{{getv "/k"}}`}})
	marker := filepath.Join(dir, "reloaded")
	started := filepath.Join(dir, "reloading")
	rs[0].ReloadCmd = "touch " + started + "; sleep 0.5; touch " + marker
	stop := startRun(t, &Runner{Store: m}, rs, nil)
	eventually(t, "render", func() bool { return read(t, filepath.Join(dir, "out/a")) == "v" })
	eventually(t, "the reload running", func() bool { _, err := os.Stat(started); return err == nil })
	stop()
	if _, err := os.Stat(marker); err != nil {
		t.Fatal("Run returned before the in-flight reload finished")
	}
}

func TestWatchInterval(t *testing.T) {
	m := newMem(map[string]string{"/k": "v"})
	dir, rs := confdir(t, map[string][2]string{"a": {`keys = ["/k"]`, `{{getv "/k"}}`}})
	startRun(t, &Runner{Store: m, Interval: 100 * time.Millisecond}, rs, nil)
	eventually(t, "render", func() bool { return read(t, filepath.Join(dir, "out/a")) == "v" })
	// A change the watch never reports (a lost event) is caught by the interval read.
	m.mu.Lock()
	m.kv["/k"] = "silent"
	m.mu.Unlock()
	eventually(t, "interval catches it", func() bool { return read(t, filepath.Join(dir, "out/a")) == "silent" })
}

// Resources sync in parallel, but check commands (each a whole process, such as
// haproxy -c) run at most Syncer.Checks at once.
func TestRenderOnceBoundsConcurrentChecks(t *testing.T) {
	m := newMem(map[string]string{"/app/a": "1"})
	res := map[string][2]string{}
	// mkdir is atomic: a check finding the lock taken records an overlap.
	check := `check_cmd = "mkdir LOCK/held 2>/dev/null || echo overlap >> LOCK/overlaps; sleep 0.02; rmdir LOCK/held 2>/dev/null; true"`
	for i := range 8 {
		res[fmt.Sprintf("r%d", i)] = [2]string{`keys = ["/app"]` + "\n" + check + "\n", `a={{getv "/app/a"}}`}
	}
	dir, rs := confdir(t, res)
	lock := filepath.Join(dir, "lock")
	os.Mkdir(lock, 0o755)
	for _, r := range rs {
		r.CheckCmd = strings.ReplaceAll(r.CheckCmd, "LOCK", lock)
	}
	rn := &Runner{Store: m, Syncer: &resources.Syncer{Checks: 1}}
	if err := rn.RenderOnce(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(lock, "overlaps")); !strings.HasPrefix(got, "<") {
		t.Fatalf("checks overlapped with Checks = 1: %q", got)
	}
	for i := range 8 {
		if got := read(t, filepath.Join(dir, fmt.Sprintf("out/r%d", i))); got != "a=1" {
			t.Fatalf("r%d = %q", i, got)
		}
	}
}

func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// A render that timed out waiting for a CPU slot (runaway templates held them all)
// read nothing, so no watch event would ever bring it back: it is retried by itself
// once slots free up, with no change in the store.
func TestWatchRetriesRenderThatWaitedForASlot(t *testing.T) {
	m := newMem(map[string]string{"/k": "v"})
	dir, rs := confdir(t, map[string][2]string{"a": {`keys = ["/k"]`, `{{getv "/k"}}`}})
	met := NewMetrics(prometheus.NewRegistry())
	rn := &Runner{Store: m, Metrics: met, RenderTimeout: 50 * time.Millisecond}
	rn.init()
	for range cap(rn.execs.held) { // every slot held, as by runaways
		rn.execs.held <- struct{}{}
	}
	startRun(t, rn, rs, nil)
	eventually(t, "the render failing for want of a slot", func() bool {
		return testutil.ToFloat64(met.renders.WithLabelValues("a.toml", "error")) >= 1
	})
	if _, err := os.Stat(filepath.Join(dir, "out/a")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("dest written without a slot: %v", err)
	}
	for range cap(rn.execs.held) {
		<-rn.execs.held
	}
	eventually(t, "the retry rendering", func() bool { return read(t, filepath.Join(dir, "out/a")) == "v" })
}
