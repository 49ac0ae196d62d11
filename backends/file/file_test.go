package file

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/heraldhq/herald/backends"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func newStore(t *testing.T, path string, log *slog.Logger) *Store {
	t.Helper()
	s, err := New(backends.Config{Logger: log}, backends.Endpoint{Scheme: "file", Path: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func getAll(t *testing.T, s *Store) map[string]string {
	t.Helper()
	kv, _, err := s.Get(context.Background(), []string{"/"})
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	return kv
}

func TestFlatten(t *testing.T) {
	tests := []struct {
		name string
		file string // file name decides YAML or JSON
		body string
		want map[string]string
	}{
		{
			name: "nested maps and lists",
			file: "data.yaml",
			body: `
database:
  host: db.local
  port: 5432
  replicas: [r1, r2]
upstream:
  - {host: a, port: 80}
  - {host: b, port: 81}
key: foobar
`,
			want: map[string]string{
				"/database/host": "db.local", "/database/port": "5432",
				"/database/replicas/0": "r1", "/database/replicas/1": "r2",
				"/upstream/0/host": "a", "/upstream/0/port": "80",
				"/upstream/1/host": "b", "/upstream/1/port": "81",
				"/key": "foobar",
			},
		},
		{
			name: "scalars as a user reads them",
			file: "data.yaml",
			body: `
int: 42
negative: -7
hex: 0x1F
big: 18446744073709551615
float: 1.50
whole_float: 80.0
exp: 1e3
small: 0.000001
neg_zero: -0.0
bool: true
bool_caps: False
yes_word: yes
on_word: on
off_word: OFF
quoted_yes: "yes"
quoted_empty: ""
null_value: null
tilde: ~
empty:
date: 2001-12-14
string_num: "0042"
multi: |
  line1
  line2
`,
			want: map[string]string{
				"/int": "42", "/negative": "-7", "/hex": "31", "/big": "18446744073709551615",
				"/float": "1.5", "/whole_float": "80", "/exp": "1000", "/small": "0.000001", "/neg_zero": "0",
				"/bool": "true", "/bool_caps": "false", "/yes_word": "true", "/on_word": "true", "/off_word": "false",
				"/quoted_yes": "yes", "/quoted_empty": "",
				"/date": "2001-12-14", "/string_num": "0042", "/multi": "line1\nline2\n",
			},
		},
		{
			name: "empty collections give no keys",
			file: "data.yaml",
			body: "a: {}\nb: []\nc: 1\n",
			want: map[string]string{"/c": "1"},
		},
		{
			name: "keys with slashes",
			file: "data.yaml",
			body: "/app/db/host: h1\napp:\n  db/port: 5\n\"x//y/\": z\n",
			want: map[string]string{"/app/db/host": "h1", "/app/db/port": "5", "/x/y": "z"},
		},
		{
			name: "anchors and merge keys",
			file: "data.yaml",
			body: `
base: &base
  timeout: 5
  retries: 3
web:
  <<: *base
  retries: 9
both:
  <<: [*base, {extra: x, timeout: 1}]
alias: *base
`,
			want: map[string]string{
				"/base/timeout": "5", "/base/retries": "3",
				"/web/timeout": "5", "/web/retries": "9",
				"/both/timeout": "5", "/both/retries": "3", "/both/extra": "x",
				"/alias/timeout": "5", "/alias/retries": "3",
			},
		},
		{
			name: "several YAML documents",
			file: "data.yaml",
			body: "a: 1\n---\nb: 2\n---\n# only a comment\n",
			want: map[string]string{"/a": "1", "/b": "2"},
		},
		{
			name: "comment-only YAML",
			file: "data.yaml",
			body: "# nothing yet\n",
			want: map[string]string{},
		},
		{
			name: "JSON",
			file: "data.json",
			body: `{
	"database": {"host": "db.local", "port": 5432, "ratio": 1.50, "whole": 80.0, "exp": 1e3},
	"list": [1, "two", true, null, {"k": "v"}],
	"big": 18446744073709551615,
	"flag": false,
	"yes": "yes"
}`,
			want: map[string]string{
				"/database/host": "db.local", "/database/port": "5432", "/database/ratio": "1.5",
				"/database/whole": "80", "/database/exp": "1000",
				"/list/0": "1", "/list/1": "two", "/list/2": "true", "/list/4/k": "v",
				"/big": "18446744073709551615", "/flag": "false", "/yes": "yes",
			},
		},
		{
			name: "no extension reads as YAML",
			file: "data",
			body: "a: 1\n",
			want: map[string]string{"/a": "1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), tt.file)
			writeFile(t, p, tt.body)
			if got := getAll(t, newStore(t, p, nil)); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		body string
		want string // after "<path>"
	}{
		{"yaml syntax", "d.yaml", "a: 1\nb: [1, 2\nc: 3\n", ":2: did not find expected ',' or ']'"},
		{"yaml scanner error", "d.yaml", "a: 1\nb: @x\n", ":2: found character that cannot start any token"},
		{"yaml tab indentation", "d.yaml", "a:\n\tb: 1\n", ":2: found character that cannot start any token"},
		{"yaml unknown anchor", "d.yaml", "a: 1\nb: *nope\n", `: yaml: unknown anchor 'nope' referenced`},
		{"yaml bad indentation", "d.yaml", "a:\n  b: 1\n c: 2\n", ":3: "},
		{"yaml duplicate key", "d.yaml", "a: 1\nb: 2\na: 3\n", ":3: key /a is already defined at line 1"},
		{"yaml duplicate through slash key", "d.yaml", "a:\n  b: 1\na/b: 2\n", ":3: key /a/b is already defined at line 2"},
		{"yaml top-level list", "d.yaml", "- a\n- b\n", ":1: the top level must be a mapping"},
		{"yaml top-level scalar", "d.yaml", "hello\n", ":1: the top level must be a mapping"},
		{"yaml dot-dot key", "d.yaml", "a:\n  ../etc: 1\n", `:2: key "../etc": "." and ".." are not allowed`},
		{"yaml list key", "d.yaml", "? [a, b]\n: 1\n", ":1: a key must be a string"},
		{"yaml merge of scalar", "d.yaml", "a:\n  <<: 5\n", ":2: << merges mappings only"},
		{"yaml alias cycle", "d.yaml", "a: &x [*x]\n", ":1: nested deeper than 100 levels"},
		{"empty file", "d.yaml", "", ": file is empty"},
		{"blank file", "d.json", " \n\n", ": file is empty"},
		{"json syntax", "d.json", "{\n  \"a\": 1,\n  \"b\": ]\n}\n", ":3: invalid character ']'"},
		{"json trailing comma", "d.json", "{\n  \"a\": 1,\n}\n", ":3: invalid character '}'"},
		{"json truncated", "d.json", "{\n  \"a\": {\n    \"b\": 1\n", ":3: unexpected end of JSON"},
		{"json trailing data", "d.json", "{\"a\": 1}\n{\"b\": 2}\n", ":2: unexpected data after the top-level value"},
		{"json duplicate key", "d.json", "{\n\"a\": 1,\n\"a\": 2\n}", ":3: key /a is already defined at line 2"},
		{"json top-level array", "d.json", "[1, 2]", ":1: the top level must be a mapping"},
		{"services not a map", "d.yaml", "_services: [a]\n", ":1: _services must map service names"},
		{"service not a list", "d.yaml", "_services:\n  web: {address: h}\n", ":2: _services.web: want a list of instances"},
		{"service name with slash", "d.yaml", "_services:\n  a/b: []\n", `:2: _services: service name "a/b"`},
		{"instance not a map", "d.yaml", "_services:\n  web:\n    - 10.0.0.1:80\n", ":3: _services.web[0]: want a mapping"},
		{"unknown field", "d.yaml", "_services:\n  web:\n    - address: h\n      prot: 80\n", ":4: _services.web[0]: prot: unknown field"},
		{"port not a number", "d.yaml", "_services:\n  web:\n    - address: h\n      port: http\n", `:4: _services.web[0]: port: want an integer, got "http"`},
		{"port float", "d.yaml", "_services:\n  web:\n    - address: h\n      port: 80.5\n", `:4: _services.web[0]: port: want an integer, got "80.5"`},
		{"port out of range", "d.yaml", "_services:\n  web:\n    - {address: h, port: 1}\n    - address: h\n      port: 70000\n", ":4: _services.web[1]: port 70000 out of range"},
		{"missing address", "d.yaml", "_services:\n  web:\n    - port: 80\n", ":3: _services.web[0]: empty address"},
		{"address with port", "d.yaml", "_services:\n  web:\n    - address: \"10.0.0.1:80\"\n", ":3: _services.web[0]: address \"10.0.0.1:80\" holds a port"},
		{"bad status", "d.yaml", "_services:\n  web:\n    - {address: h, status: up}\n", `:3: _services.web[0]: status "up"`},
		{"tags not a list", "d.yaml", "_services:\n  web:\n    - address: h\n      tags: a,b\n", ":4: _services.web[0]: tags: want a list"},
		{"nested meta", "d.yaml", "_services:\n  web:\n    - address: h\n      meta: {a: {b: c}}\n", `:4: _services.web[0]: meta: "a": want a single value`},
		{"negative weight", "d.yaml", "_services:\n  web:\n    - {address: h, weight: -1}\n", ":3: _services.web[0]: weight -1 is negative"},
		{"json services error line", "d.json", "{\"_services\": {\"web\": [\n  {\"address\": \"h\", \"port\": \"x\"}\n]}}", `:2: _services.web[0]: port: want an integer, got "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), tt.file)
			writeFile(t, p, tt.body)
			_, _, err := newStore(t, p, nil).Get(context.Background(), []string{"/"})
			if err == nil {
				t.Fatalf("Get succeeded, want error %q", tt.want)
			}
			if want := p + tt.want; !strings.Contains(err.Error(), want) {
				t.Errorf("error %q\ndoes not contain %q", err, want)
			}
		})
	}
}

func TestParseErrorDuplicateInstanceID(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.yaml"), "_services:\n  web:\n    - {address: 10.0.0.1, port: 80}\n")
	writeFile(t, filepath.Join(dir, "b.yaml"), "x: 1\n_services:\n  web:\n    - {address: 10.0.0.2, port: 80, id: \"10.0.0.1:80\"}\n")
	_, _, err := newStore(t, dir, nil).Services(context.Background(), backends.ServiceQuery{Name: "web"})
	want := `_services.web[0]: instance ID "10.0.0.1:80" is defined in both ` + filepath.Join(dir, "a.yaml") + ":3 and " + filepath.Join(dir, "b.yaml") + ":4"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

func TestMissingPath(t *testing.T) {
	p := filepath.Join(t.TempDir(), "nope.yaml")
	s := newStore(t, p, nil)
	_, _, err := s.Get(context.Background(), []string{"/"})
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), p) {
		t.Fatalf("err = %v, want not-exist naming %s", err, p)
	}
	if st := s.State(); st.Conn != backends.Down || st.Err == nil {
		t.Errorf("State = %+v, want down with error", st)
	}
	if _, err := New(backends.Config{}, backends.Endpoint{Scheme: "file"}); err == nil {
		t.Error("New with no path succeeded")
	}
}

func TestRelativePath(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "rel.yaml"), "a: 1\n")
	t.Chdir(dir)
	s := newStore(t, "rel.yaml", nil)
	if err := os.Chdir(os.TempDir()); err != nil {
		t.Fatal(err)
	}
	// Resolved against the working directory at New, not at each read.
	if got := getAll(t, s); got["/a"] != "1" {
		t.Errorf("got %v", got)
	}
}

func TestDirectory(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "10-base.yaml"), "app:\n  name: shop\n  port: 80\n")
	writeFile(t, filepath.Join(dir, "20-db.json"), `{"db": {"host": "pg", "port": 5432}}`)
	writeFile(t, filepath.Join(dir, "30-extra.yml"), "extra: [a]\n")
	writeFile(t, filepath.Join(dir, "UPPER.YAML"), "upper: 1\n")
	writeFile(t, filepath.Join(dir, ".hidden.yaml"), "hidden: 1\n")
	writeFile(t, filepath.Join(dir, "notes.txt"), "not: data\n")
	writeFile(t, filepath.Join(dir, "sub.yaml", "inner.yaml"), "inner: 1\n")
	writeFile(t, filepath.Join(dir, "sub", "deep.yaml"), "deep: 1\n")
	if err := os.Symlink(filepath.Join(dir, "missing"), filepath.Join(dir, ".#10-base.yaml")); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"/app/name": "shop", "/app/port": "80", "/db/host": "pg", "/db/port": "5432",
		"/extra/0": "a", "/upper": "1",
	}
	if got := getAll(t, newStore(t, dir, nil)); !reflect.DeepEqual(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
}

func TestDirectoryConflict(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.json")
	writeFile(t, a, "app:\n  name: shop\n  port: 80\n")
	writeFile(t, b, "{\n  \"app\": {\n    \"port\": 81\n  }\n}\n")
	_, _, err := newStore(t, dir, nil).Get(context.Background(), []string{"/"})
	want := "key /app/port is defined in both " + a + ":3 and " + b + ":3"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
}

func TestGetPrefixes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d.yaml")
	writeFile(t, p, "app: {a: 1, b: {c: 2}}\napple: 3\nother: 4\n_services:\n  web: [{address: h}]\n")
	s := newStore(t, p, nil)
	tests := []struct {
		prefixes []string
		want     map[string]string
	}{
		{[]string{"/app"}, map[string]string{"/app/a": "1", "/app/b/c": "2"}},
		{[]string{"app/"}, map[string]string{"/app/a": "1", "/app/b/c": "2"}},
		{[]string{"/app/b/c"}, map[string]string{"/app/b/c": "2"}},
		{[]string{"/app/b", "/other"}, map[string]string{"/app/b/c": "2", "/other": "4"}},
		{[]string{"/nothing"}, map[string]string{}},
		{[]string{"/"}, map[string]string{"/app/a": "1", "/app/b/c": "2", "/apple": "3", "/other": "4"}},
		{[]string{"/_services"}, map[string]string{}},
	}
	for _, tt := range tests {
		got, rev, err := s.Get(context.Background(), tt.prefixes)
		if err != nil || rev != 1 {
			t.Fatalf("Get(%v) rev %d err %v", tt.prefixes, rev, err)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Get(%v) = %v, want %v", tt.prefixes, got, tt.want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := s.Get(ctx, []string{"/"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Get with a cancelled context: %v", err)
	}
}

func TestServices(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.yaml")
	writeFile(t, a, `_services:
  web:
    - address: 10.0.0.2
      port: 8080
      tags: [primary, v2]
      meta: {zone: eu-1, cpus: 4}
      id: web-2
      weight: 5
    - {address: 10.0.0.1, port: 8080, tags: [v1]}
    - {address: "[2001:db8::1]", port: "8443", status: Critical}
    - {address: 10.0.0.3, port: 8080, status: maintenance, tags: [v2]}
  db: []
  cache:
`)
	writeFile(t, filepath.Join(dir, "b.json"), `{"_services": {"web": [{"address": "web-4.local", "port": 80, "status": "warning"}]}}`)
	s := newStore(t, dir, nil)
	ctx := context.Background()

	got, rev, err := s.Services(ctx, backends.ServiceQuery{Name: "web", Statuses: []string{"passing", "warning", "critical", "maintenance"}})
	if err != nil || rev != 1 {
		t.Fatalf("Services: rev %d err %v", rev, err)
	}
	want := []backends.Service{
		{Name: "web", ID: "10.0.0.1:8080", Address: "10.0.0.1", Port: 8080, Tags: []string{"v1"},
			Status: "passing", Healthy: true, Backend: "file", Format: "herald", Key: a},
		{Name: "web", ID: "web-2", Address: "10.0.0.2", Port: 8080, Tags: []string{"primary", "v2"},
			Meta: map[string]string{"zone": "eu-1", "cpus": "4"}, Weight: 5,
			Status: "passing", Healthy: true, Backend: "file", Format: "herald", Key: a},
		{Name: "web", ID: "10.0.0.3:8080", Address: "10.0.0.3", Port: 8080, Tags: []string{"v2"},
			Status: "maintenance", Backend: "file", Format: "herald", Key: a},
		{Name: "web", ID: "[2001:db8::1]:8443", Address: "2001:db8::1", Port: 8443,
			Status: "critical", Backend: "file", Format: "herald", Key: a},
		{Name: "web", ID: "web-4.local:80", Address: "web-4.local", Port: 80,
			Status: "warning", Backend: "file", Format: "herald", Key: filepath.Join(dir, "b.json")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%+v\nwant\n%+v", got, want)
	}

	filters := []struct {
		q    backends.ServiceQuery
		want []string
	}{
		{backends.ServiceQuery{Name: "web"}, []string{"10.0.0.1:8080", "web-2"}},
		{backends.ServiceQuery{Name: "web", Tag: "v2"}, []string{"web-2"}},
		{backends.ServiceQuery{Name: "web", Tag: "v2", Statuses: []string{"passing", "maintenance"}}, []string{"web-2", "10.0.0.3:8080"}},
		{backends.ServiceQuery{Name: "web", Statuses: []string{"warning"}}, []string{"web-4.local:80"}},
		{backends.ServiceQuery{Name: "web", Datacenter: "dc9"}, []string{"10.0.0.1:8080", "web-2"}},
		{backends.ServiceQuery{Name: "db"}, nil},
		{backends.ServiceQuery{Name: "unknown"}, nil},
	}
	for _, f := range filters {
		got, _, err := s.Services(ctx, f.q)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, svc := range got {
			ids = append(ids, svc.ID)
		}
		if !reflect.DeepEqual(ids, f.want) {
			t.Errorf("Services(%s) = %v, want %v", f.q, ids, f.want)
		}
	}

	names, _, err := s.ServiceNames(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantNames := []backends.ServiceSummary{{Name: "cache"}, {Name: "db"}, {Name: "web", Tags: []string{"primary", "v1", "v2"}}}
	if !reflect.DeepEqual(names, wantNames) {
		t.Errorf("ServiceNames = %+v, want %+v", names, wantNames)
	}
	if kv := getAll(t, s); len(kv) != 0 {
		t.Errorf("_services leaked into keys: %v", kv)
	}
}

func TestRevisionAndState(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d.yaml")
	writeFile(t, p, "a: 1\n")
	s := newStore(t, p, nil)
	ctx := context.Background()
	if st := s.State(); st.Conn != backends.Connecting || st.Endpoint != "file://"+p {
		t.Errorf("initial State = %+v", st)
	}
	steps := []struct {
		body    string
		wantRev uint64
		wantErr string
	}{
		{"a: 1\n", 1, ""},
		{"a: 1\n", 1, ""},           // unchanged content, same revision
		{"a: 2\n", 2, ""},           // changed
		{"a: [\n", 0, p + ":2: "},   // broken
		{"a: 2\n", 2, ""},           // back to the last good content: nothing changed
		{"a: 3\nb: 1\n", 3, ""},     // changed again
		{"a: 3\nb: 1\n\n", 4, ""},   // bytes changed, keys did not: a new revision is harmless
		{"a: 3\na: 1\n", 0, ":2: "}, // conflict
	}
	for i, st := range steps {
		writeFile(t, p, st.body)
		_, rev, err := s.Get(ctx, []string{"/"})
		if st.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), st.wantErr) {
				t.Fatalf("step %d: err = %v, want %q", i, err, st.wantErr)
			}
			if state := s.State(); state.Conn != backends.Down || state.Err == nil {
				t.Errorf("step %d: State = %+v, want down", i, state)
			}
			continue
		}
		if err != nil || rev != st.wantRev {
			t.Fatalf("step %d: rev %d err %v, want rev %d", i, rev, err, st.wantRev)
		}
		if state := s.State(); state.Conn != backends.Up || state.Err != nil {
			t.Errorf("step %d: State = %+v, want up", i, state)
		}
	}
}

func TestClosed(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d.yaml")
	writeFile(t, p, "a: 1\n")
	s := newStore(t, p, nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, _, err := s.Get(context.Background(), []string{"/"}); !errors.Is(err, errClosed) {
		t.Errorf("Get after Close: %v", err)
	}
	if err := s.Watch(context.Background(), backends.PrefixTarget("/"), 0, make(chan backends.Event, 1)); !errors.Is(err, errClosed) {
		t.Errorf("Watch after Close: %v", err)
	}
}

// syncBuffer is a log sink the watcher goroutine writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
