package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// heraldIn is herald with stdin.
func heraldIn(t *testing.T, ctx context.Context, stdin string, stdout *lockedBuffer, args ...string) (int, string) {
	t.Helper()
	errf, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	code := run(ctx, env{
		args:   args,
		stdin:  strings.NewReader(stdin),
		stdout: stdout,
		stderr: errf,
		lookup: func(string) (string, bool) { return "", false },
	})
	b, _ := os.ReadFile(errf.Name())
	return code, string(b)
}

// lockedBuffer is a bytes.Buffer written by a render while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func templateTree(t *testing.T) string {
	return writeFiles(t, map[string]string{
		"data.yaml":                          "db:\n  host: h1\n  port: 5432\n",
		"confdir/templates/partials/db.tmpl": "{{define \"db\"}}{{getv \"/db/host\"}}:{{getv \"/db/port\"}}{{end}}",
		"app.tmpl":                           "db={{template \"db\" .}}\n",
		"missing.tmpl":                       "a\n{{getv \"/db/nope\"}}\n",
		"bad.tmpl":                           "a\nb\n{{getv \"/db/host\"\n",
	})
}

func TestTemplateOnce(t *testing.T) {
	dir := templateTree(t)
	backend := "file://" + filepath.Join(dir, "data.yaml")
	confdir := filepath.Join(dir, "confdir")
	ctx := context.Background()

	var out lockedBuffer
	code, stderr := heraldIn(t, ctx, `{{getv "/db/host" | toUpper}} {{ "x" | upper }}`, &out, "template", "--backend", backend, "-")
	if code != 0 || out.String() != "H1 X" {
		t.Errorf("stdin: code %d, stdout %q, stderr %s", code, out.String(), stderr)
	}
	// A file calling a partial of --confdir; flags may follow the file.
	out = lockedBuffer{}
	code, stderr = heraldIn(t, ctx, "", &out, "template", filepath.Join(dir, "app.tmpl"), "--backend", backend, "--confdir", confdir)
	if code != 0 || out.String() != "db=h1:5432\n" {
		t.Errorf("file: code %d, stdout %q, stderr %s", code, out.String(), stderr)
	}
	// --out writes the file, not stdout; a prefix applies as in render.
	dest := filepath.Join(dir, "out", "app.conf")
	os.MkdirAll(filepath.Dir(dest), 0o755)
	out = lockedBuffer{}
	code, stderr = heraldIn(t, ctx, `{{getv "/host"}}`, &out, "template", "--backend", backend, "--prefix", "/db", "--out", dest, "-")
	if b, _ := os.ReadFile(dest); code != 0 || string(b) != "h1" || out.String() != "" {
		t.Errorf("--out: code %d, file %q, stdout %q, stderr %s", code, b, out.String(), stderr)
	}
}

func TestTemplateErrors(t *testing.T) {
	dir := templateTree(t)
	backend := "file://" + filepath.Join(dir, "data.yaml")
	dest := filepath.Join(dir, "kept.conf")
	if err := os.WriteFile(dest, []byte("previous\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	brokenConfdir := writeFiles(t, map[string]string{"templates/partials/broken.tmpl": "x\n{{end}}\n"})
	tests := []struct {
		name  string
		stdin string
		args  []string
		code  int
		want  []string
	}{
		{"missing key", "", []string{"--backend", backend, "--out", dest, filepath.Join(dir, "missing.tmpl")}, 1,
			[]string{"key does not exist: /db/nope", "missing.tmpl:2:"}},
		{"missing key on stdin", "{{getv \"/db/nope\"}}", []string{"--backend", backend, "-"}, 1,
			[]string{"key does not exist: /db/nope", "<stdin>:1:"}},
		{"syntax error", "", []string{"--backend", backend, filepath.Join(dir, "bad.tmpl")}, 1,
			[]string{filepath.Join(dir, "bad.tmpl"), "bad.tmpl:4:", "unclosed action started at bad.tmpl:3"}},
		{"no such file", "", []string{"--backend", backend, filepath.Join(dir, "nope.tmpl")}, 1,
			[]string{filepath.Join(dir, "nope.tmpl"), "no such file"}},
		{"unknown backend", "x", []string{"--backend", "bogus://h", "-"}, 1, []string{`unknown scheme "bogus"`}},
		{"no backend", "x", []string{"-"}, 2, []string{"no backend"}},
		{"broken partials", `{{template "x" .}}`, []string{"--backend", backend, "--confdir", brokenConfdir, "-"}, 1,
			[]string{`calls template "x"`, filepath.Join(brokenConfdir, "templates/partials/broken.tmpl"), "partials/broken.tmpl:2:"}},
		{"no template", "", []string{"--backend", backend}, 2, []string{"want exactly one template"}},
		{"two templates", "", []string{"--backend", backend, "a", "b"}, 2, []string{"want exactly one template"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out lockedBuffer
			code, stderr := heraldIn(t, context.Background(), tc.stdin, &out, append([]string{"template"}, tc.args...)...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr %s", code, tc.code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q lacks %q", stderr, w)
				}
			}
			if out.String() != "" {
				t.Errorf("stdout %q, want nothing", out.String())
			}
		})
	}
	if b, _ := os.ReadFile(dest); string(b) != "previous\n" {
		t.Errorf("--out file after a failed render = %q, want it untouched", b)
	}
}

