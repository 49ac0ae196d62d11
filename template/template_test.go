package template

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/Masterminds/sprig/v3"
	"github.com/heraldhq/herald/backends"
)

func render(t *testing.T, text string, src Source, opts Options) (string, *Reads, error) {
	t.Helper()
	tm, err := Parse("test.tmpl", text)
	if err != nil {
		t.Fatalf("Parse(%q): %v", text, err)
	}
	out, reads, err := tm.Execute(src, opts)
	return string(out), reads, err
}

func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, text string
		want       []string // substrings of the error
	}{
		{"unclosed.tmpl", "line one\n{{range ls \"/x\"}}\nno end\n", []string{"unclosed.tmpl", "unclosed.tmpl:4:", "unexpected EOF"}},
		{"badaction.tmpl", "a\nb\n{{getv \"/x\"\n", []string{"badaction.tmpl:4:", "unclosed action started at badaction.tmpl:3"}},
		{"nofunc.tmpl", "ok\n\n\n{{ nosuchfunc \"/x\" }}\n", []string{"nofunc.tmpl:4:", `function "nosuchfunc" not defined`}},
		{"badend.tmpl", "{{end}}", []string{"badend.tmpl:1:", "unexpected {{end}}"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, dir, tc.name, tc.text)
			_, err := ParseFile(p)
			if err == nil {
				t.Fatal("ParseFile succeeded")
			}
			// The full path, so that a user with many template dirs finds the file.
			for _, w := range append([]string{p}, tc.want...) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not hold %q", err, w)
				}
			}
			if _, err := Parse(tc.name, tc.text); err == nil || !strings.Contains(err.Error(), tc.want[1]) {
				t.Errorf("Parse error = %v, want it to hold %q", err, tc.want[1])
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		p := filepath.Join(dir, "nope.tmpl")
		_, err := ParseFile(p)
		if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), p) {
			t.Errorf("error = %v, want ErrNotExist naming %s", err, p)
		}
	})
}

func TestParseFileNamesTemplateLikeConfd(t *testing.T) {
	p := writeFile(t, t.TempDir(), "haproxy.cfg.tmpl", `{{define "x"}}x{{end}}{{template "x"}}-{{getv "/a"}}`)
	tm, err := ParseFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if tm.Name() != "haproxy.cfg.tmpl" {
		t.Errorf("Name = %q, want the base name", tm.Name())
	}
	out, _, err := tm.Execute(MapSource{KV: map[string]string{"/a": "b"}}, Options{})
	if err != nil || string(out) != "x-b" {
		t.Errorf("Execute = %q, %v", out, err)
	}
}

func TestExecuteErrors(t *testing.T) {
	src := MapSource{KV: map[string]string{"/bad": "{not json", "/x": "1"}}
	tests := []struct {
		name, text string
		opts       Options
		want       []string
		is         error
	}{
		{"missing key", "ok\n{{get \"/nope\"}}", Options{}, []string{"errs.tmpl:2:2", "key does not exist: /nope"}, backends.ErrNotFound},
		{"missing key getv", "{{getv \"/nope\"}}", Options{}, []string{"key does not exist: /nope"}, backends.ErrNotFound},
		{"missing key prefix", "{{getv \"/nope\"}}", Options{Prefix: "/app"}, []string{"key does not exist: /nope"}, backends.ErrNotFound},
		{"out of scope", "{{getv \"/x\"}}", Options{Scope: []string{"/other"}}, []string{"key does not exist: /x"}, backends.ErrNotFound},
		{"bad json", "\n\n{{json (getv \"/bad\")}}", Options{}, []string{"errs.tmpl:3:", `"{not json"`, "not a JSON object"}, nil},
		{"bad pattern", "{{gets \"/a/[\"}}", Options{}, []string{"pattern /a/[", "syntax error in pattern"}, path.ErrBadPattern},
		{"div by zero", "{{div 10 (sub 1 1)}}", Options{}, []string{"errs.tmpl:1:", "div 10 0: division by zero"}, errDivZero},
		{"mod by zero", "{{mod 10 0}}", Options{}, []string{"mod 10 0: division by zero"}, errDivZero},
		{"seq too long", "{{seq 1 100000000}}", Options{}, []string{"seq 1 100000000", "more than"}, nil},
		{"bad service filter", `{{service "web" "healthy"}}`, Options{}, []string{`unknown status filter "healthy"`}, nil},
		{"empty service name", `{{service "tag.@dc"}}`, Options{}, []string{"empty service name"}, nil},
		{"map odd", `{{map "a" 1 "b"}}`, Options{}, []string{"invalid map call: 3 arguments"}, nil},
		{"sprig fail", `{{fail "boom"}}`, Options{}, []string{"boom"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tm, err := Parse("errs.tmpl", tc.text)
			if err != nil {
				t.Fatal(err)
			}
			out, reads, err := tm.Execute(src, tc.opts)
			if err == nil {
				t.Fatalf("Execute = %q, want an error", out)
			}
			if out != nil {
				t.Errorf("output %q returned with the error", out)
			}
			if reads == nil {
				t.Error("no Reads with the error")
			}
			if !strings.HasPrefix(err.Error(), "render errs.tmpl: ") {
				t.Errorf("error %q does not start with the template", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not hold %q", err, w)
				}
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.is)
			}
		})
	}
}

