package integration

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/heraldhq/herald/integration/harness"
)

// templateRun runs `herald template ARGS` to its end with stdin and returns its exit
// code, stdout and stderr apart: stdout is the rendered template only.
func templateRun(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(heraldBinary(t), append([]string{"template"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

func etcdBackend(e *harness.Etcd) string {
	return "etcd://" + strings.TrimPrefix(e.Endpoints[0], "http://")
}

func put(t *testing.T, cli *clientv3.Client, k, v string) {
	t.Helper()
	if _, err := cli.Put(context.Background(), k, v); err != nil {
		t.Fatal(err)
	}
}

// herald template against a real etcd: stdin and a file (calling a partial of
// --confdir), once; and each error a script must be able to tell by the exit status.
func TestTemplateEtcdOnce(t *testing.T) {
	e := harness.StartEtcd(t)
	cli := e.Client(t)
	put(t, cli, "/db/host", "10.0.0.5")
	put(t, cli, "/db/port", "5432")
	put(t, cli, "/prod/db/host", "10.9.9.9")
	backend := etcdBackend(e)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"confdir/templates/partials/db.tmpl": "{{define \"dsn\"}}postgres://{{getv \"/db/host\"}}:{{getv \"/db/port\"}}{{end}}",
		"app.tmpl":                           "url={{template \"dsn\" .}}\n",
		"bad.tmpl":                           "ok\n{{range ls \"/db\"}}\n",
		"missing.tmpl":                       "a\n{{getv \"/db/user\"}}\n",
	})

	code, out, stderr := templateRun(t, `{{getv "/db/host"}}:{{getv "/db/port"}}`, "--backend", backend, "-")
	if code != 0 || out != "10.0.0.5:5432" {
		t.Errorf("stdin: exit %d, stdout %q, stderr %s", code, out, stderr)
	}
	code, out, stderr = templateRun(t, "", "--backend", backend, "--prefix", "/prod", "-", "--log-level", "debug")
	if code != 0 || out != "" {
		t.Errorf("empty stdin: exit %d, stdout %q, stderr %s", code, out, stderr)
	}
	code, out, stderr = templateRun(t, "", filepath.Join(dir, "app.tmpl"), "--backend", backend, "--confdir", filepath.Join(dir, "confdir"))
	if code != 0 || out != "url=postgres://10.0.0.5:5432\n" {
		t.Errorf("file with partial: exit %d, stdout %q, stderr %s", code, out, stderr)
	}

	// A malformed service instance: the list renders without it, and the exit status
	// (1) and stderr name it, as with render.
	put(t, cli, "/services/web/a", "10.0.0.1:80")
	put(t, cli, "/services/web/bad", "10.0.0.9:http")
	code, out, stderr = templateRun(t, `{{range service "web"}}{{.HostPort}} {{end}}`, "--backend", backend, "-")
	if code != 1 || out != "10.0.0.1:80 " || !strings.Contains(stderr, "skipped 1 malformed service instance(s), rendered without them: /services/web/bad") {
		t.Errorf("malformed instance: exit %d, stdout %q, stderr %s", code, out, stderr)
	}

	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		want  []string
	}{
		{"missing key", "", []string{"--backend", backend, filepath.Join(dir, "missing.tmpl")},
			[]string{"key does not exist: /db/user", "missing.tmpl:2:"}},
		{"missing key under prefix", `{{getv "/db/port"}}`, []string{"--backend", backend, "--prefix", "/prod", "-"},
			[]string{"key does not exist: /db/port"}},
		{"syntax error", "", []string{"--backend", backend, filepath.Join(dir, "bad.tmpl")},
			[]string{filepath.Join(dir, "bad.tmpl"), "bad.tmpl:3:", "unexpected EOF"}},
		{"unknown backend", "x", []string{"--backend", "etcdd://127.0.0.1:1", "-"}, []string{`unknown scheme "etcdd"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, stderr := templateRun(t, tc.stdin, tc.args...)
			if code != 1 || out != "" {
				t.Errorf("exit %d, stdout %q; want 1 and nothing", code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q lacks %q", stderr, w)
				}
			}
		})
	}
}

// herald template --watch: a put changes stdout, or the --out file, written atomically
// like a resource's dest.
func TestTemplateEtcdWatch(t *testing.T) {
	e := harness.StartEtcd(t)
	cli := e.Client(t)
	put(t, cli, "/app/color", "red")
	backend := etcdBackend(e)
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"color.tmpl": "color={{getv \"/app/color\"}} size={{getv \"/app/size\" \"none\"}}\n",
		"all.tmpl":   `{{range gets "/app/*"}}{{base .Key}}={{.Value}} {{end}}`,
	})

	t.Run("stdout", func(t *testing.T) {
		// Logs only on error: the process's output is its stdout.
		p := startHerald(t, nil, "template", filepath.Join(dir, "color.tmpl"), "--watch", "--backend", backend, "--log-level", "error")
		want := "color=red size=none\n"
		waitOutput(t, p, want)
		put(t, cli, "/app/size", "L") // a key missing at the first render is watched too
		want += "color=red size=L\n"
		waitOutput(t, p, want)
		put(t, cli, "/app/color", "blue")
		want += "color=blue size=L\n"
		waitOutput(t, p, want)
		if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
			t.Errorf("exit %d after SIGTERM", code)
		}
	})

	t.Run("stdin", func(t *testing.T) {
		p := startHeraldIn(t, strings.NewReader(`{{range gets "/app/*"}}{{base .Key}}={{.Value}};{{end}}`), nil,
			"template", "--watch", "--backend", backend, "--log-level", "error", "-")
		want := "color=blue;size=L;"
		waitOutput(t, p, want)
		put(t, cli, "/app/shape", "round")
		want += "color=blue;shape=round;size=L;"
		waitOutput(t, p, want)
		if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
			t.Errorf("exit %d after SIGTERM", code)
		}
	})

	t.Run("out", func(t *testing.T) {
		dest := filepath.Join(t.TempDir(), "app.conf")
		p := startHerald(t, nil, "template", filepath.Join(dir, "all.tmpl"), "--watch", "--out", dest, "--backend", backend, "--log-level", "error")
		waitFile(t, dest, "color=blue shape=round size=L ", 10*time.Second)
		put(t, cli, "/app/weight", "3")
		waitFile(t, dest, "color=blue shape=round size=L weight=3 ", 10*time.Second)
		if out := p.Output(); out != "" {
			t.Errorf("output %q with --out, want nothing", out)
		}
		if entries, _ := os.ReadDir(filepath.Dir(dest)); len(entries) != 1 {
			t.Errorf("dest dir holds %d entries, want only the dest (no stage file left)", len(entries))
		}
		if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
			t.Errorf("exit %d after SIGTERM", code)
		}
	})
}

func waitOutput(t *testing.T, p *heraldProc, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for p.Output() != want {
		if time.Now().After(deadline) {
			t.Fatalf("output = %q, want %q", p.Output(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// herald watch: a key read only inside a partial is inferred and watched (its put
// re-renders), and editing the partial re-renders the resources that call it — and
// reloads only those.
func TestWatchPartialsKeyInference(t *testing.T) {
	e := harness.StartEtcd(t)
	cli := e.Client(t)
	put(t, cli, "/app/upstream", "10.0.0.1:80")
	put(t, cli, "/app/name", "web")
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"conf.d/lb.toml":                   "[template]\nsrc = \"lb.tmpl\"\ndest = \"out/lb\"\nmake_dirs = true\n",
		"conf.d/other.toml":                "[template]\nsrc = \"other.tmpl\"\ndest = \"out/other\"\nmake_dirs = true\n",
		"templates/lb.tmpl":                "name={{getv \"/app/name\"}}\n{{template \"upstream\" .}}",
		"templates/other.tmpl":             "other={{getv \"/app/name\"}}",
		"templates/partials/upstream.tmpl": "{{define \"upstream\"}}server {{getv \"/app/upstream\"}}{{end}}",
	})
	p := startHerald(t, nil, "watch", "--confdir", dir, "--backend", etcdBackend(e), "--log-level", "debug")
	lb := filepath.Join(dir, "out", "lb")
	waitFile(t, lb, "name=web\nserver 10.0.0.1:80", 10*time.Second)
	waitFile(t, filepath.Join(dir, "out", "other"), "other=web", 5*time.Second)

	put(t, cli, "/app/upstream", "10.0.0.2:80")
	waitFile(t, lb, "name=web\nserver 10.0.0.2:80", 10*time.Second)
	if !strings.Contains(p.Output(), `reason="changed key /app/upstream"`) {
		t.Errorf("the re-render does not name the partial's key:\n%s", tail(p.Output(), 20))
	}

	// Hot reload: the edited partial re-renders lb; other, which does not call it, is
	// not reloaded (both decisions come from the same reload, logged before lb renders).
	writeTree(t, dir, map[string]string{"templates/partials/upstream.tmpl": "{{define \"upstream\"}}backend {{getv \"/app/upstream\"}}{{end}}"})
	waitFile(t, lb, "name=web\nbackend 10.0.0.2:80", 10*time.Second)
	if out := p.Output(); !strings.Contains(out, "resource loaded") || strings.Contains(out, `msg="resource loaded" resource=other.toml`) {
		t.Errorf("want lb.toml reloaded and other.toml not:\n%s", tail(out, 20))
	}
	// And the key stays watched through the reloaded version.
	put(t, cli, "/app/upstream", "10.0.0.3:80")
	waitFile(t, lb, "name=web\nbackend 10.0.0.3:80", 10*time.Second)
	if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM", code)
	}
}
