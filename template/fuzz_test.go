package template

import (
	"net"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/heraldhq/herald/backends"
)

func fuzzSource() MapSource {
	return MapSource{
		KV: map[string]string{
			"/app":                       "root",
			"/app/db/user":               "admin",
			"/app/db/pass":               "s3cret",
			"/app/port":                  "443",
			"/app/a-b/x":                 "dash",
			"/app/upstream/host1":        "10.0.0.1:80",
			"/app/upstream/host1/domain": "a.example",
			"/app/upstream/host2":        "10.0.0.2:80",
			"/app/json":                  `{"a":[1,2,{"b":null}],"c":"d"}`,
			"/app/arr":                   `["x","y"]`,
			"/app/b64":                   "aGk=",
			"/apple":                     "not under /app",
			"/top":                       "t",
		},
		Svcs: map[string][]backends.Service{"web": {
			{Name: "web", ID: "1", Address: "10.0.0.1", Port: 80, Status: "passing", Tags: []string{"a"}},
			{Name: "web", ID: "2", Address: "fd00::1", Port: 80, Status: "critical"},
		}},
		Names: []backends.ServiceSummary{{Name: "web", Tags: []string{"a"}}},
	}
}

// fuzzSkip rejects texts that make text/template or sprig do unbounded work: loops and
// recursion, functions that build outputs from a count, slow crypto, and numbers long
// enough to feed them. Those are not bugs herald can fix (a template author can write an
// infinite loop), and they would stall or exhaust the fuzzer instead of finding panics.
func fuzzSkip(text string) bool {
	if len(text) > 256 {
		return true
	}
	for _, s := range []string{
		"range", "template", "block", "define", "until", "repeat", "indent", "seq", "replace",
		"rand", "gen", "derive", "bcrypt", "htpasswd", "getHost", "Unix", "Nano",
	} {
		if strings.Contains(text, s) {
			return true
		}
	}
	digits := 0
	for _, r := range text {
		if r >= '0' && r <= '9' {
			if digits++; digits >= 5 {
				return true
			}
		} else {
			digits = 0
		}
	}
	return false
}

// FuzzExecute renders random template text against a fixed Source: parsing or rendering
// may fail, but must never panic, and what a render records must stay well formed:
// clean absolute keys, sorted, unique, under the prefix and inside the scope.
func FuzzExecute(f *testing.F) {
	f.Add(`{{getv "/app/port"}}`)
	src := fuzzSource()
	res := fakeResolver{ips: map[string][]net.IP{"h": {net.ParseIP("10.0.0.1")}}}
	f.Fuzz(func(t *testing.T, text string) {
		if fuzzSkip(text) {
			return // input whose only effect is a huge loop or output, not a parser path
		}
		tm, err := Parse("fuzz", text)
		if err != nil {
			return
		}
		tm.resolver = res
		_ = tm.Check() // herald check's empty-store render: it must not panic either
		for _, opts := range []Options{
			{},
			{Prefix: "/app", Scope: []string{"/app/db", "/app/upstream/"}},
		} {
			_, reads, _ := tm.Execute(src, opts)
			if reads == nil {
				t.Fatal("nil Reads")
			}
			checkReads(t, reads, opts)
		}
	})
}

func checkReads(t *testing.T, r *Reads, opts Options) {
	t.Helper()
	for _, list := range [][]string{r.Keys, r.Prefixes} {
		if !slices.IsSorted(list) || len(slices.Compact(slices.Clone(list))) != len(list) {
			t.Fatalf("not sorted and unique: %q", list)
		}
		for _, k := range list {
			if !strings.HasPrefix(k, "/") || path.Clean(k) != k {
				t.Fatalf("recorded %q is not clean and absolute", k)
			}
			if opts.Prefix != "" && !backends.UnderPrefix(k, opts.Prefix) {
				t.Fatalf("recorded %q is outside prefix %s", k, opts.Prefix)
			}
			if len(opts.Scope) > 0 {
				in := false
				for _, s := range opts.Scope {
					in = in || backends.UnderPrefix(k, backends.CleanKey(s))
				}
				if !in {
					t.Fatalf("recorded %q is outside scope %q", k, opts.Scope)
				}
			}
		}
	}
}
