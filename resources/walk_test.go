//go:build unix

package resources

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func names(rs []*Resource) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return out
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// A Kubernetes ConfigMap volume: conf.d/x.toml -> ..data/x.toml, ..data -> ..2026_...;
// each resource must load once (twice was "dest is also written by").
func TestLoadConfigMapLayoutReadsEachFileOnce(t *testing.T) {
	dir := tree(t, map[string]string{
		"conf.d/..2026_01_02_03_04_05.123/a.toml": "[template]\nsrc = \"a.tmpl\"\ndest = \"out/a\"\n",
		"conf.d/..2026_01_02_03_04_05.123/b.toml": "[template]\nsrc = \"a.tmpl\"\ndest = \"out/b\"\n",
		"templates/a.tmpl":                        "x",
	})
	cd := filepath.Join(dir, "conf.d")
	symlink(t, "..2026_01_02_03_04_05.123", filepath.Join(cd, "..data"))
	symlink(t, "..data/a.toml", filepath.Join(cd, "a.toml"))
	symlink(t, "..data/b.toml", filepath.Join(cd, "b.toml"))
	rs, err := Load(LoadOptions{ConfDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(rs); !slices.Equal(got, []string{"a.toml", "b.toml"}) {
		t.Fatalf("resources = %v", got)
	}
}

// A symlinked sub-directory is followed (it was silently ignored); a loop of links and
// two links to one place read each file once.
func TestLoadFollowsSymlinkedDirsOnce(t *testing.T) {
	dir := tree(t, map[string]string{
		"shared/s.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"out/s\"\n",
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"out/a\"\n",
		"templates/a.tmpl": "x",
	})
	cd := filepath.Join(dir, "conf.d")
	symlink(t, "../shared", filepath.Join(cd, "linked"))
	symlink(t, "../shared", filepath.Join(cd, "linked2"))
	symlink(t, "..", filepath.Join(dir, "shared", "loop"))
	done := make(chan struct{})
	var (
		rs  []*Resource
		err error
	)
	go func() { rs, err = Load(LoadOptions{ConfDir: dir}); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Load does not end on a loop of links")
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := names(rs); !slices.Equal(got, []string{"a.toml", "linked/s.toml"}) {
		t.Fatalf("resources = %v", got)
	}
}

// A FIFO or a link to /dev/zero named *.toml is refused with a clear error, at once,
// and the other resources load.
func TestLoadRefusesSpecialResourceFiles(t *testing.T) {
	dir := tree(t, map[string]string{
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"out/a\"\n",
		"templates/a.tmpl": "x",
	})
	cd := filepath.Join(dir, "conf.d")
	if err := syscall.Mkfifo(filepath.Join(cd, "fifo.toml"), 0o644); err != nil {
		t.Fatal(err)
	}
	symlink(t, "/dev/zero", filepath.Join(cd, "zero.toml"))
	done := make(chan struct{})
	var (
		rs  []*Resource
		err error
	)
	go func() { rs, err = Load(LoadOptions{ConfDir: dir}); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Load hangs on a FIFO or /dev/zero")
	}
	for _, want := range []string{
		filepath.Join(cd, "fifo.toml") + ": cannot read: not a regular file (a FIFO)",
		filepath.Join(cd, "zero.toml") + ": cannot read: not a regular file (a character device)",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v\nwant it to hold %q", err, want)
		}
	}
	if got := names(rs); !slices.Equal(got, []string{"a.toml"}) {
		t.Fatalf("resources = %v", got)
	}
}

// A missing conf.d is one error marking the whole directory, so a hot reload keeps every
// resource (it dropped them all).
func TestResourceSetKeepsResourcesOfFailedDirs(t *testing.T) {
	dir := t.TempDir()
	rs, err := Load(LoadOptions{ConfDir: dir})
	var re *Error
	if len(rs) != 0 || !errors.As(err, &re) || !re.Dir || re.File != filepath.Join(dir, "conf.d") {
		t.Fatalf("Load = %v, %v", rs, err)
	}
	set := NewResourceSet(rs, err)
	if !set.Keeps(filepath.Join(dir, "conf.d", "sub", "a.toml")) || set.Keeps(filepath.Join(dir, "conf.dx", "a.toml")) {
		t.Fatalf("set = %+v", set)
	}
}

// A value of the wrong TOML type is reported in TOML's words, never with a Go type name.
func TestLoadTypeErrorsInTOMLTerms(t *testing.T) {
	for text, want := range map[string]string{
		"[[template]]\nsrc = \"a.tmpl\"\n":                 "a.toml:1: template: want a table [template], found an array of tables [[template]]",
		"[template]\nsrc = 1\n":                            "a.toml:2: template.src: want a string, found an integer",
		"[template]\nsrc = \"a.tmpl\"\nkeys = \"/x\"\n":    "a.toml:3: template.keys: want an array, found a string",
		"[template]\nsrc = \"a.tmpl\"\nbackup = \"yes\"\n": "a.toml:3: template.backup: want a boolean, found a string",
	} {
		dir := tree(t, map[string]string{"conf.d/a.toml": text, "templates/a.tmpl": "x"})
		_, err := Load(LoadOptions{ConfDir: dir})
		if err == nil || !strings.HasSuffix(err.Error(), want) || strings.Contains(err.Error(), "struct") || strings.Contains(err.Error(), "map[") {
			t.Errorf("%q: %v\nwant ...%s", text, err, want)
		}
	}
}
