package resources

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoadFile feeds arbitrary resource files to the loader: it must never panic, and
// every rejection must name the file.
func FuzzLoadFile(f *testing.F) {
	for _, seed := range []string{
		"[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x\"\nkeys = [\"/a\", \"/b/\"]\nmode = \"0644\"\n",
		"[template]\nsrc = \"t.tmpl\"\ndest = \"out\"\nprefix = \"p\"\nuid = 0\ngid = 0\ncheck_cmd = \"test -s {{.src}}\"\nreload_cmd = \"echo {{.dest}}\"\n",
		"[template]\nsrc = \"t.tmpl\"\ndest = \"out\"\nwait = \"1s:2s\"\nbackup = true\nmake_dirs = true\ncheck_timeout = \"5s\"\nowner = \"root\"\n",
		"[template]\nsrc = \"t.tmpl\"\ndest = \"out\"\nmode = \"9\"\nbogus = 1\n",
		"[template\n", "", "src = 1", "[template]\nsrc = \"../../etc/passwd\"\ndest = \"\"\n",
		"[template]\nsrc = \"t.tmpl\"\ndest = \"out\"\ncheck_cmd = \"{{.src\"\nwait = \":\"\n",
		"[[template]]\nsrc = \"t.tmpl\"\n", "[template]\nkeys = \"notalist\"\n",
		"[template]\neach = \"services web-* tag=http\"\nsrc = \"t.tmpl\"\ndest = \"out/{{.Name | lower}}.conf\"\n",
		"[template]\neach = \"lsdir /apps\"\nsrc = \"t.tmpl\"\ndest = \"/srv/{{.}}/x\"\nbackup = true\n",
	} {
		f.Add(seed)
	}
	dir := f.TempDir()
	os.MkdirAll(filepath.Join(dir, "conf.d"), 0o755)
	os.MkdirAll(filepath.Join(dir, "templates"), 0o755)
	os.WriteFile(filepath.Join(dir, "templates", "t.tmpl"), []byte(`{{getv "/a"}}`), 0o644)
	file := filepath.Join(dir, "conf.d", "f.toml")
	f.Fuzz(func(t *testing.T, body string) {
		if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := LoadFile(file, LoadOptions{ConfDir: dir})
		if err != nil {
			if !strings.Contains(err.Error(), file) {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if r.Template == nil || r.Dest == "" || !filepath.IsAbs(r.Dest) || r.Prefix == "" {
			t.Fatalf("accepted an incomplete resource: %+v", r)
		}
	})
}
