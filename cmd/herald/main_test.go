package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// herald runs the CLI in-process with the given environment.
func herald(t *testing.T, envv map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout bytes.Buffer
	errf, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	code := run(context.Background(), env{
		args:   args,
		stdout: &stdout,
		stderr: errf,
		lookup: func(k string) (string, bool) { v, ok := envv[k]; return v, ok },
	})
	b, _ := os.ReadFile(errf.Name())
	return code, stdout.String(), string(b)
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, c := range files {
		full := filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestPrecedenceFlagEnvFileDefault(t *testing.T) {
	dir := writeFiles(t, map[string]string{"herald.toml": "prefix = \"/file\"\nlog_level = \"warn\"\ntimeout = \"7s\"\nconfdir = \"/from/file\"\n"})
	cfg := filepath.Join(dir, "herald.toml")
	resolve := func(envv map[string]string, args ...string) Options {
		var o Options
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		tbl := o.bindOptions(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		if err := o.resolve(fs, tbl, func(k string) (string, bool) { v, ok := envv[k]; return v, ok }); err != nil {
			t.Fatal(err)
		}
		return o
	}
	// default
	o := resolve(map[string]string{}, "--confdir", "x")
	if o.Prefix != "" || o.LogLevel != "info" || o.Timeout != 10*time.Second {
		t.Fatalf("defaults: %+v", o)
	}
	// file beats default
	o = resolve(nil, "--config", cfg)
	if o.Prefix != "/file" || o.LogLevel != "warn" || o.Timeout != 7*time.Second || o.ConfDir != "/from/file" {
		t.Fatalf("file: %+v", o)
	}
	// env beats file
	o = resolve(map[string]string{"HERALD_PREFIX": "/env", "HERALD_CONFIG": cfg}, "--log-level", "debug")
	if o.Prefix != "/env" || o.LogLevel != "debug" || o.Timeout != 7*time.Second {
		t.Fatalf("env: %+v", o)
	}
	// flag beats env, and confd's spelling is the same flag
	o = resolve(map[string]string{"HERALD_PREFIX": "/env", "HERALD_DRY_RUN": "false"}, "--config", cfg, "-prefix", "/flag", "-noop")
	if o.Prefix != "/flag" || !o.DryRun {
		t.Fatalf("flag: %+v", o)
	}
	// CONSUL_HTTP_TOKEN is honoured after HERALD_CONSUL_TOKEN
	o = resolve(map[string]string{"CONSUL_HTTP_TOKEN": "c"}, "--confdir", "x")
	if o.ConsulToken != "c" {
		t.Fatalf("CONSUL_HTTP_TOKEN ignored: %q", o.ConsulToken)
	}
	o = resolve(map[string]string{"CONSUL_HTTP_TOKEN": "c", "HERALD_CONSUL_TOKEN": "h"}, "--confdir", "x")
	if o.ConsulToken != "h" {
		t.Fatalf("HERALD_CONSUL_TOKEN should win: %q", o.ConsulToken)
	}
}

func TestConfigFileErrors(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"typo.toml": "prefix = \"/x\"\nlog_levle = \"debug\"\n",
		"bad.toml":  "prefix = \n",
		"dur.toml":  "timeout = \"soon\"\n",
		"sec.toml":  "password = 12\nconfdir = [1]\n",
	})
	for file, want := range map[string]string{
		"typo.toml": `typo.toml:2: unknown key "log_levle"`,
		"bad.toml":  "bad.toml:1: bad TOML",
		"dur.toml":  `timeout: invalid value "soon"`,
	} {
		code, _, stderr := herald(t, nil, "check", "--config", filepath.Join(dir, file))
		if code != 2 || !strings.Contains(stderr, want) {
			t.Errorf("%s: code %d, stderr %q; want 2 and %q", file, code, stderr, want)
		}
	}
	// An explicit --config that does not exist is an error; the implicit default is not.
	code, _, stderr := herald(t, nil, "check", "--config", filepath.Join(dir, "missing.toml"))
	if code != 2 || !strings.Contains(stderr, "missing.toml") {
		t.Errorf("missing config: %d %q", code, stderr)
	}
}

func TestSecretsNeverEchoed(t *testing.T) {
	code, _, stderr := herald(t, map[string]string{"HERALD_TIMEOUT": "hunter2-not-a-duration"}, "check", "--confdir", t.TempDir())
	if code != 2 || !strings.Contains(stderr, "HERALD_TIMEOUT") {
		t.Fatalf("bad env: %d %q", code, stderr)
	}
	// A backend URL carrying credentials is refused without echoing the password.
	dir := writeFiles(t, map[string]string{"conf.d/a.toml": "[template]\nsrc = \"a.tmpl\"\ndest = \"out\"\n", "templates/a.tmpl": "x"})
	code, _, stderr = herald(t, nil, "render", "--confdir", dir, "--backend", "etcd://root:s3cret-pw@127.0.0.1:2379")
	if code == 0 || strings.Contains(stderr, "s3cret-pw") || !strings.Contains(stderr, "credentials in the URL") {
		t.Fatalf("code %d stderr %q", code, stderr)
	}
}

func TestRenderExampleTreeWithFileBackend(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"conf.d/app.toml":    "[template]\nsrc = \"app.tmpl\"\ndest = \"out/app.conf\"\nmake_dirs = true\nkeys = [\"/app\"]\n",
		"templates/app.tmpl": "{{range gets \"/app/*\"}}{{base .Key}}={{.Value}}\n{{end}}{{range service \"web\"}}{{.HostPort}}\n{{end}}",
		"data.yaml":          "app:\n  port: 80\n  host: example\n_services:\n  web:\n    - {address: 10.0.0.1, port: 8080}\n",
	})
	code, stdout, stderr := herald(t, nil, "render", "--confdir", dir, "--backend", "file://"+filepath.Join(dir, "data.yaml"))
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, stdout, stderr)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "out/app.conf"))
	if string(got) != "host=example\nport=80\n10.0.0.1:8080\n" {
		t.Fatalf("rendered %q", got)
	}
	// --dry-run after a data change prints the diff and keeps the file.
	os.WriteFile(filepath.Join(dir, "data.yaml"), []byte("app:\n  port: 81\n  host: example\n_services:\n  web:\n    - {address: 10.0.0.1, port: 8080}\n"), 0o644)
	code, stdout, _ = herald(t, nil, "render", "--confdir", dir, "--backend", "file://"+filepath.Join(dir, "data.yaml"), "--noop")
	if code != 0 || !strings.Contains(stdout, "-port=80") || !strings.Contains(stdout, "+port=81") {
		t.Fatalf("dry run: %d %q", code, stdout)
	}
	got2, _ := os.ReadFile(filepath.Join(dir, "out/app.conf"))
	if string(got2) != string(got) {
		t.Fatal("dry run wrote the file")
	}
}