func TestExecuteErrorNamesFile(t *testing.T) {
	p := writeFile(t, t.TempDir(), "app.conf.tmpl", "a\nb\n{{getv \"/missing\"}}\n")
	tm, err := ParseFile(p)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = tm.Execute(MapSource{}, Options{})
	var ke *KeyError
	if !errors.As(err, &ke) || ke.Key != "/missing" {
		t.Fatalf("error %v is not a KeyError for /missing", err)
	}
	for _, w := range []string{p, "app.conf.tmpl:3:"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not hold %q", err, w)
		}
	}
}

func TestExecuteNilSource(t *testing.T) {
	tm, err := Parse("n", "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, reads, err := tm.Execute(nil, Options{}); err == nil || reads == nil {
		t.Errorf("Execute(nil) = %v, %v; want an error and empty Reads", reads, err)
	}
}

// A failed render still says what it read, up to the failure, so the runner can load the
// missing data and retry.
func TestReadsRecordedOnFailure(t *testing.T) {
	_, reads, err := render(t, `{{getv "/a"}}{{range ls "/dir"}}{{end}}{{service "web"}}{{getv "/missing"}}{{getv "/never"}}`,
		MapSource{KV: map[string]string{"/p/a": "1"}}, Options{Prefix: "/p"})
	if err == nil {
		t.Fatal("want an error")
	}
	want := &Reads{
		Keys:     []string{"/p/a", "/p/missing"},
		Prefixes: []string{"/p/dir"},
		Services: []backends.ServiceQuery{{Name: "web"}},
		// web's list is empty: the catalog is read to tell absent from empty.
		Catalog: true,
	}
	if !readsEqual(reads, want) {
		t.Errorf("Reads = %+v, want %+v", reads, want)
	}
}

func readsEqual(a, b *Reads) bool {
	return slices.Equal(a.Keys, b.Keys) && slices.Equal(a.Prefixes, b.Prefixes) &&
		slices.EqualFunc(a.Services, b.Services, func(x, y backends.ServiceQuery) bool { return x.String() == y.String() }) &&
		a.ServiceNames == b.ServiceNames && a.Catalog == b.Catalog
}

