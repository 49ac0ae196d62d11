package template

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// partialsDir writes files (relative name -> text) into a fresh partials directory.
func partialsDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "templates", PartialsDir)
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// A template calls definitions and whole-file bodies of other files, transitively; what
// a partial reads counts as a read of the template (watch and key inference rely on it);
// a partial's functions work although the template itself names none of them.
func TestPartialsCallAcrossFiles(t *testing.T) {
	dir := partialsDir(t, map[string]string{
		"upstream.tmpl":      `{{define "upstream"}}upstream {{getv "/app/name" | upper}} {{template "servers" .}}{{end}}`,
		"nginx/servers.tmpl": "{{define \"servers\"}}{{range gets \"/app/servers/*\"}}[{{.Value}}]{{end}}{{end}}\n",
		"footer.tmpl":        `# {{getv "/app/footer"}}`,
		"unused.tmpl":        `{{define "unused"}}{{getv "/never"}}{{end}}`,
	})
	p := LoadPartials(dir)
	if err := p.Err(); err != nil {
		t.Fatal(err)
	}
	src := writeFile(t, t.TempDir(), "app.tmpl", "{{template \"upstream\" .}}\n{{template \"footer.tmpl\" .}}\n")
	tm, err := p.ParseFile(src)
	if err != nil {
		t.Fatal(err)
	}
	kv := MapSource{KV: map[string]string{"/app/name": "web", "/app/servers/a": "10.0.0.1", "/app/servers/b": "10.0.0.2", "/app/footer": "end"}}
	out, reads, err := tm.Execute(kv, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "upstream WEB [10.0.0.1][10.0.0.2]\n# end\n"; string(out) != want {
		t.Errorf("out = %q, want %q", out, want)
	}
	if want := (&Reads{Keys: []string{"/app/footer", "/app/name"}, Prefixes: []string{"/app/servers"}}); !readsEqual(reads, want) {
		t.Errorf("reads = %+v, want %+v", reads, want)
	}
	if !reads.Touches("/app/footer") || !reads.Touches("/app/servers/c") {
		t.Errorf("a change to a key read only by a partial does not touch the render: %+v", reads)
	}
	wantFiles := []string{src, filepath.Join(dir, "footer.tmpl"), filepath.Join(dir, "nginx/servers.tmpl"), filepath.Join(dir, "upstream.tmpl")}
	if got := tm.Files(); !slices.Equal(got, wantFiles) {
		t.Errorf("Files = %q, want %q (the unused partial left out)", got, wantFiles)
	}
	// An overlapping render runs on a clone: the partials come along.
	inst, err := tm.clone()
	if err != nil {
		t.Fatal(err)
	}
	inst.st.begin(kv, Options{})
	var sb strings.Builder
	if err := inst.tmpl.Execute(&sb, nil); err != nil || sb.String() != string(out) {
		t.Errorf("clone renders %q, %v; want %q", sb.String(), err, out)
	}
}

// The template's own definitions come first: adding a partial of the same name never
// changes a template that already works.
func TestPartialsOwnDefinitionFirst(t *testing.T) {
	p := LoadPartials(partialsDir(t, map[string]string{"x.tmpl": `{{define "x"}}partial{{end}}`}))
	tm, err := p.Parse("own.tmpl", `{{define "x"}}own{{end}}{{template "x"}}`)
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := tm.Execute(MapSource{}, Options{})
	if err != nil || string(out) != "own" {
		t.Errorf("out = %q, %v; want own", out, err)
	}
	if len(tm.Files()) != 0 {
		t.Errorf("Files = %q, want none", tm.Files())
	}
}

func TestPartialsErrors(t *testing.T) {
	dir := partialsDir(t, map[string]string{
		"a.tmpl":       `{{define "dup"}}a{{end}}`,
		"sub/b.tmpl":   `{{define "dup"}}b{{end}}{{define "fine"}}fine{{end}}`,
		"bad.tmpl":     "ok\n{{if}}\n",
		".a.tmpl.swp":  "{{ binary garbage",
		"c.tmpl~":      "{{ backup garbage",
		"#c.tmpl#":     "{{ autosave garbage",
		"dup.tmpl":     "body",
		"x/dup.tmpl":   `{{define "dup.tmpl"}}clashes with the body of dup.tmpl{{end}}`,
		"ok/only.tmpl": `{{define "only"}}only{{end}}`,
	})
	p := LoadPartials(dir)
	err := p.Err()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`partial "dup" is defined in both ` + filepath.Join(dir, "a.tmpl") + " and " + filepath.Join(dir, "sub/b.tmpl"),
		`partial "dup.tmpl" is defined in both ` + filepath.Join(dir, "dup.tmpl") + " and " + filepath.Join(dir, "x/dup.tmpl"),
		filepath.Join(dir, "bad.tmpl"), "partials/bad.tmpl:2:",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not hold %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "garbage") || strings.Contains(err.Error(), "swp") {
		t.Errorf("editor files were parsed: %v", err)
	}
	// A template that calls no partial does not depend on them and still parses.
	tm, err := p.Parse("plain.tmpl", `{{define "mine"}}m{{end}}{{template "mine"}}`)
	if err != nil {
		t.Fatalf("a template that calls no partial fails: %v", err)
	}
	if out, _, err := tm.Execute(MapSource{}, Options{}); err != nil || string(out) != "m" {
		t.Errorf("out = %q, %v", out, err)
	}
	// One that calls any may need the broken file: it fails, saying why.
	_, err = p.Parse("calls.tmpl", `{{template "only"}}`)
	if err == nil || !strings.Contains(err.Error(), `calls template "only"`) || !strings.Contains(err.Error(), dir) {
		t.Errorf("Parse = %v, want an error naming the call and the partials directory", err)
	}
}

// An execution error inside a partial names the partial's file and line, and the key.
func TestPartialsExecuteErrorNamesPartial(t *testing.T) {
	p := LoadPartials(partialsDir(t, map[string]string{"db.tmpl": "{{define \"db\"}}\nhost={{getv \"/db/host\"}}{{end}}"}))
	tm, err := p.Parse("app.tmpl", `{{template "db"}}`)
	if err != nil {
		t.Fatal(err)
	}
	_, reads, err := tm.Execute(MapSource{}, Options{})
	var ke *KeyError
	if !errors.As(err, &ke) || ke.Key != "/db/host" || !strings.Contains(err.Error(), "partials/db.tmpl:2:") {
		t.Errorf("error = %v, want a KeyError for /db/host at partials/db.tmpl:2", err)
	}
	if !slices.Equal(reads.Keys, []string{"/db/host"}) {
		t.Errorf("reads = %+v: the missing key must be recorded, so its creation re-renders", reads)
	}
}

// No partials directory is no partials; a call to a name defined nowhere fails at
// execution, as in text/template and confd.
func TestPartialsMissingDir(t *testing.T) {
	p := LoadPartials(filepath.Join(t.TempDir(), "nope"))
	if p.Err() != nil {
		t.Fatal(p.Err())
	}
	tm, err := p.Parse("a.tmpl", `x{{if false}}{{template "nowhere"}}{{end}}`)
	if err != nil {
		t.Fatal(err)
	}
	if out, _, err := tm.Execute(MapSource{}, Options{}); err != nil || string(out) != "x" {
		t.Errorf("out = %q, %v", out, err)
	}
	tm, err = p.Parse("b.tmpl", `{{template "nowhere"}}`)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := tm.Execute(MapSource{}, Options{}); err == nil || !strings.Contains(err.Error(), `"nowhere"`) {
		t.Errorf("error = %v, want one naming the missing template", err)
	}
}
