package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// archLayers is ARCHITECTURE.md's picture as data: a package may import only packages of
// a lower layer (or its own subtree's internal/ helpers).
var archLayers = map[string]int{
	"cmd/herald":             5,
	"resources/render":       4,
	"resources/supervisor":   4,
	"resources/announce":     4,
	"resources/engine":       3,
	"resources":              3,
	"resources/engine/cache": 2,
	"template":               2,
	"backends/open":          2, // picks one of the backends below; only cmd/herald uses it
	"backends/etcd":          1,
	"backends/zookeeper":     1,
	"backends/consul":        1,
	"backends/file":          1,
	"backends/env":           1,
	"backends":               0,
}

// TestArchitectureLayers keeps ARCHITECTURE.md true: every package of the module is in its
// "where things live" table, and no import goes up (or across) a layer of its flow.
func TestArchitectureLayers(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(root, "ARCHITECTURE.md"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}:{{join .Imports " "}}`, "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/heraldhq/herald/"
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, ":")
		pkg = strings.TrimPrefix(pkg, mod)
		if pkg == "integration" || strings.HasPrefix(pkg, "integration/") {
			continue // tests of the binary, outside the flow
		}
		if !strings.Contains(string(doc), "`"+pkg+"`") && !strings.Contains(string(doc), "`"+pkg+"/`") &&
			!strings.Contains(string(doc), "`"+strings.TrimPrefix(pkg, "backends/")+"`") {
			t.Errorf("%s is not in ARCHITECTURE.md's table of where things live", pkg)
		}
		from, ok := archLayer(pkg)
		if !ok {
			if !strings.Contains(pkg, "/internal/") && !strings.HasSuffix(pkg, "/regfile") {
				t.Errorf("%s has no layer in archLayers: place it in ARCHITECTURE.md's flow and here", pkg)
			}
			continue
		}
		for _, imp := range strings.Fields(imports) {
			dep, ok := strings.CutPrefix(imp, mod)
			if !ok {
				continue
			}
			if to, ok := archLayer(dep); ok && to >= from {
				t.Errorf("%s (layer %d) imports %s (layer %d): imports go down ARCHITECTURE.md's flow only", pkg, from, dep, to)
			}
		}
	}
}

// archLayer is pkg's layer; false for helpers (an internal/ package, template/regfile),
// which sit beside their importers.
func archLayer(pkg string) (int, bool) {
	l, ok := archLayers[pkg]
	return l, ok
}
