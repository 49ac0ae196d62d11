package integration

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestQuickStartExamples runs what the README's first quick-start command (make demo)
// runs, on the examples as a fresh clone has them (no out/ directory yet): every
// example renders, checked by the real haproxy -c / nginx -t, and its files land.
func TestQuickStartExamples(t *testing.T) {
	bin := heraldBinary(t)
	root := t.TempDir()
	err := filepath.WalkDir("../examples", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "out" { // rendered output, not in a clone
			return filepath.SkipDir
		}
		dst := filepath.Join(root, "examples", p[len("../examples"):])
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	for ex, want := range map[string][]string{
		"haproxy":      {"out/haproxy.cfg"},
		"nginx":        {"out/nginx.conf"},
		"nginx-vhosts": {"out/nginx.conf", "out/sites/api.conf", "out/sites/web.conf"},
	} {
		cmd := exec.Command(bin, "render", "--confdir", "examples/"+ex, "--backend", "file://examples/"+ex+"/data.yaml")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("herald render examples/%s: %v\n%s", ex, err, out)
			continue
		}
		for _, f := range want {
			if fi, err := os.Stat(filepath.Join(root, "examples", ex, f)); err != nil || fi.Size() == 0 {
				t.Errorf("examples/%s: %s not rendered: %v", ex, f, err)
			}
		}
	}
}
