package template

import (
	"slices"
	"testing"

	"github.com/heraldhq/herald/backends"
)

func TestReads(t *testing.T) {
	src := MapSource{KV: map[string]string{
		"/app/port": "80", "/app/db/user": "u", "/app/db/pass": "p", "/other/x": "1",
		"/p/app/port": "81",
	}}
	tests := []struct {
		name string
		text string
		opts Options
		want Reads
	}{
		{"get getv exists record the key", `{{get "/app/port"}}{{getv "/app/db/user"}}{{exists "/app/db/pass"}}`, Options{},
			Reads{Keys: []string{"/app/db/pass", "/app/db/user", "/app/port"}}},
		{"missing keys are recorded", `{{getv "/nope" "d"}}{{exists "/nope2"}}`, Options{},
			Reads{Keys: []string{"/nope", "/nope2"}}},
		{"deduplicated and sorted", `{{getv "/b" ""}}{{getv "/a" ""}}{{getv "/b" ""}}{{exists "/a"}}`, Options{},
			Reads{Keys: []string{"/a", "/b"}}},
		{"prefix applied", `{{getv "/app/port"}}{{getv "/" ""}}{{range gets "/app/*"}}{{end}}`, Options{Prefix: "/p"},
			Reads{Keys: []string{"/p"}, Prefixes: []string{"/p/app"}}},
		{"keys under a listed prefix are left out", `{{getv "/app/db/user"}}{{getv "/app/port"}}{{ls "/app/db"}}{{getv "/app/db/pass"}}`, Options{},
			Reads{Keys: []string{"/app/port"}, Prefixes: []string{"/app/db"}}},
		{"prefix / is none", `{{getv "/app/port"}}`, Options{Prefix: "/"}, Reads{Keys: []string{"/app/port"}}},
		{"keys that can never exist are not recorded", `{{exists "app/port"}}{{exists "/app/port/"}}{{exists "/app//port"}}{{exists ""}}`, Options{},
			Reads{}},
		{"gets records the dir of the literal part", `{{gets "/app/db/*"}}{{gets "/app/d*/x"}}{{getvs "/other/?"}}`, Options{},
			Reads{Prefixes: []string{"/app", "/app/db", "/other"}}},
		{"gets without meta reads one key", `{{gets "/app/port"}}`, Options{}, Reads{Keys: []string{"/app/port"}}},
		{"gets from the root", `{{gets "*/x"}}{{gets "/*"}}{{gets "[/]x"}}`, Options{}, Reads{Prefixes: []string{"/"}}},
		{"gets escape ends the literal part", `{{gets "/app/\\*x/y"}}`, Options{}, Reads{Prefixes: []string{"/app"}}},
		{"ls and lsdir record the dir", `{{ls "/app/db/"}}{{lsdir "/other"}}{{ls "/"}}`, Options{},
			Reads{Prefixes: []string{"/", "/app/db", "/other"}}},
		{"ls of a relative path reads nothing", `{{ls "app"}}{{lsdir ""}}{{lsdir "/"}}`, Options{}, Reads{}},
		// The lists are empty, so the catalog is read to tell absent from empty; it is
		// not loaded in this source, so nothing is reported absent and tag.web stands
		// for itself until it is.
		{"service records the query", `{{service "web"}}{{service "web|passing"}}{{service "tag.web@dc1" "any"}}{{service "api" "warning,passing"}}`, Options{},
			Reads{Services: []backends.ServiceQuery{
				{Name: "api", Statuses: []string{"passing", "warning"}},
				{Name: "tag.web", Datacenter: "dc1", Statuses: []string{"passing", "warning", "critical", "maintenance"}},
				{Name: "web"},
			}, Catalog: true}},
		{"services records the catalog", `{{services}}`, Options{}, Reads{ServiceNames: true}},
		{"scope: reads outside are not recorded", `{{getv "/app/port" ""}}{{getv "/app/db/user"}}{{gets "/other/*"}}{{ls "/other"}}`,
			Options{Scope: []string{"/app/db"}},
			Reads{Keys: []string{"/app/db/user"}}},
		{"scope: a list above the scope reads the scope", `{{ls "/app"}}{{gets "/*/*/*"}}`,
			Options{Scope: []string{"/app/db", "/other/x/", "/app/db/user"}},
			Reads{Prefixes: []string{"/app/db", "/other/x"}}},
		{"scope: a list inside the scope", `{{ls "/app/db"}}`, Options{Scope: []string{"/app"}},
			Reads{Prefixes: []string{"/app/db"}}},
		{"scope with prefix", `{{getv "/db/user" ""}}{{getv "/port" ""}}`, Options{Prefix: "/app", Scope: []string{"/app/db"}},
			Reads{Keys: []string{"/app/db/user"}}},
		{"functions that read nothing", `{{base "/a"}}{{json "{}"}}{{seq 1 2}}{{getenv "X"}}`, Options{}, Reads{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, got, err := render(t, tc.text, src, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !readsEqual(got, &tc.want) {
				t.Errorf("Reads = %+v\nwant %+v", *got, tc.want)
			}
		})
	}
}

func TestReadsTargets(t *testing.T) {
	web := backends.ServiceQuery{Name: "web"}
	api := backends.ServiceQuery{Name: "api", Tag: "v2"}
	tests := []struct {
		name  string
		reads *Reads
		want  []string // Target IDs
	}{
		{"nil", nil, nil},
		{"empty", &Reads{}, nil},
		{"keys are watched as prefixes", &Reads{Keys: []string{"/a/x", "/b"}}, []string{"prefix:/a/x", "prefix:/b"}},
		{"prefixes cover keys and each other", &Reads{Keys: []string{"/a/x", "/a/y/z", "/ab"}, Prefixes: []string{"/a", "/a/y"}},
			[]string{"prefix:/a", "prefix:/ab"}},
		{"root covers all", &Reads{Keys: []string{"/a"}, Prefixes: []string{"/"}}, []string{"prefix:/"}},
		{"one per service query, then the catalog", &Reads{Keys: []string{"/k"}, Services: []backends.ServiceQuery{api, web}, ServiceNames: true},
			[]string{"prefix:/k", "service:v2.api|passing", "service:web|passing", "services"}},
		{"the datacenters last", &Reads{ServiceNames: true, Datacenters: true}, []string{"services", "datacenters"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, tg := range tc.reads.Targets() {
				got = append(got, tg.ID())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Targets = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestReadsTouches(t *testing.T) {
	r := &Reads{Keys: []string{"/app/port", "/b/missing"}, Prefixes: []string{"/app/db", "/svc"}}
	tests := []struct {
		key  string
		want bool
	}{
		{"/app/port", true},
		{"/b/missing", true},       // a key read while missing: its creation matters
		{"/app/db", true},          // the listed prefix itself
		{"/app/db/user", true},     // under a listed prefix
		{"/app/db/a/b/c", true},    // deep under it
		{"/svc/x", true},           //
		{"/app/port/child", false}, // a key read is not a prefix
		{"/app", false},
		{"/app/dbx", false}, // prefixes match on path boundaries
		{"/app/d", false},
		{"/b", false},
		{"/other", false},
		{"/", false},
		{"app/db/user/", true}, // keys are cleaned first
		{"/app//port", true},
	}
	for _, tc := range tests {
		if got := r.Touches(tc.key); got != tc.want {
			t.Errorf("Touches(%q) = %v, want %v", tc.key, got, tc.want)
		}
	}
	if (*Reads)(nil).Touches("/a") || (&Reads{}).Touches("/a") {
		t.Error("empty Reads touched a key")
	}
	if !(&Reads{Prefixes: []string{"/"}}).Touches("/anything/at/all") {
		t.Error("a read of / does not touch every key")
	}
}

// Touches must agree with what actually changes the output: for each key a template reads
// or lists, changing it changes the output; other keys leave it unchanged.
func TestTouchesAgreesWithRender(t *testing.T) {
	text := `{{getv "/cfg/port" "80"}} {{range ls "/pool"}}{{.}} {{end}}{{range gets "/acl/*"}}{{.Value}} {{end}}{{if exists "/flag"}}F{{end}}`
	base := map[string]string{"/cfg/port": "8080", "/pool/a": "1", "/acl/x": "x", "/acl/x/deep": "d", "/unrelated": "u"}
	tm, err := Parse("touch", text)
	if err != nil {
		t.Fatal(err)
	}
	out0, reads, err := tm.Execute(MapSource{KV: base}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, change := range []struct {
		key, value string
		changes    bool
	}{
		{"/cfg/port", "9090", true},
		{"/pool/b", "2", true},
		{"/acl/y", "y", true},
		{"/flag", "1", true},
		{"/unrelated", "v", false},
		{"/cfg/other", "v", false},
	} {
		kv := map[string]string{}
		for k, v := range base {
			kv[k] = v
		}
		kv[change.key] = change.value
		out, _, err := tm.Execute(MapSource{KV: kv}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if changed := string(out) != string(out0); changed != change.changes {
			t.Errorf("setting %s: output changed = %v, want %v", change.key, changed, change.changes)
		}
		if change.changes && !reads.Touches(change.key) {
			t.Errorf("Touches(%s) = false, but it changes the output", change.key)
		}
	}
}
