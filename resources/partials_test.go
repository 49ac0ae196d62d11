package resources

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func partialTree(t *testing.T) string {
	return tree(t, map[string]string{
		"conf.d/a.toml":                 "[template]\nsrc = \"a.tmpl\"\ndest = \"out/a\"\n",
		"conf.d/b.toml":                 "[template]\nsrc = \"b.tmpl\"\ndest = \"out/b\"\n",
		"conf.d/plain.toml":             "[template]\nsrc = \"plain.tmpl\"\ndest = \"out/plain\"\n",
		"templates/a.tmpl":              `{{template "head" .}}a`,
		"templates/b.tmpl":              `{{template "other" .}}b`,
		"templates/plain.tmpl":          `{{define "head"}}own{{end}}{{template "head" .}}plain`,
		"templates/partials/head.tmpl":  `{{define "head"}}H{{end}}`,
		"templates/partials/other.tmpl": `{{define "other"}}O{{end}}`,
	})
}

func fingerprints(t *testing.T, dir string) map[string]string {
	t.Helper()
	rs, err := Load(LoadOptions{ConfDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range rs {
		out[r.Name] = r.Fingerprint
	}
	return out
}

// Editing a partial changes the fingerprint (so hot reload re-renders) of exactly the
// resources that call it.
func TestLoadPartialsFingerprint(t *testing.T) {
	dir := partialTree(t)
	before := fingerprints(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "templates/partials/head.tmpl"), []byte(`{{define "head"}}H2{{end}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	after := fingerprints(t, dir)
	if before["a.toml"] == after["a.toml"] {
		t.Error("a.toml calls the edited partial; its fingerprint did not change")
	}
	for _, name := range []string{"b.toml", "plain.toml"} {
		if before[name] != after[name] {
			t.Errorf("%s does not call the edited partial; its fingerprint changed", name)
		}
	}
}

// A broken partial is reported once, naming its file and line; resources that call a
// partial fail (the broken file may be theirs), the others still load.
func TestLoadBadPartial(t *testing.T) {
	dir := partialTree(t)
	bad := filepath.Join(dir, "templates/partials/bad.tmpl")
	if err := os.WriteFile(bad, []byte("x\n{{define \"y\"}}{{end\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rs, err := Load(LoadOptions{ConfDir: dir})
	if len(rs) != 1 || rs[0].Name != "plain.toml" {
		t.Errorf("loaded %d resources, want only plain.toml", len(rs))
	}
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "partials/bad.tmpl:3:") || strings.Count(err.Error(), "unclosed action") != 1 {
		t.Fatalf("error %v does not name %s:3 exactly once", err, bad)
	}
	failed := map[string]bool{}
	for _, e := range unjoin(err) {
		var re *Error
		if errors.As(e, &re) {
			failed[filepath.Base(re.File)] = true
		}
	}
	for _, f := range []string{"a.toml", "b.toml", "partials"} {
		if !failed[f] {
			t.Errorf("no error for %s: %v", f, failed)
		}
	}
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, unjoin(e)...)
		}
		return out
	}
	if err == nil {
		return nil
	}
	return []error{err}
}