func TestService(t *testing.T) {
	web := []backends.Service{
		{Name: "web", ID: "b", Address: "10.0.0.2", Port: 80, Status: "passing", Tags: []string{"z", "a"}},
		{Name: "web", ID: "a", Address: "10.0.0.1", Port: 80, Status: "warning", Tags: []string{"canary"}},
		{Name: "web", ID: "c", Address: "10.0.0.3", Port: 80, Status: "critical"},
		{Name: "web", ID: "d", Address: "10.0.0.4", Port: 80, Status: "passing", Tags: []string{"canary"}, Datacenter: "eu"},
	}
	src := MapSource{
		Svcs:  map[string][]backends.Service{"web": web},
		Names: []backends.ServiceSummary{{Name: "web", Tags: []string{"canary", "a"}}, {Name: "db"}},
	}
	tests := []struct{ text, want string }{
		{`{{range service "web"}}{{.ID}} {{end}}`, "b d "},
		{`{{range service "web" "any"}}{{.ID}} {{end}}`, "a b c d "},
		{`{{range service "web|any"}}{{.ID}} {{end}}`, "a b c d "},
		{`{{range service "web|passing,warning"}}{{.ID}} {{end}}`, "a b d "},
		{`{{range service "web" "critical"}}{{.ID}} {{end}}`, "c "},
		{`{{range service "canary.web" "any"}}{{.ID}} {{end}}`, "a d "},
		{`{{range service "canary.web@eu"}}{{.ID}} {{.Datacenter}}{{end}}`, "d eu"},
		{`{{range service "nope"}}x{{else}}none{{end}} {{len (service "nope")}}`, "none 0"},
		{`{{range services}}{{.Name}}:{{join .Tags ","}} {{end}}`, "db: web:canary,a "},
		{`{{with index (service "web") 0}}{{.HostPort}} {{.HasTag "z"}} {{.HasTag "y"}}{{end}}`, "10.0.0.2:80 true false"},
		// reverse and sortByLength work in place; the Source's tag lists must not change.
		{`{{range service "web" "any"}}{{reverse .Tags}}{{sortByLength .Tags}}{{end}}{{range services}}{{reverse .Tags}}{{end}}`, "[canary][canary][a z][a z][][][canary][canary][][a canary]"},
	}
	for _, tc := range tests {
		t.Run(tc.text, func(t *testing.T) {
			out, _, err := render(t, tc.text, src, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if out != tc.want {
				t.Errorf("got %q, want %q", out, tc.want)
			}
		})
	}
	if !slices.Equal(web[0].Tags, []string{"z", "a"}) || !slices.Equal(src.Names[0].Tags, []string{"canary", "a"}) {
		t.Errorf("a render changed the Source's tags: %v %v", web[0].Tags, src.Names[0].Tags)
	}
}

type fakeResolver struct {
	ips map[string][]net.IP
	srv map[string][]*net.SRV
}

func (f fakeResolver) LookupIP(_ context.Context, network, host string) ([]net.IP, error) {
	if network != "ip" {
		return nil, fmt.Errorf("network %q", network)
	}
	if ips, ok := f.ips[host]; ok {
		return ips, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func (f fakeResolver) LookupSRV(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
	key := "_" + service + "._" + proto + "." + name
	if s, ok := f.srv[key]; ok {
		return key, s, nil
	}
	return "", nil, &net.DNSError{Err: "no such host", Name: key, IsNotFound: true}
}

func TestLookup(t *testing.T) {
	res := fakeResolver{
		ips: map[string][]net.IP{
			"db.example": {net.ParseIP("10.0.0.2"), net.ParseIP("fd00::1"), net.ParseIP("10.0.0.10"), net.ParseIP("10.0.0.1")},
			"v6.example": {net.ParseIP("fd00::2")},
		},
		srv: map[string][]*net.SRV{
			"_ldap._tcp.example": {
				{Target: "b.example.", Port: 389, Priority: 10, Weight: 5},
				{Target: "a.example.", Port: 636, Priority: 20, Weight: 5},
				{Target: "a.example.", Port: 389, Priority: 10, Weight: 5},
			},
		},
	}
	tests := []struct{ text, want string }{
		// Sorted as text, as confd does, so that DNS round-robin causes no reload.
		{`{{lookupIP "db.example"}}`, "[10.0.0.1 10.0.0.10 10.0.0.2 fd00::1]"},
		{`{{lookupIPV4 "db.example"}} {{lookupIPV6 "db.example"}}`, "[10.0.0.1 10.0.0.10 10.0.0.2] [fd00::1]"},
		{`{{lookupIPV4 "v6.example"}} {{len (lookupIPV4 "v6.example")}}`, "[] 0"},
		{`{{lookupIP "nx.example"}} {{lookupIPV6 "nx.example"}}`, "[] []"},
		{`{{range lookupSRV "ldap" "tcp" "example"}}{{.Target}}:{{.Port}} {{end}}`, "a.example.:389 a.example.:636 b.example.:389 "},
		{`{{lookupSRV "nx" "tcp" "example"}} {{len (lookupSRV "nx" "tcp" "example")}}`, "[] 0"},
	}
	for _, tc := range tests {
		t.Run(tc.text, func(t *testing.T) {
			tm, err := Parse("lookup", tc.text)
			if err != nil {
				t.Fatal(err)
			}
			tm.resolver = res
			out, _, err := tm.Execute(MapSource{}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tc.want {
				t.Errorf("got %q, want %q", out, tc.want)
			}
		})
	}
}

func TestDatetime(t *testing.T) {
	before := time.Now()
	out, _, err := render(t, `{{(datetime).Format "2006-01-02T15:04:05.000000000Z07:00"}}`, MapSource{}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := time.Parse(time.RFC3339Nano, out)
	if err != nil {
		t.Fatal(err)
	}
	if got.Before(before.Truncate(time.Second)) || got.After(time.Now()) {
		t.Errorf("datetime = %v, want between %v and now", got, before)
	}
}

func TestFileExists(t *testing.T) {
	dir := t.TempDir()
	f := writeFile(t, dir, "present", "")
	locked := filepath.Join(dir, "locked")
	if err := os.Mkdir(locked, 0); err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprintf(`{{fileExists %q}} {{fileExists %q}} {{fileExists %q}}`, f, filepath.Join(dir, "absent"), dir)
	out, _, err := render(t, text, MapSource{}, Options{})
	if err != nil || out != "true false true" {
		t.Errorf("got %q, %v", out, err)
	}
	if os.Geteuid() != 0 {
		// confd counts any error but "does not exist" as existing.
		out, _, err := render(t, fmt.Sprintf(`{{fileExists %q}}`, filepath.Join(locked, "x")), MapSource{}, Options{})
		if err != nil || out != "true" {
			t.Errorf("permission denied: got %q, %v; want true", out, err)
		}
	}
}

func TestFuncNames(t *testing.T) {
	confd, sprigNames, clashes := FuncNames()
	wantConfd := []string{
		"add", "atoi", "base", "base64Decode", "base64Encode", "contains", "datetime", "dir", "div",
		"exists", "fileExists", "get", "getenv", "gets", "getv", "getvs", "join", "json", "jsonArray",
		"lookupIP", "lookupIPV4", "lookupIPV6", "lookupSRV", "ls", "lsdir", "map", "mod", "mul",
		"parseBool", "replace", "reverse", "seq", "sortByLength", "sortKVByLength", "split", "sub",
		"toLower", "toUpper", "trimSuffix",
	}
	if !slices.Equal(confd, wantConfd) {
		t.Errorf("confd names = %v\nwant %v", confd, wantConfd)
	}
	if len(sprigNames) != len(sprig.TxtFuncMap()) {
		t.Errorf("%d sprig names, sprig has %d", len(sprigNames), len(sprig.TxtFuncMap()))
	}
	// Computed independently: a sprig name clashes when confd, herald or text/template
	// already has it.
	own := map[string]bool{"datacenters": true, "service": true, "services": true}
	for _, n := range confd {
		own[n] = true
	}
	var want []string
	for _, n := range sprigNames {
		if own[n] {
			want = append(want, n)
			continue
		}
		if _, err := template.New("").Parse("{{" + n + "}}"); err == nil {
			want = append(want, n) // a text/template builtin
		}
	}
	if !slices.Equal(clashes, want) {
		t.Errorf("clashes = %v, want %v", clashes, want)
	}
	for _, n := range []string{"join", "get", "split", "contains", "replace", "add", "slice"} {
		if !slices.Contains(clashes, n) {
			t.Errorf("clashes lack %s", n)
		}
	}
}

// textBuiltins must be exactly what text/template predefines.
func TestTextBuiltins(t *testing.T) {
	for _, n := range textBuiltins() {
		if _, err := template.New("").Parse("{{" + n + "}}"); err != nil {
			t.Errorf("%s is not a text/template builtin: %v", n, err)
		}
	}
	for n := range sprig.TxtFuncMap() {
		_, err := template.New("").Parse("{{" + n + "}}")
		if (err == nil) != slices.Contains(textBuiltins(), n) {
			t.Errorf("textBuiltins is out of date for %s", n)
		}
	}
}

func TestSprig(t *testing.T) {
	t.Setenv("HERALD_SPRIG", "on")
	src := MapSource{KV: map[string]string{"/a/x": "1", "/a/y": "2"}}
	tests := []struct{ text, want string }{
		// Clashing sprig functions keep working under sprig_<name>.
		{`{{sprig_join "," (list "a" "b")}}`, "a,b"},
		{`{{sprig_split "," "a,b"}}`, "map[_0:a _1:b]"},
		{`{{sprig_contains "ob" "foobar"}}`, "true"},
		{`{{sprig_replace "-" "_" "a-b"}}`, "a_b"},
		{`{{sprig_add 1 2 3}}`, "6"},
		{`{{sprig_get (dict "k" "v") "k"}}`, "v"},
		{`{{sprig_reverse (list 1 2 3)}}`, "[3 2 1]"},
		{`{{sprig_slice (list 1 2 3) 1}}`, "[2 3]"},
		{`{{sprig_seq 3}}`, "1 2 3"},
		{`{{sprig_base "/a/b"}} {{sprig_dir "/a/b"}}`, "b /a"},
		// The confd and builtin meanings win.
		{`{{join (ls "/a") "+"}} {{slice "hello" 1 3}}`, "x+y el"},
		// Everything else is plain sprig, env and expandenv included.
		{`{{env "HERALD_SPRIG"}} {{expandenv "$HERALD_SPRIG"}} {{upper "x"}} {{default "d" ""}} {{getv "/a/x" | quote}}`, `on on X d "1"`},
	}
	for _, tc := range tests {
		t.Run(tc.text, func(t *testing.T) {
			out, _, err := render(t, tc.text, src, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if out != tc.want {
				t.Errorf("got %q, want %q", out, tc.want)
			}
		})
	}
}

// The same template rendered from many goroutines, with different data and prefixes,
// gives each its own output and reads.
func TestExecuteConcurrent(t *testing.T) {
	tm, err := Parse("conc", `{{range gets "/srv/*"}}{{base .Key}}={{.Value}};{{end}}{{getv "/name"}}{{range service "web"}} {{.ID}}{{end}}`)
	if err != nil {
		t.Fatal(err)
	}
	const workers, rounds = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			prefix := fmt.Sprintf("/p%d", w)
			src := MapSource{
				KV: map[string]string{
					prefix + "/name":  fmt.Sprint("n", w),
					prefix + "/srv/a": fmt.Sprint(w),
					prefix + "/srv/b": fmt.Sprint(w * 2),
				},
				Svcs: map[string][]backends.Service{"web": {{Name: "web", ID: fmt.Sprint("w", w), Status: "passing"}}},
			}
			want := fmt.Sprintf("a=%d;b=%d;n%d w%d", w, w*2, w, w)
			for range rounds {
				out, reads, err := tm.Execute(src, Options{Prefix: prefix})
				if err != nil {
					errs <- err
					return
				}
				if string(out) != want {
					errs <- fmt.Errorf("worker %d: got %q, want %q", w, out, want)
					return
				}
				if !slices.Equal(reads.Keys, []string{prefix + "/name"}) || !slices.Equal(reads.Prefixes, []string{prefix + "/srv"}) {
					errs <- fmt.Errorf("worker %d: reads %+v", w, reads)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestMapSource(t *testing.T) {
	m := MapSource{
		KV: map[string]string{"/a": "0", "/a/b": "1", "/a/c/d": "2", "/a-b": "3", "/ab": "4", "/z": "5"},
		Svcs: map[string][]backends.Service{"web": {
			{Name: "web", ID: "2", Address: "10.0.0.2", Status: "passing"},
			{Name: "web", ID: "1", Address: "10.0.0.1"}, // no status counts as passing
			{Name: "web", ID: "3", Address: "10.0.0.3", Status: "critical"},
			{Name: "web", ID: "4", Address: "10.0.0.4", Status: "passing", Datacenter: "eu", Tags: []string{"t"}},
		}},
		Names: []backends.ServiceSummary{{Name: "web"}, {Name: "api"}},
	}
	keys := func(kvs []backends.KVPair) (out []string) {
		for _, kv := range kvs {
			out = append(out, kv.Key)
		}
		return out
	}
	ids := func(s []backends.Service) (out []string) {
		for _, x := range s {
			out = append(out, x.ID)
		}
		return out
	}
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"/a", []string{"/a", "/a/b", "/a/c/d"}},
		{"/a/", []string{"/a", "/a/b", "/a/c/d"}},
		{"a/c", []string{"/a/c/d"}},
		{"/", []string{"/a", "/a-b", "/a/b", "/a/c/d", "/ab", "/z"}},
		{"/nope", nil},
	} {
		if got := keys(m.List(tc.prefix)); !slices.Equal(got, tc.want) {
			t.Errorf("List(%q) = %v, want %v", tc.prefix, got, tc.want)
		}
	}
	if v, ok := m.Get("/a/b"); v != "1" || !ok {
		t.Errorf("Get(/a/b) = %q, %v", v, ok)
	}
	if _, ok := m.Get("/a/"); ok {
		t.Error("Get(/a/) found a key")
	}
	for _, tc := range []struct {
		spec, filter string
		want         []string
	}{
		{"web", "", []string{"1", "2", "4"}},
		{"web", "any", []string{"1", "2", "3", "4"}},
		{"web@us", "", []string{"1", "2"}},
		{"t.web", "tag=t", nil}, // the service "t.web", tag t: none
		{".web", "tag=t", nil},
		{"web", "tag=t", []string{"4"}},
		{"api", "", nil},
	} {
		q, err := backends.ParseServiceQuery(tc.spec, tc.filter)
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(m.Services(q)); !slices.Equal(got, tc.want) {
			t.Errorf("Services(%s|%s) = %v, want %v", tc.spec, tc.filter, got, tc.want)
		}
	}
	if got := m.ServiceNames(); len(got) != 2 || got[0].Name != "api" || m.Names[0].Name != "web" {
		t.Errorf("ServiceNames = %v (source now %v), want sorted copy", got, m.Names)
	}
	if (MapSource{}).ServiceNames() != nil || (MapSource{}).List("/") != nil {
		t.Error("empty MapSource returned data")
	}
}

// blockingSource holds a render inside Get until released, so that a second render is
// sure to overlap it.
type blockingSource struct {
	MapSource
	entered, release chan struct{}
}

func (b blockingSource) Get(key string) (string, bool) {
	if key == "/block" {
		close(b.entered)
		<-b.release
	}
	return b.MapSource.Get(key)
}

// A render stuck in its Source (a slow lookup) neither blocks nor disturbs another render
// of the same template.
func TestExecuteOverlapping(t *testing.T) {
	tm, err := Parse("overlap", `{{getv "/block" "b"}}-{{getv "/v"}}`)
	if err != nil {
		t.Fatal(err)
	}
	slow := blockingSource{MapSource{KV: map[string]string{"/v": "slow"}}, make(chan struct{}), make(chan struct{})}
	done := make(chan string)
	go func() {
		out, _, err := tm.Execute(slow, Options{})
		if err != nil {
			out = []byte(err.Error())
		}
		done <- string(out)
	}()
	<-slow.entered
	out, reads, err := tm.Execute(MapSource{KV: map[string]string{"/v": "fast"}}, Options{Prefix: "/x"})
	if err == nil || !strings.Contains(err.Error(), "key does not exist: /v") || !slices.Equal(reads.Keys, []string{"/x/block", "/x/v"}) {
		t.Errorf("overlapping render = %q, %+v, %v", out, reads, err)
	}
	out, _, err = tm.Execute(MapSource{KV: map[string]string{"/v": "fast"}}, Options{})
	if err != nil || string(out) != "b-fast" {
		t.Errorf("overlapping render = %q, %v", out, err)
	}
	close(slow.release)
	if got := <-done; got != "b-slow" {
		t.Errorf("blocked render = %q, want b-slow", got)
	}
}