func TestRenderExitStatusNamesEachFailure(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"a.out\"\n",
		"conf.d/b.toml":    "[template]\nsrc = \"b.tmpl\"\ndest = \"b.out\"\n",
		"conf.d/c.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"c.out\"\nbogus = 1\n",
		"templates/a.tmpl": "{{getv \"/k\"}}",
		"templates/b.tmpl": "{{getv \"/missing\"}}",
		"data.yaml":        "k: v\n",
	})
	code, _, stderr := herald(t, nil, "render", "--confdir", dir, "--backend", "file://"+filepath.Join(dir, "data.yaml"))
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	for _, w := range []string{"b.toml", "key does not exist: /missing", "c.toml:4", `unknown key "template.bogus"`} {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, stderr)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "a.out")); string(b) != "v" {
		t.Fatalf("valid resource not rendered: %q", b)
	}
}

func TestCheckCommand(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"a.out\"\n",
		"templates/a.tmpl": "{{getv \"/k\"}}",
	})
	code, stdout, _ := herald(t, nil, "check", "--confdir", dir)
	if code != 0 || !strings.Contains(stdout, "1 resources OK") {
		t.Fatalf("check: %d %q", code, stdout)
	}
	os.WriteFile(filepath.Join(dir, "templates/a.tmpl"), []byte("{{getv \"/k\""), 0o644)
	code, _, stderr := herald(t, nil, "check", "--confdir", dir)
	if code != 1 || !strings.Contains(stderr, "a.tmpl:1") {
		t.Fatalf("check of a broken template: %d %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "a.out")); err == nil {
		t.Fatal("check wrote a file")
	}
}

func TestGetAndServices(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"data.yaml": "app:\n  a: 1\n  b: \"two words\"\napple: x\n_services:\n  web:\n    - {id: w1, address: 10.0.0.1, port: 80, tags: [v1]}\n    - {id: w2, address: 10.0.0.2, port: 80, status: critical}\n",
	})
	be := "file://" + filepath.Join(dir, "data.yaml")
	code, stdout, stderr := herald(t, nil, "get", "--backend", be, "/app")
	if code != 0 || stdout != "/app/a = 1\n/app/b = two words\n" {
		t.Fatalf("get: %d %q %q", code, stdout, stderr)
	}
	code, stdout, _ = herald(t, nil, "services", "--backend", be, "web")
	if code != 0 || !strings.Contains(stdout, "w1") || strings.Contains(stdout, "w2") {
		t.Fatalf("services web: %d %q", code, stdout)
	}
	code, stdout, _ = herald(t, nil, "services", "--backend", be, "web", "any")
	if code != 0 || !strings.Contains(stdout, "w2") {
		t.Fatalf("services web any: %d %q", code, stdout)
	}
	code, stdout, _ = herald(t, nil, "services", "--backend", be)
	if code != 0 || !strings.HasPrefix(stdout, "web") {
		t.Fatalf("services: %d %q", code, stdout)
	}
}

