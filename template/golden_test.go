package template

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heraldhq/herald/backends"
)

// goldenData is the data of one golden case: testdata/golden/NAME.json for NAME.*.tmpl.
type goldenData struct {
	Prefix   string                        `json:"prefix"`
	Keys     []string                      `json:"keys"` // confd's `keys`, relative to prefix
	KV       map[string]string             `json:"kv"`
	Services map[string][]backends.Service `json:"services"`
	Names    []backends.ServiceSummary     `json:"names"`
}

func loadGolden(t *testing.T, tmplPath string) (goldenData, MapSource, Options) {
	t.Helper()
	stem, _, _ := strings.Cut(filepath.Base(tmplPath), ".")
	b, err := os.ReadFile(filepath.Join(filepath.Dir(tmplPath), stem+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var d goldenData
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s.json: %v", stem, err)
	}
	src := MapSource{KV: d.KV, Svcs: d.Services, Names: d.Names}
	return d, src, Options{Prefix: d.Prefix, Scope: confdScope(d.Prefix, d.Keys)}
}

// TestGolden renders realistic templates and compares them byte for byte with their
// .golden files. For confd templates (all but services.cfg, which uses herald's own
// functions) the golden file is confd's own output for the same data and resource.
func TestGolden(t *testing.T) {
	tmpls, err := filepath.Glob("testdata/golden/*.tmpl")
	if err != nil || len(tmpls) == 0 {
		t.Fatalf("no golden templates: %v", err)
	}
	for _, path := range tmpls {
		t.Run(filepath.Base(path), func(t *testing.T) {
			_, src, opts := loadGolden(t, path)
			want, err := os.ReadFile(strings.TrimSuffix(path, ".tmpl") + ".golden")
			if err != nil {
				t.Fatal(err)
			}
			tm, err := ParseFile(path)
			if err != nil {
				t.Fatal(err)
			}
			got, reads, err := tm.Execute(src, opts)
			if err != nil {
				t.Fatalf("Execute: %v", err)
			}
			if string(got) != string(want) {
				t.Errorf("output differs from %s.golden:\n--- got\n%s\n--- want\n%s", filepath.Base(path), got, want)
			}

			// What the render recorded must be all it needs: rendered again from only the
			// keys under its targets, as the runner loads them, it gives the same bytes.
			targets := reads.Targets()
			only := MapSource{KV: map[string]string{}, Svcs: src.Svcs, Names: src.Names}
			for k, v := range src.KV {
				for _, tg := range targets {
					if tg.Service == nil && !tg.ServiceNames && backends.UnderPrefix(k, tg.Prefix) {
						only.KV[k] = v
					}
				}
			}
			again, _, err := tm.Execute(only, opts)
			if err != nil {
				t.Fatalf("Execute from the recorded targets only: %v", err)
			}
			if string(again) != string(got) {
				t.Errorf("render from targets %v differs:\n%s", targets, again)
			}
		})
	}
}
