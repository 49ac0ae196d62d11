package resources

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tree writes a confdir: files maps paths below it to contents.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadConfdResource(t *testing.T) {
	dir := tree(t, map[string]string{
		"conf.d/app.toml": `[template]
src = "app.tmpl"
dest = "/tmp/app.conf"
keys = ["/db", "/cache/"]
prefix = "prod"
mode = "0600"
uid = 0
gid = 0
check_cmd = "test -s {{.src}}"
reload_cmd = "echo {{.dest}}"
`,
		"templates/app.tmpl": `{{getv "/db/host"}}`,
	})
	rs, err := Load(LoadOptions{ConfDir: dir, Prefix: "/global"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 {
		t.Fatalf("got %d resources", len(rs))
	}
	r := rs[0]
	if r.Name != "app.toml" || r.Dest != "/tmp/app.conf" || r.Src != filepath.Join(dir, "templates/app.tmpl") {
		t.Fatalf("resource = %+v", r)
	}
	// The global prefix is joined before the resource's own, and keys under both.
	if r.Prefix != "/global/prod" {
		t.Fatalf("prefix = %q", r.Prefix)
	}
	if strings.Join(r.Keys, ",") != "/global/prod/db,/global/prod/cache" {
		t.Fatalf("keys = %v", r.Keys)
	}
	if !r.ModeSet || r.Mode != 0o600 || r.UID != 0 || r.GID != 0 {
		t.Fatalf("mode/owner = %o %v %d %d", r.Mode, r.ModeSet, r.UID, r.GID)
	}
	if r.Template == nil || r.Fingerprint == "" {
		t.Fatal("template not parsed or no fingerprint")
	}
}

func TestLoadDefaultsAndExtensions(t *testing.T) {
	dir := tree(t, map[string]string{
		"conf.d/sub/x.toml": `[template]
src = "x.tmpl"
dest = "out/x.conf"
wait = "2s:10s"
backup = true
make_dirs = true
check_timeout = "5s"
owner = "root"
group = "root"
`,
		"templates/x.tmpl": `x`,
	})
	rs, err := Load(LoadOptions{ConfDir: dir, ReloadTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	r := rs[0]
	if r.Name != "sub/x.toml" {
		t.Fatalf("name = %q", r.Name)
	}
	if r.Dest != filepath.Join(dir, "out/x.conf") {
		t.Fatalf("relative dest not resolved against the confdir: %q", r.Dest)
	}
	if r.Keys != nil || r.Targets() != nil {
		t.Fatalf("keys omitted must mean inferred, got %v", r.Keys)
	}
	if r.Prefix != "/" || r.ModeSet || r.UID != 0 || r.GID != 0 {
		t.Fatalf("defaults wrong: %+v", r)
	}
	if r.Wait != (Wait{2 * time.Second, 10 * time.Second}) || !r.Backup || !r.MakeDirs {
		t.Fatalf("extensions wrong: %+v", r)
	}
	if r.CheckTimeout != 5*time.Second || r.ReloadTimeout != time.Minute {
		t.Fatalf("timeouts = %v %v", r.CheckTimeout, r.ReloadTimeout)
	}
}

func TestLoadErrorsNameFileAndLine(t *testing.T) {
	cases := []struct {
		name string
		toml string
		want []string
	}{
		{"unknown key", "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x\"\nreload_comand = \"x\"\n",
			[]string{"bad.toml:4:", `unknown key "template.reload_comand"`}},
		{"bad mode", "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x\"\nmode = \"0999\"\n",
			[]string{"bad.toml:4:", `mode "0999" is not an octal file mode`}},
		{"missing template", "[template]\nsrc = \"nope.tmpl\"\ndest = \"/tmp/x\"\n",
			[]string{"bad.toml:2:", "nope.tmpl does not exist"}},
		{"malformed TOML", "[template]\nsrc = \"t.tmpl\"\ndest = /tmp/x\n",
			[]string{"bad.toml:3:", "bad TOML"}},
		{"wrong type", "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x\"\nuid = \"root\"\n",
			[]string{"bad.toml:4:", "template.uid: want an integer, found a string"}},
		{"no template table", "src = \"t.tmpl\"\n",
			[]string{"bad.toml:1:", `unknown key "src"`}},
		{"template syntax", "[template]\nsrc = \"broken.tmpl\"\ndest = \"/tmp/x\"\n",
			[]string{"bad.toml:2:", "broken.tmpl:1:", "missing value for if"}},
		{"bad wait", "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x\"\nwait = \"10s:2s\"\n",
			[]string{"bad.toml:4:", "min <= max"}},
		{"missing dest", "[template]\nsrc = \"t.tmpl\"\n",
			[]string{"bad.toml:1:", "dest is required"}},
		{"bad check_cmd", "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x\"\ncheck_cmd = \"x {{.src\"\n",
			[]string{"bad.toml:4:", "check_cmd"}},
		{"{{.item}} without each", "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x\"\nreload_cmd = \"systemctl reload app@{{.item}}\"\n",
			[]string{"bad.toml:4:", "only {{.src}} and {{.dest}} may be used"}},
		{"each: unknown placeholder", "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/{{.Name}}\"\neach = \"services\"\ncheck_cmd = \"x {{.Name}}\"\n",
			[]string{"bad.toml:5:", "only {{.src}}, {{.dest}} and {{.item}} may be used"}},
		{"each: unknown list", "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/{{.}}\"\neach = \"nodes\"\n",
			[]string{"bad.toml:4:", `each "nodes": unknown list "nodes"`}},
		{"each: dest names no item", "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x\"\neach = \"services\"\n",
			[]string{"bad.toml:3:", `dest "/tmp/x" names no item`}},
		{"each: bad dest template", "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/{{.Name\"\neach = \"services\"\n",
			[]string{"bad.toml:3:", "bad dest template"}},
		{"each: backup", "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/{{.Name}}\"\neach = \"services\"\nbackup = true\n",
			[]string{"bad.toml:5:", "backup is not supported with each"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := tree(t, map[string]string{
				"conf.d/bad.toml":       c.toml,
				"conf.d/good.toml":      "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/good\"\n",
				"templates/t.tmpl":      "ok",
				"templates/broken.tmpl": "{{ if }}",
			})
			rs, err := Load(LoadOptions{ConfDir: dir})
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			// The good file still loads: one bad file never hides the others.
			if len(rs) != 1 || rs[0].Name != "good.toml" {
				t.Fatalf("valid resources = %v", rs)
			}
		})
	}
}

// confd has no owner field and ignores the key; herald applies a name it knows and, like
// confd, renders with the default owner when it does not know it, with a warning.
func TestLoadUnknownOwnerOrGroupIsAWarning(t *testing.T) {
	dir := tree(t, map[string]string{
		"conf.d/a.toml":    "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/a\"\nowner = \"no-such-user-herald\"\ngroup = \"no-such-group-herald\"\n",
		"conf.d/b.toml":    "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/b\"\n\nowner = \"root\"\ngroup = \"root\"\n",
		"templates/t.tmpl": "ok",
	})
	rs, err := Load(LoadOptions{ConfDir: dir})
	if err != nil || len(rs) != 2 {
		t.Fatalf("Load = %v, %v; want both resources and no error", rs, err)
	}
	a, b := rs[0], rs[1]
	if a.UID != -1 || a.GID != -1 {
		t.Errorf("unknown names: uid %d gid %d, want -1 -1 (default owner)", a.UID, a.GID)
	}
	if len(a.Warnings) != 2 {
		t.Fatalf("warnings = %v, want 2", a.Warnings)
	}
	for i, want := range []string{
		filepath.Join(dir, "conf.d", "a.toml") + `:4: unknown owner "no-such-user-herald" ignored, the file keeps the default owner (as in confd)`,
		filepath.Join(dir, "conf.d", "a.toml") + `:5: unknown group "no-such-group-herald" ignored, the file keeps the default group (as in confd)`,
	} {
		if got := a.Warnings[i].Error(); !strings.HasPrefix(got, want) {
			t.Errorf("warning %d = %q, want prefix %q", i, got, want)
		}
	}
	if b.UID != 0 || b.GID != 0 || len(b.Warnings) != 0 {
		t.Errorf("known names: uid %d gid %d warnings %v, want 0 0 none", b.UID, b.GID, b.Warnings)
	}
}

func TestLoadReportsEveryBadFile(t *testing.T) {
	dir := tree(t, map[string]string{
		"conf.d/a.toml":    "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/a\"\nbogus = 1\nmode = \"x\"\n",
		"conf.d/b.toml":    "[template\n",
		"conf.d/c.toml":    "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/a\"\n",
		"conf.d/d.toml":    "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/a\"\n",
		"templates/t.tmpl": "ok",
	})
	_, err := Load(LoadOptions{ConfDir: dir})
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{"a.toml:4:", `"template.bogus"`, "a.toml:5:", "b.toml:2:", "d.toml", "also written by", "c.toml"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
}

func TestLoadMissingConfDir(t *testing.T) {
	_, err := Load(LoadOptions{ConfDir: filepath.Join(t.TempDir(), "nope")})
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("err = %v", err)
	}
}

func TestParseWait(t *testing.T) {
	for in, want := range map[string]Wait{
		"":        {},
		"2s":      {2 * time.Second, 8 * time.Second},
		"2s:10s":  {2 * time.Second, 10 * time.Second},
		"0s:1s":   {0, time.Second},
		"1s: 1s":  {time.Second, time.Second},
		"100ms:1": {},
	} {
		got, err := ParseWait(in)
		if in == "100ms:1" {
			if err == nil {
				t.Errorf("ParseWait(%q) accepted a bad max", in)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("ParseWait(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}

// --spare-files sets spare_file for every resource that does not say; one that does,
// true or false, keeps its own.
func TestLoadSpareFilesDefault(t *testing.T) {
	dir := tree(t, map[string]string{
		"conf.d/none.toml": "[template]\nsrc = \"x.tmpl\"\ndest = \"out/none\"\n",
		"conf.d/off.toml":  "[template]\nsrc = \"x.tmpl\"\ndest = \"out/off\"\nspare_file = false\n",
		"conf.d/on.toml":   "[template]\nsrc = \"x.tmpl\"\ndest = \"out/on\"\nspare_file = true\n",
		"templates/x.tmpl": `x`,
	})
	for _, def := range []bool{false, true} {
		rs, err := Load(LoadOptions{ConfDir: dir, SpareFiles: def})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, r := range rs {
			got[r.Name] = r.SpareFile
		}
		want := map[string]bool{"none.toml": def, "off.toml": false, "on.toml": true}
		for name, w := range want {
			if got[name] != w {
				t.Errorf("SpareFiles=%v: %s spare_file = %v, want %v", def, name, got[name], w)
			}
		}
	}
}