func TestUsageErrors(t *testing.T) {
	if code, _, _ := herald(t, nil); code != 2 {
		t.Errorf("no args: %d", code)
	}
	if code, _, stderr := herald(t, nil, "frobnicate"); code != 2 || !strings.Contains(stderr, "unknown command") {
		t.Errorf("unknown command: %d %q", code, stderr)
	}
	if code, _, stderr := herald(t, nil, "render", "--no-such-flag"); code != 2 || !strings.Contains(stderr, "no-such-flag") {
		t.Errorf("unknown flag: %d %q", code, stderr)
	}
	if code, _, stderr := herald(t, nil, "render", "--confdir", t.TempDir()); code == 0 || !strings.Contains(stderr, "conf.d") {
		t.Errorf("missing conf.d: %d %q", code, stderr)
	}
	if code, _, stderr := herald(t, nil, "render", "-h"); code != 0 || !strings.Contains(stderr, "HERALD_BACKEND") {
		t.Errorf("help: %d %q", code, stderr)
	}
	if code, _, stderr := herald(t, nil, "watch", "--pprof", "--confdir", "../../examples/haproxy", "--backend", "file://../../examples/haproxy/data.yaml"); code == 0 || !strings.Contains(stderr, "--pprof needs --listen") {
		t.Errorf("--pprof without --listen: %d %q", code, stderr)
	}
	if code, stdout, _ := herald(t, nil, "version"); code != 0 || !strings.HasPrefix(stdout, "herald ") {
		t.Errorf("version: %d %q", code, stdout)
	}
}

// check runs each template against an empty store: what fails there fails on every
// render, so CI catches it; what depends on the data (a missing key) does not fail.
func TestCheckReportsEveryRunTemplateErrorsWithFileAndLine(t *testing.T) {
	for _, c := range []struct{ name, tmpl, want string }{
		{"unknown function", "{{getv \"/k\"}}\n{{ frobnicate }}", `a.tmpl:2: function "frobnicate" not defined`},
		{"undefined template", "{{getv \"/k\"}}\n{{template \"x\"}}", `a.tmpl:2:11: executing "a.tmpl" at <{{template "x"}}>: template "x" not defined`},
		{"wrong argument count", "{{getv \"/k\"}}\n\n{{getv}}", `a.tmpl:3:2: executing "a.tmpl" at <getv>: wrong number of args for getv: want at least 1 got 0`},
		{"wrong argument type", "{{ add \"one\" (getv \"/k\") }}", `a.tmpl:1:7: executing "a.tmpl" at <"one">: expected integer; found "one"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{
				"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"a.out\"\n",
				"templates/a.tmpl": c.tmpl,
			})
			code, stdout, stderr := herald(t, nil, "check", "--confdir", dir)
			if code != 1 || !strings.Contains(stderr, filepath.Join(dir, "templates", "a.tmpl")) || !strings.Contains(stderr, c.want) || stdout != "" {
				t.Fatalf("check: exit %d, stdout %q, stderr %q; want exit 1 naming %q", code, stdout, stderr, c.want)
			}
		})
	}
	dir := writeFiles(t, map[string]string{
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"a.out\"\n",
		"templates/a.tmpl": "{{getv \"/missing\"}}{{atoi (getv \"/port\")}}",
	})
	if code, stdout, stderr := herald(t, nil, "check", "--confdir", dir); code != 0 || stdout != "1 resources OK\n" {
		t.Fatalf("missing keys and data errors must pass check: exit %d %q %q", code, stdout, stderr)
	}
	// Inside a partial: the partial's file and line.
	part := writeFiles(t, map[string]string{
		"conf.d/a.toml":              "[template]\nsrc = \"a.tmpl\"\ndest = \"a.out\"\n",
		"templates/a.tmpl":           "{{template \"up\" \"web\"}}",
		"templates/partials/up.tmpl": "{{define \"up\"}}{{range service .}}{{.HostPort}}{{end}}\n{{getv}}{{end}}",
	})
	if code, _, stderr := herald(t, nil, "check", "--confdir", part); code != 1 || !strings.Contains(stderr, `partials/up.tmpl:2:2: executing "up" at <getv>: wrong number of args for getv`) {
		t.Fatalf("check of a broken partial: exit %d %q", code, stderr)
	}
	// A broken resource file and a template error in a valid one: both in one pass.
	both := writeFiles(t, map[string]string{
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"a.out\"\n",
		"conf.d/b.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"b.out\"\nmode = \"x\"\n",
		"templates/a.tmpl": "{{template \"x\"}}",
	})
	code, _, stderr := herald(t, nil, "check", "--confdir", both)
	if code != 1 || !strings.Contains(stderr, "b.toml:4: mode") || !strings.Contains(stderr, `template "x" not defined`) {
		t.Fatalf("check with a broken file and a broken template: exit %d %q", code, stderr)
	}
	empty := writeFiles(t, map[string]string{"conf.d/README": "no resources here"})
	if code, _, stderr = herald(t, nil, "check", "--confdir", empty); code != 1 || !strings.Contains(stderr, "no resources in "+filepath.Join(empty, "conf.d")) {
		t.Fatalf("empty conf.d: exit %d %q", code, stderr)
	}
}

// An owner or group name the system does not know is a warning naming file and line; the
// file renders with the default owner, as confd (which ignores the key) renders it.
func TestUnknownOwnerWarnsAndRenders(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"a.out\"\nowner = \"nginx-herald-none\"\n",
		"templates/a.tmpl": "{{getv \"/k\"}}",
		"data.yaml":        "k: v\n",
	})
	toml := filepath.Join(dir, "conf.d", "a.toml")
	code, _, stderr := herald(t, nil, "render", "--confdir", dir, "--backend", "file://"+filepath.Join(dir, "data.yaml"))
	if code != 0 || !strings.Contains(stderr, toml+`:4: unknown owner \"nginx-herald-none\" ignored, the file keeps the default owner (as in confd)`) {
		t.Fatalf("render: exit %d, stderr %q", code, stderr)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "a.out")); err != nil || string(b) != "v" {
		t.Fatalf("a.out = %q, %v", b, err)
	}
	code, stdout, stderr := herald(t, nil, "check", "--confdir", dir)
	if code != 0 || stdout != "1 resources OK\n" || !strings.Contains(stderr, toml+`:4: unknown owner "nginx-herald-none"`) {
		t.Fatalf("check: exit %d %q %q", code, stdout, stderr)
	}
}

