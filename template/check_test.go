package template

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckReportsEveryRunErrorsWithFileAndLine(t *testing.T) {
	for _, c := range []struct{ name, text, want string }{
		{"undefined template", "a\n{{template \"x\"}}", `t.tmpl:2:11: executing "t.tmpl" at <{{template "x"}}>: template "x" not defined`},
		{"wrong argument count", "{{getv \"/a\"}}\n\n{{getv}}", `t.tmpl:3:2: executing "t.tmpl" at <getv>: wrong number of args for getv: want at least 1 got 0`},
		{"wrong argument type", "{{add \"a\" 1}}", `t.tmpl:1:6: executing "t.tmpl" at <"a">: expected integer; found "a"`},
		{"no such field", "{{getv \"/a\"}}{{(get \"/a\").Host}}", `t.tmpl:1:20: executing "t.tmpl" at <"/a">: can't evaluate field Host in type backends.KVPair`},
		{"range over a string", "{{range getv \"/a\"}}x{{end}}", `t.tmpl:1:13: executing "t.tmpl" at <"/a">: range can't iterate over `},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "t.tmpl")
			if err := os.WriteFile(p, []byte(c.text), 0o644); err != nil {
				t.Fatal(err)
			}
			tm, err := ParseFile(p)
			if err != nil {
				t.Fatal(err)
			}
			err = tm.Check()
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
				t.Fatalf("Check() = %v\nwant it to name %s and hold %q", err, p, c.want)
			}
		})
	}
}

func TestCheckAcceptsWhatDependsOnData(t *testing.T) {
	for _, text := range []string{
		`{{getv "/missing"}} {{(get "/missing").Value}} {{getv "/m" "default"}}`,
		`{{atoi (getv "/port")}}{{template "never reached"}}`, // atoi's error depends on the data
		`{{json (getv "/cfg")}}`,
		`{{range gets "/a/*"}}{{template "undefined, but no key means no iteration"}}{{end}}`,
		`{{if exists "/x"}}{{getv}}{{end}}`,
		`{{range service "web"}}{{.Address}}{{end}}{{range ls "/a"}}{{.}}{{end}}{{index (split (getv "/a") ",") 3}}`,
		`{{define "x"}}{{.}}{{end}}{{template "x" getv "/a"}}`,
	} {
		tm, err := Parse("t.tmpl", text)
		if err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		if err := tm.Check(); err != nil {
			t.Errorf("Check(%s) = %v, want nil: the error depends on the data", text, err)
		}
	}
}