// --watch prints a new render when what the template reads changes (the file backend
// watches its file), and nothing for an unchanged output; SIGTERM (ctx) ends it with 0.
func TestTemplateWatchStdout(t *testing.T) {
	dir := templateTree(t)
	data := filepath.Join(dir, "data.yaml")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out lockedBuffer
	done := make(chan int, 1)
	go func() {
		code, _ := heraldIn(t, ctx, "{{getv \"/db/host\"}}\n", &out, "template", "--watch", "--backend", "file://"+data, "-")
		done <- code
	}()
	waitFor(t, &out, "h1\n")
	// An unrelated key changes first, then the one read: only the second prints.
	write := func(s string) {
		if err := os.WriteFile(data+".tmp", []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(data+".tmp", data); err != nil {
			t.Fatal(err)
		}
	}
	write("db:\n  host: h1\n  port: 6543\n")
	time.Sleep(300 * time.Millisecond) // let the watch see two separate edits
	write("db:\n  host: h2\n  port: 6543\n")
	waitFor(t, &out, "h1\nh2\n")
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit %d after cancel, want 0", code)
	}
	if got := out.String(); got != "h1\nh2\n" {
		t.Errorf("stdout %q, want h1 then h2 once each", got)
	}
}

func waitFor(t *testing.T, out *lockedBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for out.String() != want {
		if time.Now().After(deadline) {
			t.Fatalf("stdout %q, want %q", out.String(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// --watch follows edits of the template file and of the partials it calls; a broken
// edit keeps the previous version running.
func TestTemplateWatchFollowsEdits(t *testing.T) {
	dir := templateTree(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out lockedBuffer
	done := make(chan int, 1)
	app := filepath.Join(dir, "app.tmpl")
	errf, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	go func() {
		done <- run(ctx, env{
			args:   []string{"template", app, "--watch", "--backend", "file://" + filepath.Join(dir, "data.yaml"), "--confdir", filepath.Join(dir, "confdir")},
			stdout: &out,
			stderr: errf,
			lookup: func(string) (string, bool) { return "", false },
		})
	}()
	want := "db=h1:5432\n"
	waitFor(t, &out, want)
	// Written by rename, as editors do.
	edit := func(p, s string) {
		t.Helper()
		if err := os.WriteFile(p+".new", []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(p+".new", p); err != nil {
			t.Fatal(err)
		}
	}
	edit(app, "DB={{template \"db\" .}}\n")
	want += "DB=h1:5432\n"
	waitFor(t, &out, want)
	edit(filepath.Join(dir, "confdir/templates/partials/db.tmpl"), "{{define \"db\"}}{{getv \"/db/host\"}}{{end}}")
	want += "DB=h1\n"
	waitFor(t, &out, want)
	edit(app, "{{broken\n")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(errf.Name())
		if strings.Contains(string(b), "template reload failed") && strings.Contains(string(b), "app.tmpl:1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the broken edit was not reported:\n%s", b)
		}
	}
	edit(app, "fixed {{template \"db\" .}}\n")
	want += "fixed h1\n"
	waitFor(t, &out, want)
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit %d after cancel, want 0", code)
	}
}
