package template

import (
	"reflect"
	"strings"
	"testing"

	"github.com/heraldhq/herald/backends"
)

func TestEachLists(t *testing.T) {
	src := MapSource{
		KV: map[string]string{"/apps/a/port": "1", "/apps/b/port": "2", "/tenants/x": "1", "/tenants/y": "2"},
		Svcs: map[string][]backends.Service{"web": {
			{Name: "web", ID: "w1", Address: "10.0.0.1", Port: 80, Status: "passing", Healthy: true},
			{Name: "web", Address: "10.0.0.2", Port: 80, Status: "passing", Healthy: true},
		}},
		Names: []backends.ServiceSummary{{Name: "api", Tags: []string{"http"}}, {Name: "db"}, {Name: "web", Tags: []string{"http", "prod"}}},
	}
	keys := func(items []Item) []string {
		var out []string
		for _, it := range items {
			out = append(out, it.Key)
		}
		return out
	}
	for _, c := range []struct {
		spec  string
		want  []string
		reads string
	}{
		{"services", []string{"api", "db", "web"}, "services"},
		{"services tag=http", []string{"api", "web"}, "services"},
		{"services tag=http tag=prod", []string{"web"}, "services"},
		{"services w* d*", []string{"db", "web"}, "services"},
		{"service web", []string{"w1", "10.0.0.2:80"}, "service:web"},
		{"ls /tenants", []string{"x", "y"}, "prefix:/tenants"},
		{"lsdir /apps", []string{"a", "b"}, "prefix:/apps"},
		{"ls /none", nil, "prefix:/none"},
	} {
		t.Run(c.spec, func(t *testing.T) {
			e, err := ParseEach(c.spec)
			if err != nil {
				t.Fatal(err)
			}
			items, reads, err := e.List(src, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if got := keys(items); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("items %q, want %q", got, c.want)
			}
			var ids []string
			for _, tg := range reads.Targets() {
				ids = append(ids, tg.ID())
			}
			if !strings.Contains(strings.Join(ids, " "), c.reads) {
				t.Fatalf("reads %q, want one like %q", ids, c.reads)
			}
		})
	}
	// The item is the render's dot: a service's summary, an instance, a key name.
	e, _ := ParseEach("service web")
	items, _, _ := e.List(src, Options{})
	if s, ok := items[0].Value.(backends.Service); !ok || s.Address != "10.0.0.1" {
		t.Fatalf("instance item = %#v", items[0].Value)
	}
	tm, err := Parse("t", `{{.Name}} {{.Address}}:{{.Port}}`)
	if err != nil {
		t.Fatal(err)
	}
	if out, _, err := tm.Execute(src, Options{Data: items[0].Value}); err != nil || string(out) != "web 10.0.0.1:80" {
		t.Fatalf("render with item: %q %v", out, err)
	}
}

func TestParseEachErrors(t *testing.T) {
	for spec, want := range map[string]string{
		"":                "want services, service NAME",
		"nodes":           `unknown list "nodes"`,
		"service":         "service needs a NAME",
		"ls":              "ls needs one absolute prefix",
		"lsdir apps":      "lsdir needs one absolute prefix",
		"ls /a /b":        "ls needs one absolute prefix",
		"services [x":     `pattern "[x"`,
		"services tag=":   "tag= needs a tag",
		`ls /a"}}{{"`:     "",
		"service web bad": "",
	} {
		_, err := ParseEach(spec)
		if want == "" {
			// Quoted into the listing template, never parsed as template text.
			if err != nil && !strings.Contains(err.Error(), "filter") {
				t.Fatalf("%q: %v", spec, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%q: err %v, want %q", spec, err, want)
		}
	}
}

func TestFieldStaticDir(t *testing.T) {
	for text, want := range map[string]string{
		"/etc/nginx/sites/{{.Name}}.conf": "/etc/nginx/sites",
		"/srv/app-{{.}}/x.conf":           "/srv",
		"/{{.}}":                          "/",
		"{{.}}.conf":                      ".",
		"out/{{.}}":                       "out",
	} {
		f, err := ParseField("dest", text)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.StaticDir(); got != want {
			t.Fatalf("%q: %q, want %q", text, got, want)
		}
	}
	f, _ := ParseField("dest", "/x/{{.Name | lower}}.conf")
	if got, err := f.Execute(backends.ServiceSummary{Name: "Web"}); err != nil || got != "/x/web.conf" {
		t.Fatalf("%q %v", got, err)
	}
	if _, err := f.Execute("plain"); err == nil {
		t.Fatal("a field naming a field the item lacks must fail")
	}
}

// herald check runs a fan-out template with an empty item of its list's kind: fields of
// the item are no error there; without one they would be.
func TestCheckItem(t *testing.T) {
	tm, err := Parse("t", `{{.Name}}{{range service .Name}}{{.Port}}{{end}}`)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := ParseEach("services")
	if err := tm.CheckItem(e.Sample()); err != nil {
		t.Fatalf("with a sample item: %v", err)
	}
	if err := tm.Check(); err == nil {
		t.Fatal("without an item, .Name must fail the check")
	}
	e, _ = ParseEach("ls /x")
	if err := tm.CheckItem(e.Sample()); err == nil {
		t.Fatal("a key name has no .Name: the check must say so")
	}
}

// FuzzEach: any `each` value either fails to parse with an error naming it, or lists
// from a source without panicking; a dest field never panics either.
func FuzzEach(f *testing.F) {
	for _, s := range []string{"services", "services w* tag=http", "service web any", "service prod.web@dc1", "ls /a", "lsdir /a/b", `ls /"}}{{`, "services [", "x y z"} {
		f.Add(s, "/x/{{.Name}}.conf")
	}
	src := MapSource{KV: map[string]string{"/a/b/c": "1", "/a/x": "2"}, Names: []backends.ServiceSummary{{Name: "web", Tags: []string{"http"}}},
		Svcs: map[string][]backends.Service{"web": {{Name: "web", Address: "10.0.0.1", Port: 80, Status: "passing", Healthy: true}}}}
	f.Fuzz(func(t *testing.T, spec, dest string) {
		e, err := ParseEach(spec)
		if err != nil {
			if !strings.Contains(err.Error(), "each ") {
				t.Fatalf("error does not name the each value: %v", err)
			}
			return
		}
		items, _, err := e.List(src, Options{})
		if err == nil {
			for _, it := range items {
				if it.Key == "" && it.Value != "" {
					t.Fatalf("item with an empty key: %#v", it)
				}
			}
		}
		if fl, err := ParseField("dest", dest); err == nil {
			_ = fl.StaticDir()
			_, _ = fl.Execute(e.Sample())
		}
	})
}
