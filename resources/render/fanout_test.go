package render

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/resources"
	"github.com/heraldhq/herald/template"
)

// fanoutDir is a confdir with one fan-out resource "sites": one file per service in
// out/, whose reload command logs the file it is for.
func fanoutDir(t *testing.T, extra, tmpl string) (dir string, load func() []*resources.Resource) {
	t.Helper()
	dir = tree(t, map[string]string{
		"conf.d/sites.toml": "[template]\neach = \"services\"\nsrc = \"site.tmpl\"\ndest = \"out/{{.Name}}.conf\"\n" +
			"reload_cmd = \"echo {{.dest}} >> RELOADS\"\n" + extra,
		"templates/site.tmpl": tmpl,
	})
	toml := filepath.Join(dir, "conf.d/sites.toml")
	raw, _ := os.ReadFile(toml)
	os.WriteFile(toml, []byte(strings.ReplaceAll(string(raw), "RELOADS", filepath.Join(dir, "reloads"))), 0o644)
	os.Mkdir(filepath.Join(dir, "out"), 0o755)
	return dir, func() []*resources.Resource {
		rs, err := resources.Load(resources.LoadOptions{ConfDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
}

const siteTmpl = `{{.Name}}:{{range service .Name}} {{.HostPort}}{{end}}`

// files lists out/ (the record is a dot file and shows too).
func files(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func reloads(t *testing.T, dir string) []string {
	b, err := os.ReadFile(filepath.Join(dir, "reloads"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

func TestFanoutWatch(t *testing.T) {
	m := newMem(nil)
	m.svcs["api"], m.svcs["web"] = instances(2), instances(3)
	dir, load := fanoutDir(t, "", siteTmpl)
	foreign := filepath.Join(dir, "out/default.conf")
	os.WriteFile(foreign, []byte("mine"), 0o644)
	met := NewMetrics(prometheus.NewRegistry())
	var b bursts
	rn := b.watch(&Runner{Store: m, Metrics: met})
	startRun(t, rn, load(), nil)
	out := func(name string) string { return read(t, filepath.Join(dir, "out", name)) }
	eventually(t, "a file per service", func() bool {
		return out("api.conf") == "api: "+strings.TrimSpace(hostports(2)) && strings.HasPrefix(out("web.conf"), "web:")
	})
	eventually(t, "watches", func() bool { return m.watchCount() >= 3 })
	// Reloads run in the background: each step waits for its own.
	reloaded := func(what string, n int) {
		t.Helper()
		eventually(t, what, func() bool { return len(reloads(t, dir)) >= n })
	}
	reloaded("a reload per file", 2)

	// A new service: its file, and one reload for it.
	b.after(t, "db's file", func() { m.setServices("db", instances(1)) }, func() bool { return strings.HasPrefix(out("db.conf"), "db:") })
	reloaded("db's reload", 3)
	// An instance change rewrites that service's file only.
	apiRenders, webRenders := renders(met, "sites.toml#api"), renders(met, "sites.toml#web")
	b.after(t, "web's file", func() { m.setServices("web", instances(4)) }, func() bool { return strings.Count(out("web.conf"), ":") == 5 })
	if n := renders(met, "sites.toml#api"); n != apiRenders {
		t.Errorf("api rendered %d more times on a change to web", n-apiRenders)
	}
	if n := renders(met, "sites.toml#web"); n != webRenders+1 {
		t.Errorf("web rendered %d more times, want 1", n-webRenders)
	}
	reloaded("web's reload", 4)
	// A service gone: its file goes, with a reload; the foreign file stays.
	b.after(t, "api's file removed", func() { m.setServices("api", nil) }, func() bool {
		_, err := os.Stat(filepath.Join(dir, "out/api.conf"))
		return os.IsNotExist(err)
	})
	reloaded("api's reload", 5)
	got := reloads(t, dir)
	slices.Sort(got[:2])
	want := []string{"api.conf", "web.conf", "db.conf", "web.conf", "api.conf"}
	for i := range want {
		want[i] = filepath.Join(dir, "out", want[i])
	}
	if !slices.Equal(got, want) {
		t.Errorf("reloads %q, want %q", got, want)
	}
	if got := files(t, dir); !slices.Equal(got, []string{".herald-sites.toml.json", "db.conf", "default.conf", "web.conf"}) {
		t.Errorf("out/ holds %q", got)
	}
	if read(t, foreign) != "mine" {
		t.Error("the foreign file was changed")
	}
}

// A catalog that empties at once is held like a service list: no file is removed until
// it persists for drop_hold.
func TestFanoutTransientEmptyDeletesNothing(t *testing.T) {
	m := newMem(nil)
	m.svcs["web"] = instances(1) // one change empties it: no legitimate smaller step between
	dir, load := fanoutDir(t, "drop_hold = \"1h\"\n", siteTmpl)
	met := NewMetrics(prometheus.NewRegistry())
	rn := &Runner{Store: m, Metrics: met}
	startRun(t, rn, load(), nil)
	eventually(t, "files", func() bool { return len(files(t, dir)) == 2 })
	eventually(t, "watches", func() bool { return m.watchCount() >= 2 })
	m.setServices("web", nil)
	eventually(t, "the empty list held", func() bool { return held(met, "sites.toml") == 1 })
	if got := files(t, dir); !slices.Equal(got, []string{".herald-sites.toml.json", "web.conf"}) {
		t.Fatalf("out/ while held: %q", got)
	}
	if st := rn.Statuses(); !slices.ContainsFunc(st, func(s Status) bool { return strings.Contains(s.Held, `each = "services"`) }) {
		t.Errorf("/healthz does not say the list is held: %+v", st)
	}
	m.setServices("web", instances(2))
	eventually(t, "web rendered again", func() bool { return strings.Count(read(t, filepath.Join(dir, "out/web.conf")), ":") == 3 })
}

// The record survives a restart: a service gone while herald was down loses its file at
// the next start; a file herald made but someone changed since, and files herald never
// made, stay.
func TestFanoutRecordSurvivesRestart(t *testing.T) {
	m := newMem(nil)
	for _, s := range []string{"a", "b", "c", "d"} {
		m.svcs[s] = instances(1)
	}
	dir, load := fanoutDir(t, "", siteTmpl)
	os.WriteFile(filepath.Join(dir, "out/foreign.conf"), []byte("x"), 0o644)
	if err := (&Runner{Store: m}).RenderOnce(context.Background(), load()); err != nil {
		t.Fatal(err)
	}
	if got := files(t, dir); !slices.Equal(got, []string{".herald-sites.toml.json", "a.conf", "b.conf", "c.conf", "d.conf", "foreign.conf"}) {
		t.Fatalf("out/ after the first render: %q", got)
	}
	os.WriteFile(filepath.Join(dir, "out/c.conf"), []byte("edited by hand"), 0o644)
	m.svcs["b"], m.svcs["c"] = nil, nil
	// A crash mid-write left a stage of a recorded file; a name of that shape for a file
	// herald did not make is not herald's.
	os.WriteFile(filepath.Join(dir, "out/.a.conf1234567890123"), []byte("half"), 0o600)
	os.WriteFile(filepath.Join(dir, "out/.foreign.conf1234567890123"), []byte("x"), 0o600)

	var b bursts
	rn := b.watch(&Runner{Store: m})
	startRun(t, rn, load(), nil)
	eventually(t, "b's file removed", func() bool { return !slices.Contains(files(t, dir), "b.conf") })
	// The record is written when the burst ends: until then its stage may be in out/ too.
	rec := filepath.Join(dir, "out/.herald-sites.toml.json")
	eventually(t, "the record without b and c", func() bool {
		r := read(t, rec)
		return !strings.Contains(r, "c.conf") && !strings.Contains(r, "b.conf") && strings.Contains(r, "a.conf")
	})
	if got := files(t, dir); !slices.Equal(got, []string{".foreign.conf1234567890123", ".herald-sites.toml.json", "a.conf", "c.conf", "d.conf", "foreign.conf"}) {
		t.Fatalf("out/ after the restart: %q", got)
	}
}

// herald render: a list that fell to nothing deletes nothing and says why; new and
// remaining items are written.
func TestFanoutRenderOnceRefusesToEmpty(t *testing.T) {
	m := newMem(nil)
	m.svcs["a"], m.svcs["b"] = instances(1), instances(1)
	dir, load := fanoutDir(t, "", siteTmpl)
	if err := (&Runner{Store: m}).RenderOnce(context.Background(), load()); err != nil {
		t.Fatal(err)
	}
	m.svcs["a"], m.svcs["b"] = nil, nil
	err := (&Runner{Store: m}).RenderOnce(context.Background(), load())
	if err == nil || !strings.Contains(err.Error(), `the list of each = "services" fell from 2 to 0 item(s)`) {
		t.Fatalf("err = %v", err)
	}
	if got := files(t, dir); !slices.Equal(got, []string{".herald-sites.toml.json", "a.conf", "b.conf"}) {
		t.Fatalf("out/ after an empty list: %q", got)
	}
	// The user's way to say the list may empty: the guard off for the resource.
	dir2 := filepath.Dir(filepath.Dir(load()[0].File))
	toml := filepath.Join(dir2, "conf.d/sites.toml")
	raw, _ := os.ReadFile(toml)
	os.WriteFile(toml, append(raw, "min_instances = 0\nmax_drop = \"100%\"\n"...), 0o644)
	if err := (&Runner{Store: m}).RenderOnce(context.Background(), load()); err != nil {
		t.Fatal(err)
	}
	if got := files(t, dir); len(got) != 0 {
		t.Fatalf("out/ with the guard off: %q", got)
	}
}

// Two items rendering to one file are an error naming both; an item whose dest would
// leave the directory is left out.
func TestFanoutBadItems(t *testing.T) {
	m := newMem(nil)
	m.svcs["ab"], m.svcs["ac"] = instances(1), instances(1)
	_, load := fanoutDir(t, "", siteTmpl)
	rs := load()
	var err error
	if rs[0].DestField, err = template.ParseField("dest", filepath.Join(filepath.Dir(rs[0].Dest), "{{.Name | trunc 1}}.conf")); err != nil {
		t.Fatal(err)
	}
	err = (&Runner{Store: m}).RenderOnce(context.Background(), rs)
	if err == nil || !strings.Contains(err.Error(), `items "ab" and "ac" both render to`) {
		t.Fatalf("err = %v", err)
	}

	m = newMem(nil)
	m.svcs["../../escape"], m.svcs["ok"] = instances(1), instances(1)
	dir, load := fanoutDir(t, "", siteTmpl)
	if err := (&Runner{Store: m}).RenderOnce(context.Background(), load()); err != nil {
		t.Fatal(err)
	}
	if got := files(t, dir); !slices.Equal(got, []string{".herald-sites.toml.json", "ok.conf"}) {
		t.Fatalf("out/: %q", got)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "escape.conf")); !os.IsNotExist(err) {
		t.Fatalf("an item escaped out/: %v", err)
	}
}

// Each file goes through its own check: one that fails stays as it was (here: is never
// written), the others are written, and the render reports the one that failed.
func TestFanoutCheckPerFile(t *testing.T) {
	m := newMem(nil)
	m.svcs["good"], m.svcs["bad"] = instances(1), instances(1)
	dir, load := fanoutDir(t, "check_cmd = \"! grep -q bad {{.src}}\"\n", siteTmpl)
	err := (&Runner{Store: m}).RenderOnce(context.Background(), load())
	if err == nil || !strings.Contains(err.Error(), "sites.toml#bad") || strings.Contains(err.Error(), "sites.toml#good") {
		t.Fatalf("err = %v", err)
	}
	if got := files(t, dir); !slices.Equal(got, []string{".herald-sites.toml.json", "good.conf"}) {
		t.Fatalf("out/: %q", got)
	}
}

// A fan-out resource edited while herald watches: a new template re-renders every file;
// a new dest writes the new files and removes the ones herald made at the old names.
func TestFanoutHotReload(t *testing.T) {
	m := newMem(nil)
	m.svcs["api"], m.svcs["web"] = instances(1), instances(1)
	dir, load := fanoutDir(t, "", siteTmpl)
	updates := make(chan resources.ResourceSet)
	var b bursts
	startRun(t, b.watch(&Runner{Store: m}), load(), updates)
	eventually(t, "files", func() bool { return len(files(t, dir)) == 3 })
	reload := func() resources.ResourceSet {
		return resources.NewResourceSet(resources.Load(resources.LoadOptions{ConfDir: dir}))
	}
	os.WriteFile(filepath.Join(dir, "templates/site.tmpl"), []byte("v2 "+siteTmpl), 0o644)
	updates <- reload()
	eventually(t, "the new template in both files", func() bool {
		return strings.HasPrefix(read(t, filepath.Join(dir, "out/api.conf")), "v2 api:") &&
			strings.HasPrefix(read(t, filepath.Join(dir, "out/web.conf")), "v2 web:")
	})
	toml := filepath.Join(dir, "conf.d/sites.toml")
	raw, _ := os.ReadFile(toml)
	os.WriteFile(toml, []byte(strings.Replace(string(raw), "{{.Name}}.conf", "{{.Name}}.site", 1)), 0o644)
	updates <- reload()
	eventually(t, "files at the new names only", func() bool {
		return slices.Equal(files(t, dir), []string{".herald-sites.toml.json", "api.site", "web.site"})
	})
	eventually(t, "the record names the new files", func() bool {
		r := read(t, filepath.Join(dir, "out/.herald-sites.toml.json"))
		return strings.Contains(r, "api.site") && !strings.Contains(r, "api.conf")
	})
}

// {{.item}} in a fan-out resource's commands is the item's key, quoted for the shell like
// {{.dest}}: a service name full of shell syntax stays one word and runs nothing; the
// reload of a removed file names the item the record kept for it.
func TestFanoutItemInCommands(t *testing.T) {
	hostile := "x';touch PWNED;'$(touch PWNED)"
	m := newMem(nil)
	m.svcs["web"], m.svcs[hostile] = instances(1), instances(1)
	dir, load := fanoutDir(t, "check_cmd = \"test {{.item}} != bad\"\n", siteTmpl)
	toml := filepath.Join(dir, "conf.d/sites.toml")
	raw, _ := os.ReadFile(toml)
	os.WriteFile(toml, []byte(strings.Replace(string(raw), "echo {{.dest}} >>", "cd "+dir+" && printf '%s\\\\n' {{.item}} >>", 1)), 0o644)
	if err := (&Runner{Store: m}).RenderOnce(context.Background(), load()); err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSpace(read(t, filepath.Join(dir, "reloads"))), "\n")
	slices.Sort(got)
	if want := []string{"web", hostile}; !slices.Equal(got, want) {
		t.Fatalf("reload lines %q, want %q", got, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "PWNED")); !os.IsNotExist(err) {
		t.Fatal("a service name ran a command")
	}
	// The item that fails its check keeps no file; the removal reload names its item.
	m.svcs["bad"] = instances(1)
	if err := (&Runner{Store: m}).RenderOnce(context.Background(), load()); err == nil || !strings.Contains(err.Error(), "sites.toml#bad") {
		t.Fatalf("err = %v", err)
	}
	os.Remove(filepath.Join(dir, "reloads"))
	delete(m.svcs, "bad")
	m.svcs["web"] = nil
	if err := (&Runner{Store: m}).RenderOnce(context.Background(), load()); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(dir, "reloads")); got != "web\n" {
		t.Fatalf("reload after web left: %q", got)
	}
}

// A record another user could have written (writable by others, or someone else's) is
// not trusted: the files it lists are never deleted on its word.
func TestFanoutUntrustedRecord(t *testing.T) {
	m := newMem(nil)
	m.svcs["web"] = instances(1)
	dir, load := fanoutDir(t, "", siteTmpl)
	victim := filepath.Join(dir, "out/victim.conf")
	os.WriteFile(victim, []byte("root's file"), 0o644)
	rec := filepath.Join(dir, "out/.herald-sites.toml.json")
	planted := fmt.Sprintf(`{"files": {%q: {"sha256": %q, "item": "victim"}}}`, victim, contentSum([]byte("root's file")))
	for _, c := range []struct {
		name  string
		plant func()
	}{
		{"writable by others", func() { os.WriteFile(rec, []byte(planted), 0o644); os.Chmod(rec, 0o666) }},
		{"someone else's", func() {
			os.WriteFile(rec, []byte(planted), 0o644)
			if os.Geteuid() == 0 {
				os.Chown(rec, 65534, 65534)
			} else {
				os.Chmod(rec, 0o662) // as a non-root user: the other refusal
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			os.Remove(rec)
			c.plant()
			if err := (&Runner{Store: m}).RenderOnce(context.Background(), load()); err == nil || !strings.Contains(err.Error(), "herald deletes none") {
				t.Fatalf("err = %v, want the record refused", err)
			}
			if read(t, victim) != "root's file" {
				t.Fatal("a planted record deleted a file")
			}
			// herald's own record, of what it wrote, replaced the planted one.
			if err := resources.CheckOwnFile(rec); err != nil || strings.Contains(read(t, rec), "victim") || !strings.Contains(read(t, rec), "web.conf") {
				t.Fatalf("record after the render: %v\n%s", err, read(t, rec))
			}
		})
	}
}

// With spare_file, an item's file gets a spare from its second write on; when the item
// goes, its spare goes with its file.
func TestFanoutSpareFileGoesWithItsFile(t *testing.T) {
	m := newMem(nil)
	m.svcs["api"], m.svcs["web"] = instances(2), instances(1)
	dir, load := fanoutDir(t, "spare_file = true\n", siteTmpl)
	var b bursts
	rn := b.watch(&Runner{Store: m})
	startRun(t, rn, load(), nil)
	out := func(name string) string { return read(t, filepath.Join(dir, "out", name)) }
	eventually(t, "a file per service", func() bool {
		return strings.HasPrefix(out("api.conf"), "api:") && strings.HasPrefix(out("web.conf"), "web:")
	})
	b.after(t, "api's second write", func() { m.setServices("api", instances(3)) }, func() bool { return strings.Count(out("api.conf"), ":") == 4 })
	if got := files(t, dir); !slices.Equal(got, []string{".api.conf.herald-spare", ".herald-sites.toml.json", "api.conf", "web.conf"}) {
		t.Fatalf("out/ holds %q", got)
	}
	b.after(t, "api's file removed", func() { m.setServices("api", nil) }, func() bool {
		_, err := os.Stat(filepath.Join(dir, "out/api.conf"))
		return os.IsNotExist(err)
	})
	if got := files(t, dir); !slices.Equal(got, []string{".herald-sites.toml.json", "web.conf"}) {
		t.Fatalf("out/ holds %q", got)
	}
}