func TestRenderWarnsWhenConfDHoldsNoResource(t *testing.T) {
	dir := writeFiles(t, map[string]string{"conf.d/README": "x", "data.yaml": "k: v\n"})
	code, _, stderr := herald(t, nil, "render", "--confdir", dir, "--backend", "file://"+filepath.Join(dir, "data.yaml"))
	if code != 0 || !strings.Contains(stderr, "no resources: nothing to render") || !strings.Contains(stderr, filepath.Join(dir, "conf.d")) {
		t.Fatalf("render: exit %d %q", code, stderr)
	}
}

// `herald services NAME --backend URL`: flags after the name work (issue 16); a name the
// registry does not have exits 1 naming it and the names it has; dotted names resolve
// against the catalog.
func TestServicesFlagsAfterNameAndAbsent(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"data.yaml": "_services:\n  web:\n    - {address: 10.0.0.1, port: 8080, tags: [prod]}\n  com.example.Greeter:\n    - {address: 10.0.0.2, port: 9090}\n",
	})
	backend := "file://" + filepath.Join(dir, "data.yaml")
	code, stdout, stderr := herald(t, nil, "services", "web", "--backend", backend)
	if code != 0 || !strings.Contains(stdout, "10.0.0.1") {
		t.Fatalf("services web --backend: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, stdout, _ = herald(t, nil, "services", "com.example.Greeter", "any", "--backend", backend)
	if code != 0 || !strings.Contains(stdout, "10.0.0.2") {
		t.Fatalf("dotted name: exit %d, stdout %q", code, stdout)
	}
	code, stdout, _ = herald(t, nil, "services", "--backend", backend, "prod.web")
	if code != 0 || !strings.Contains(stdout, "10.0.0.1") {
		t.Fatalf("tag.name: exit %d, stdout %q", code, stdout)
	}
	code, _, stderr = herald(t, nil, "services", "wbe", "--backend", backend)
	if code != 1 || !strings.Contains(stderr, "wbe") || !strings.Contains(stderr, "it has: com.example.Greeter, web") {
		t.Fatalf("absent service: exit %d, stderr %q; want 1 naming wbe and the catalog", code, stderr)
	}
	code, _, stderr = herald(t, nil, "get", "/x", "--backend", backend, "--timeout", "2s")
	if code != 0 {
		t.Fatalf("get with flags after the prefix: exit %d, %q", code, stderr)
	}
	code, _, stderr = herald(t, nil, "services", "web", "--backend", backend, "--", "--any")
	if code != 2 {
		t.Fatalf("positional after --: exit %d, %q; want 2: after -- \"--any\" is the filter argument, not a flag, and no valid filter", code, stderr)
	}
}
