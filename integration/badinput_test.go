package integration

// The bad-input catalogue of issue 11: one subtest per item, each asserting the exact
// message herald gives, and that
//
//   - `herald render` exits non-zero and leaves dest byte-identical (same bytes, mode and
//     inode: nothing was renamed over it) with no stage file left behind;
//   - `herald watch` keeps running (and serving /healthz), leaves dest byte-identical,
//     and renders again once the input is fixed.
//
// Two groups differ, as herald's design says they must:
//
//   - malformed service instances are skipped with a warning naming their key; the list
//     renders without them, so dest stays byte-identical (DESIGN.md: "A malformed instance
//     is skipped and logged with its key; it never empties or fails the whole list"), and
//     `render` then exits 1 naming the keys it skipped;
//   - a failing reload_cmd runs after the rename (the file passed its check), so dest
//     holds the new, checked content; herald reports the failure, `render` exits 1 and
//     `watch` goes on.
//
// Every case reads its own keys (--prefix) and service from one etcd per test; the
// registry failures (unreachable, credentials, TLS) start the servers they need.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/heraldhq/herald/integration/harness"
)

// badTmpl reads keys through every function family whose runtime errors the catalogue
// covers (getv, json, div/atoi) and one service list. %s is the service name.
const badTmpl = `name={{getv "/app/name"}} rev={{getv "/app/rev"}}
port={{(json (getv "/app/cfg")).port}} share={{div 100 (atoi (getv "/app/weight"))}}
{{range service "%s"}}server {{.ID}} {{.HostPort}}
{{end}}{{getv "/app/pad" ""}}`

// badGood is what badTmpl renders from the good data with /app/rev = rev.
func badGood(rev string) string {
	return "name=web rev=" + rev + "\nport=8080 share=25\nserver w1 10.0.0.1:80\n"
}

// stageRE stands for a stage file name in expected messages ("." + base +
// random digits).
const stageRE = "STAGEFILE"

// badEnv is one confdir whose resource a.toml renders dest from its own keys and its
// own service in a shared etcd.
type badEnv struct {
	t      *testing.T
	cli    *clientv3.Client
	dir    string // confdir; also readable by nobody
	dest   string
	toml   string // conf.d/a.toml
	tmpl   string // templates/a.tmpl
	prefix string // --prefix
	svc    string // service name
	args   []string
	nobody bool // run herald as uid/gid 65534 (when the test runs as root)
	fsize  int  // ulimit -f for herald, in 512-byte blocks; 0: none
	env    []string
	proc   *heraldProc // the running watch, if any
}

func badName(t *testing.T) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return '-'
	}, t.Name())
}

// newBadEnv writes a good tree and good data; mode tells render and watch environments
// of one subtest apart.
func newBadEnv(t *testing.T, e *harness.Etcd, cli *clientv3.Client, mode string) *badEnv {
	t.Helper()
	dir, err := os.MkdirTemp("", "herald-bad-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// Readable by nobody, for the cases that run herald unprivileged.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	name := badName(t) + "-" + mode
	b := &badEnv{
		t: t, cli: cli, dir: dir,
		dest:   filepath.Join(dir, "out", "a"),
		toml:   filepath.Join(dir, "conf.d", "a.toml"),
		tmpl:   filepath.Join(dir, "templates", "a.tmpl"),
		prefix: "/" + name,
		svc:    name,
	}
	if e != nil {
		b.args = []string{"--backend", "etcd://" + strings.Join(etcdHosts(e.Endpoints), ",")}
	}
	writeTree(t, dir, map[string]string{"templates/a.tmpl": fmt.Sprintf(badTmpl, b.svc)})
	b.writeTOML("")
	if err := os.MkdirAll(filepath.Dir(b.dest), 0o755); err != nil {
		t.Fatal(err)
	}
	if cli != nil {
		b.put("/app/name", "web", "/app/rev", "1", "/app/cfg", `{"port":8080}`, "/app/weight", "4")
		b.putRaw("/services/"+b.svc+"/w1", `{"address":"10.0.0.1","port":80}`)
	}
	return b
}

// reloadTOML writes a.toml as writeTOML; with a watch running, it returns once the
// watch has loaded the new version (a later "resource loaded" line).
func (b *badEnv) reloadTOML(extra string) {
	b.t.Helper()
	const loaded = `msg="resource loaded" resource=a.toml`
	n := 0
	if b.proc != nil {
		n = strings.Count(b.proc.Output(), loaded)
	}
	b.writeTOML(extra)
	if b.proc == nil {
		return
	}
	for deadline := time.Now().Add(20 * time.Second); strings.Count(b.proc.Output(), loaded) <= n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.t.Fatalf("herald watch did not load the new a.toml within 20s:\n%s", tail(b.proc.Output(), 40))
		}
	}
}

// writeTOML writes a.toml: src, dest, mode (lines 1-4), then extra.
func (b *badEnv) writeTOML(extra string) {
	b.t.Helper()
	writeTree(b.t, b.dir, map[string]string{"conf.d/a.toml": fmt.Sprintf("[template]\nsrc = \"a.tmpl\"\ndest = %q\nmode = \"0644\"\n%s", b.dest, extra)})
}

func (b *badEnv) writeTmpl(text string) {
	b.t.Helper()
	writeTree(b.t, b.dir, map[string]string{"templates/a.tmpl": text})
}

// put sets keys (relative to the env's prefix) in pairs.
func (b *badEnv) put(kv ...string) {
	b.t.Helper()
	for i := 0; i < len(kv); i += 2 {
		b.putRaw(b.prefix+kv[i], kv[i+1])
	}
}

func (b *badEnv) putRaw(k, v string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.cli.Put(ctx, k, v); err != nil {
		b.t.Fatalf("put %s: %v", k, err)
	}
}

func (b *badEnv) del(k string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.cli.Delete(ctx, b.prefix+k); err != nil {
		b.t.Fatalf("delete %s: %v", k, err)
	}
}

// command builds a herald command line for this env: as nobody and under a file size
// limit when asked.
func (b *badEnv) command(sub string, extra ...string) *exec.Cmd {
	b.t.Helper()
	bin := heraldBinary(b.t)
	if b.nobody && os.Geteuid() == 0 {
		// The built binary sits in a private temp dir: give nobody a copy it can run.
		own := filepath.Join(b.dir, "bin", "herald")
		if _, err := os.Stat(own); err != nil {
			if err := os.MkdirAll(filepath.Dir(own), 0o755); err != nil {
				b.t.Fatal(err)
			}
			data, err := os.ReadFile(bin)
			if err != nil {
				b.t.Fatal(err)
			}
			if err := os.WriteFile(own, data, 0o755); err != nil {
				b.t.Fatal(err)
			}
		}
		bin = own
	}
	args := append([]string{sub, "--confdir", b.dir, "--prefix", b.prefix}, b.args...)
	args = append(args, extra...)
	var c *exec.Cmd
	if b.fsize > 0 {
		// RLIMIT_FSIZE: a write past it fails with EFBIG ("file too large"), as a full
		// disk fails with ENOSPC, without a loop device or a mount.
		c = exec.Command("/bin/sh", append([]string{"-c", fmt.Sprintf(`ulimit -f %d && exec "$0" "$@"`, b.fsize), bin}, args...)...)
	} else {
		c = exec.Command(bin, args...)
	}
	c.Env = append(os.Environ(), b.env...)
	if b.nobody && os.Geteuid() == 0 {
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	return c
}

// render runs `herald render` to completion and returns its exit status and output.
func (b *badEnv) render(extra ...string) (int, string) {
	b.t.Helper()
	c := b.command("render", append([]string{"--timeout", "5s"}, extra...)...)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Start(); err != nil {
		b.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		c.Process.Kill()
		<-done
		b.t.Fatalf("herald render did not finish within 60s:\n%s", out.String())
	}
	return c.ProcessState.ExitCode(), out.String()
}

func (b *badEnv) mustRender(rev string) {
	b.t.Helper()
	if code, out := b.render(); code != 0 {
		b.t.Fatalf("good render: exit %d:\n%s", code, out)
	}
	b.waitDest(badGood(rev))
}

// renderFails runs `herald render`, expecting exit status 1 and the line
// "herald render: " + want (want may hold stageRE).
func (b *badEnv) renderFails(want string) string {
	b.t.Helper()
	code, out := b.render()
	re := regexp.MustCompile(`(?m)^herald render: ` + badQuote(want) + `$`)
	if code != 1 || !re.MatchString(out) {
		b.t.Errorf("herald render: exit %d, output:\n%s\nwant exit 1 and the line\n  herald render: %s", code, out, want)
	}
	return out
}

// badQuote turns an expected message into a regexp: literal, except stageRE.
func badQuote(s string) string {
	return strings.ReplaceAll(regexp.QuoteMeta(s), stageRE, `\.[a-z]+[0-9]+`)
}

// logErr is the pattern of a log attribute err=<msg> as herald's text log writes it.
func logErr(msg string) string {
	return strings.ReplaceAll(regexp.QuoteMeta("err="+strconv.Quote(msg)), stageRE, `\.[a-z]+[0-9]+`)
}

// watch starts `herald watch` for this env with /healthz and /metrics on listen.
func (b *badEnv) watch() (*heraldProc, string) {
	b.t.Helper()
	listen := freeAddr(b.t)
	c := b.command("watch", "--listen", listen, "--log-level", "debug")
	p := &heraldProc{cmd: c, done: make(chan struct{})}
	c.Stdout, c.Stderr = p, p
	if err := c.Start(); err != nil {
		b.t.Fatal(err)
	}
	go func() { p.err = c.Wait(); close(p.done) }()
	b.proc = p
	b.t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			c.Process.Kill()
			<-p.done
		}
		if b.t.Failed() {
			b.t.Logf("herald watch output:\n%s", tail(p.Output(), 40))
		}
	})
	return p, listen
}

// waitLog waits until the watch's output matches pattern.
func (b *badEnv) waitLog(p *heraldProc, pattern string) {
	b.t.Helper()
	re := regexp.MustCompile(pattern)
	deadline := time.Now().Add(20 * time.Second)
	for !re.MatchString(p.Output()) {
		select {
		case <-p.done:
			b.t.Fatalf("herald watch exited (%v) before logging %s:\n%s", p.err, pattern, tail(p.Output(), 40))
		default:
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("herald watch did not log %s within 20s:\n%s", pattern, tail(p.Output(), 40))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// running asserts the daemon still runs and serves /healthz.
func (b *badEnv) running(p *heraldProc, listen string) {
	b.t.Helper()
	select {
	case <-p.done:
		b.t.Fatalf("herald watch exited: %v\n%s", p.err, tail(p.Output(), 40))
	default:
	}
	if code, body := httpGet(b.t, "http://"+listen+"/healthz"); code != 200 && code != 503 {
		b.t.Errorf("/healthz: %d %s", code, body)
	}
}

// stop ends the watch with SIGTERM; it must exit 0.
func (b *badEnv) stop(p *heraldProc) {
	b.t.Helper()
	if code := p.stop(b.t, syscall.SIGTERM, 15*time.Second); code != 0 {
		b.t.Errorf("herald watch exited %d after SIGTERM", code)
	}
}

func (b *badEnv) waitDest(want string) {
	b.t.Helper()
	waitFile(b.t, b.dest, want, 20*time.Second)
}

// badSnap is what "byte-identical" compares: existence, kind, bytes, mode, inode, and
// for a directory its entries.
type badSnap struct {
	exists  bool
	isDir   bool
	content string
	mode    fs.FileMode
	ino     uint64
	entries string
}

func snapshot(t *testing.T, path string) badSnap {
	t.Helper()
	fi, err := os.Lstat(path)
	if os.IsNotExist(err) {
		return badSnap{}
	}
	if err != nil {
		t.Fatal(err)
	}
	s := badSnap{exists: true, isDir: fi.IsDir(), mode: fi.Mode(), ino: fi.Sys().(*syscall.Stat_t).Ino}
	if s.isDir {
		ents, _ := os.ReadDir(path)
		for _, e := range ents {
			c, _ := os.ReadFile(filepath.Join(path, e.Name()))
			s.entries += e.Name() + "=" + string(c) + ";"
		}
		return s
	}
	if !fi.Mode().IsRegular() {
		return s // a FIFO: reading it would block
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s.content = string(b)
	return s
}

// same asserts that dest is as snapshotted and that no stage file is left next to it.
func (b *badEnv) same(before badSnap) {
	b.t.Helper()
	if now := snapshot(b.t, b.dest); now != before {
		b.t.Errorf("dest changed:\n  before %+v\n  after  %+v", before, now)
	}
	b.noStage()
}

func (b *badEnv) noStage() {
	b.t.Helper()
	ents, err := os.ReadDir(filepath.Dir(b.dest))
	if err != nil {
		return // the directory may be the missing one
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			b.t.Errorf("stage file %s left next to dest", e.Name())
		}
	}
}

func badEtcd(t *testing.T) (*harness.Etcd, *clientv3.Client) {
	e := harness.StartEtcd(t)
	return e, e.Client(t)
}

// ---------------------------------------------------------------------------
// resource and template files: found at load time, nothing is written; in watch
// mode a hot reload of the broken file keeps the previous version running.

type badConfigCase struct {
	name string
	bad  func(b *badEnv)
	fix  func(b *badEnv)
	want func(b *badEnv) string
}

func runBadConfig(t *testing.T, e *harness.Etcd, cli *clientv3.Client, tc badConfigCase) {
	t.Run("render", func(t *testing.T) {
		t.Parallel()
		b := newBadEnv(t, e, cli, "r")
		b.mustRender("1")
		before := snapshot(t, b.dest)
		tc.bad(b)
		b.put("/app/rev", "2") // a render that went through would change dest
		b.renderFails(tc.want(b))
		b.same(before)
	})
	t.Run("watch", func(t *testing.T) {
		t.Parallel()
		b := newBadEnv(t, e, cli, "w")
		p, listen := b.watch()
		b.waitDest(badGood("1"))
		before := snapshot(t, b.dest)
		tc.bad(b)
		b.waitLog(p, regexp.QuoteMeta(`msg="resource reload found errors; the previous version of those resources keeps running"`)+" "+logErr(tc.want(b)))
		b.running(p, listen)
		// The refusal is logged, so its render is over: dest must be as before now; the
		// later change rendered below proves herald went on without acting on it.
		b.same(before)
		// The previous version keeps following changes; the fixed file is picked up.
		b.put("/app/rev", "2")
		b.waitDest(badGood("2"))
		tc.fix(b)
		b.writeTmpl(fmt.Sprintf("fixed\n"+badTmpl, b.svc))
		b.waitDest("fixed\n" + badGood("2"))
		b.stop(p)
	})
}

func TestBadInputResourceFile(t *testing.T) {
	t.Parallel()
	e, cli := badEtcd(t)
	restore := func(b *badEnv) { b.writeTOML("") }
	for _, tc := range []badConfigCase{
		{
			name: "malformed TOML",
			bad: func(b *badEnv) {
				writeTree(b.t, b.dir, map[string]string{"conf.d/a.toml": fmt.Sprintf("[template]\nsrc = \"a.tmpl\"\ndest = %q\nkeys = [\"/app\"\n", b.dest)})
			},
			want: func(b *badEnv) string {
				return b.toml + `:4: bad TOML: expected a comma (',') or array terminator (']'), but got end of file`
			},
		},
		{
			name: "unknown key",
			bad:  func(b *badEnv) { b.writeTOML("reload_comand = \"systemctl reload haproxy\"\n") },
			want: func(b *badEnv) string { return b.toml + `:5: unknown key "template.reload_comand"` },
		},
		{
			name: "bad mode",
			bad: func(b *badEnv) {
				writeTree(b.t, b.dir, map[string]string{"conf.d/a.toml": fmt.Sprintf("[template]\nsrc = \"a.tmpl\"\ndest = %q\nmode = \"0999\"\n", b.dest)})
			},
			want: func(b *badEnv) string { return b.toml + `:4: mode "0999" is not an octal file mode like "0644"` },
		},
		{
			// A FIFO (or a device such as /dev/zero) would be read forever.
			name: "template is a FIFO",
			bad: func(b *badEnv) {
				if err := syscall.Mkfifo(filepath.Join(b.dir, "templates", "fifo.tmpl"), 0o644); err != nil {
					b.t.Fatal(err)
				}
				writeTree(b.t, b.dir, map[string]string{"conf.d/a.toml": fmt.Sprintf("[template]\nsrc = \"fifo.tmpl\"\ndest = %q\n", b.dest)})
			},
			want: func(b *badEnv) string {
				return b.toml + `:2: template: read template ` + filepath.Join(b.dir, "templates", "fifo.tmpl") + `: not a regular file (a FIFO)`
			},
		},
		{
			name: "missing template",
			bad: func(b *badEnv) {
				writeTree(b.t, b.dir, map[string]string{"conf.d/a.toml": fmt.Sprintf("[template]\nsrc = \"missing.tmpl\"\ndest = %q\n", b.dest)})
			},
			want: func(b *badEnv) string {
				return b.toml + `:2: template ` + filepath.Join(b.dir, "templates", "missing.tmpl") + ` does not exist`
			},
		},
	} {
		tc.fix = restore
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runBadConfig(t, e, cli, tc)
		})
	}
}

func TestBadInputTemplate(t *testing.T) {
	t.Parallel()
	e, cli := badEtcd(t)

	// A syntax error: found when the template is loaded.
	t.Run("syntax error", func(t *testing.T) {
		t.Parallel()
		runBadConfig(t, e, cli, badConfigCase{
			bad: func(b *badEnv) { b.writeTmpl(`name={{getv "/app/name"`) },
			fix: func(*badEnv) {},
			want: func(b *badEnv) string {
				return b.toml + `:2: template: parse template ` + b.tmpl + `: template: a.tmpl:1: unclosed action`
			},
		})
	})

	// Runtime errors: the data makes the template fail; nothing is written.
	for _, tc := range []struct {
		name string
		bad  func(b *badEnv)
		fix  func(b *badEnv)
		want func(b *badEnv) string
	}{
		{
			name: "missing key",
			bad:  func(b *badEnv) { b.del("/app/name") },
			fix:  func(b *badEnv) { b.put("/app/name", "web") },
			want: func(b *badEnv) string {
				return `render ` + b.tmpl + `: template: a.tmpl:1:7: executing "a.tmpl" at <getv "/app/name">: error calling getv: key does not exist: /app/name`
			},
		},
		{
			name: "bad json",
			bad:  func(b *badEnv) { b.put("/app/cfg", `{"port": 8080,`) },
			fix:  func(b *badEnv) { b.put("/app/cfg", `{"port":8080}`) },
			want: func(b *badEnv) string {
				return `render ` + b.tmpl + `: template: a.tmpl:2:8: executing "a.tmpl" at <json (getv "/app/cfg")>: error calling json: json: value "{\"port\": 8080," is not a JSON object: unexpected end of JSON input`
			},
		},
		{
			name: "division by zero",
			bad:  func(b *badEnv) { b.put("/app/weight", "0") },
			fix:  func(b *badEnv) { b.put("/app/weight", "4") },
			want: func(b *badEnv) string {
				return `render ` + b.tmpl + `: template: a.tmpl:2:47: executing "a.tmpl" at <div 100 (atoi (getv "/app/weight"))>: error calling div: div 100 0: division by zero`
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runBadData(t, e, cli, badDataCase{bad: tc.bad, fix: tc.fix, want: tc.want, data: true})
		})
	}
}

// badDataCase breaks what a sync meets at run time: registry data, the dest directory,
// the commands. In watch mode the next change makes herald try (and fail) again.
type badDataCase struct {
	setup func(b *badEnv) // before the first (good) render
	bad   func(b *badEnv)
	// data: bad changes keys the template reads, which makes herald render by itself.
	// (In watch mode no other key is changed then: herald follows each key with its own
	// watch, and changes of two keys may arrive in either order.)
	data       bool
	fix        func(b *badEnv)
	want       func(b *badEnv) string // the error, as logged by watch
	wantRender func(b *badEnv) string // the error line of render, after "herald render: "
	// after checks dest after the failure; nil: byte-identical.
	after func(b *badEnv, before badSnap)
	// also runs after the failure in both modes (e.g. no leftover process).
	also func(b *badEnv)
}

func runBadData(t *testing.T, e *harness.Etcd, cli *clientv3.Client, tc badDataCase) {
	if tc.wantRender == nil {
		tc.wantRender = func(b *badEnv) string { return "a.toml: " + tc.want(b) }
	}
	check := func(b *badEnv, before badSnap) {
		if tc.after != nil {
			tc.after(b, before)
		} else {
			b.same(before)
		}
		if tc.also != nil {
			tc.also(b)
		}
	}
	t.Run("render", func(t *testing.T) {
		t.Parallel()
		b := newBadEnv(t, e, cli, "r")
		if tc.setup != nil {
			tc.setup(b)
		}
		b.mustRender("1")
		before := snapshot(t, b.dest)
		tc.bad(b)
		b.put("/app/rev", "2")
		b.renderFails(tc.wantRender(b))
		check(b, before)
	})
	t.Run("watch", func(t *testing.T) {
		t.Parallel()
		b := newBadEnv(t, e, cli, "w")
		if tc.setup != nil {
			tc.setup(b)
		}
		p, listen := b.watch()
		b.waitDest(badGood("1"))
		before := snapshot(t, b.dest)
		tc.bad(b)
		if !tc.data {
			b.put("/app/rev", "2")
		}
		b.waitLog(p, logErr(tc.want(b)))
		b.running(p, listen)
		// The refusal is logged, so its render is over: dest must be as before now; the
		// later change rendered below proves herald went on without acting on it.
		check(b, before)
		tc.fix(b)
		b.put("/app/rev", "3")
		b.waitDest(badGood("3"))
		b.stop(p)
	})
}

// ---------------------------------------------------------------------------
// malformed service instances: skipped with a warning naming the key; the list renders
// without them (so dest is byte-identical), and render exits 1 naming the keys.

func TestBadInputRegistryValues(t *testing.T) {
	t.Parallel()
	e, cli := badEtcd(t)
	big := `{"address":"10.0.0.9","port":80,"meta":{"pad":"` + strings.Repeat("x", 1<<20) + `"}}`
	for _, tc := range []struct {
		name, value, why string
	}{
		{"bad JSON", `{"address":"10.0.0.9","port":`, "invalid JSON at byte 29: unexpected end of JSON input"},
		{"bad port", `{"address":"10.0.0.9","port":70000}`, "port 70000 out of range 0-65535"},
		{"port not a number", `10.0.0.9:http`, `"10.0.0.9:http": port "http" is not a decimal number`},
		{"empty address", `{"address":"","port":80}`, "empty address"},
		{"binary data", "\x00\xff\xfe\x01binary", "value is binary, not UTF-8 text (Thrift-encoded ServerSet members are not supported)"},
		{"1 MB value", big, fmt.Sprintf("value is %d bytes, more than the 1048576 accepted", len(big))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			warning := func(b *badEnv) string {
				key := "/services/" + b.svc + "/bad"
				return regexp.QuoteMeta(`level=WARN msg="skipping malformed service instance" backend=etcd key=`+key+" ") +
					logErr("service instance "+key+": "+tc.why)
			}
			t.Run("render", func(t *testing.T) {
				t.Parallel()
				b := newBadEnv(t, e, cli, "r")
				b.mustRender("1")
				before := snapshot(t, b.dest)
				b.putRaw("/services/"+b.svc+"/bad", tc.value)
				code, out := b.render()
				if code != 1 || !regexp.MustCompile(warning(b)).MatchString(out) {
					t.Errorf("render with a malformed instance: exit %d, output:\n%s\nwant exit 1 and a warning matching %s", code, out, warning(b))
				}
				final := "herald render: skipped 1 malformed service instance(s), rendered without them: /services/" + b.svc + "/bad\n"
				if !strings.HasSuffix(out, final) {
					t.Errorf("render output ends:\n%s\nwant it to end with\n%s", tail(out, 3), final)
				}
				b.same(before)
			})
			t.Run("watch", func(t *testing.T) {
				t.Parallel()
				b := newBadEnv(t, e, cli, "w")
				p, listen := b.watch()
				b.waitDest(badGood("1"))
				before := snapshot(t, b.dest)
				b.putRaw("/services/"+b.svc+"/bad", tc.value)
				b.waitLog(p, warning(b))
				b.running(p, listen)
				// The refusal is logged, so its render is over: dest must be as before now; the
				// later change rendered below proves herald went on without acting on it.
				b.same(before)
				b.put("/app/rev", "2")
				b.waitDest(badGood("2"))
				b.stop(p)
			})
		})
	}
}

// ---------------------------------------------------------------------------
// dest

func TestBadInputDest(t *testing.T) {
	t.Parallel()
	e, cli := badEtcd(t)

	t.Run("missing dest dir", func(t *testing.T) {
		t.Parallel()
		want := func(b *badEnv) string {
			dir := filepath.Dir(b.dest)
			return b.dest + ": create stage file: open " + dir + ": no such file or directory"
		}
		gone := func(b *badEnv) {
			b.dest = filepath.Join(b.dir, "missing", "a")
			b.writeTOML("")
		}
		t.Run("render", func(t *testing.T) {
			t.Parallel()
			b := newBadEnv(t, e, cli, "r")
			gone(b)
			b.renderFails("a.toml: " + want(b))
			if _, err := os.Stat(filepath.Dir(b.dest)); !os.IsNotExist(err) {
				t.Errorf("herald created the missing directory (without make_dirs): %v", err)
			}
		})
		t.Run("watch", func(t *testing.T) {
			t.Parallel()
			b := newBadEnv(t, e, cli, "w")
			gone(b)
			p, listen := b.watch()
			b.waitLog(p, logErr(want(b)))
			b.running(p, listen)
			if _, err := os.Stat(filepath.Dir(b.dest)); !os.IsNotExist(err) {
				t.Errorf("herald created the missing directory (without make_dirs): %v", err)
			}
			if err := os.Mkdir(filepath.Dir(b.dest), 0o755); err != nil {
				t.Fatal(err)
			}
			b.put("/app/rev", "2")
			b.waitDest(badGood("2"))
			b.stop(p)
		})
	})

	t.Run("unwritable dest dir", func(t *testing.T) {
		t.Parallel()
		// herald runs unprivileged (as nobody when the test runs as root, since root
		// writes anywhere); the directory is its own until it is made read-only.
		out := func(b *badEnv) string { return filepath.Dir(b.dest) }
		runBadData(t, e, cli, badDataCase{
			setup: func(b *badEnv) {
				b.nobody = true
				if os.Geteuid() == 0 {
					if err := os.Chown(out(b), 65534, 65534); err != nil {
						b.t.Fatal(err)
					}
				}
			},
			bad: func(b *badEnv) {
				if err := os.Chmod(out(b), 0o555); err != nil {
					b.t.Fatal(err)
				}
			},
			fix: func(b *badEnv) {
				if err := os.Chmod(out(b), 0o755); err != nil {
					b.t.Fatal(err)
				}
			},
			want: func(b *badEnv) string {
				return b.dest + ": create stage file: open " + out(b) + ": permission denied"
			},
		})
	})

	t.Run("dest is a FIFO", func(t *testing.T) {
		t.Parallel()
		// Reading it to compare would block forever; the rename would replace it.
		toFIFO := func(b *badEnv) {
			if err := os.Remove(b.dest); err != nil {
				b.t.Fatal(err)
			}
			if err := syscall.Mkfifo(b.dest, 0o644); err != nil {
				b.t.Fatal(err)
			}
		}
		t.Run("render", func(t *testing.T) {
			t.Parallel()
			b := newBadEnv(t, e, cli, "r")
			b.mustRender("1")
			toFIFO(b)
			before := snapshot(t, b.dest)
			b.put("/app/rev", "2")
			b.renderFails(b.toml + ":3: dest " + b.dest + " is not a regular file")
			b.same(before)
		})
		t.Run("watch", func(t *testing.T) {
			t.Parallel()
			b := newBadEnv(t, e, cli, "w")
			p, listen := b.watch()
			b.waitDest(badGood("1"))
			toFIFO(b)
			before := snapshot(t, b.dest)
			b.put("/app/rev", "2")
			b.waitLog(p, logErr(b.dest+": dest is not a regular file"))
			b.running(p, listen)
			// The refusal is logged, so its render is over: dest must be as before now; the
			// later change rendered below proves herald went on without acting on it.
			b.same(before)
			if err := os.Remove(b.dest); err != nil {
				t.Fatal(err)
			}
			b.put("/app/rev", "3")
			b.waitDest(badGood("3"))
			b.stop(p)
		})
	})

	t.Run("dest is a directory", func(t *testing.T) {
		t.Parallel()
		toDir := func(b *badEnv) {
			if err := os.Remove(b.dest); err != nil {
				b.t.Fatal(err)
			}
			if err := os.Mkdir(b.dest, 0o755); err != nil {
				b.t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(b.dest, "inside"), []byte("keep me\n"), 0o644); err != nil {
				b.t.Fatal(err)
			}
		}
		// render: refused when the resource is loaded.
		t.Run("render", func(t *testing.T) {
			t.Parallel()
			b := newBadEnv(t, e, cli, "r")
			b.mustRender("1")
			toDir(b)
			before := snapshot(t, b.dest)
			b.put("/app/rev", "2")
			b.renderFails(b.toml + ":3: dest " + b.dest + " is a directory")
			b.same(before)
		})
		// watch: the file became a directory while herald runs.
		t.Run("watch", func(t *testing.T) {
			t.Parallel()
			b := newBadEnv(t, e, cli, "w")
			p, listen := b.watch()
			b.waitDest(badGood("1"))
			toDir(b)
			before := snapshot(t, b.dest)
			b.put("/app/rev", "2")
			b.waitLog(p, logErr(b.dest+": dest is a directory"))
			b.running(p, listen)
			// The refusal is logged, so its render is over: dest must be as before now; the
			// later change rendered below proves herald went on without acting on it.
			b.same(before)
			if err := os.RemoveAll(b.dest); err != nil {
				t.Fatal(err)
			}
			b.put("/app/rev", "3")
			b.waitDest(badGood("3"))
			b.stop(p)
		})
	})
}

// ---------------------------------------------------------------------------
// check_cmd and reload_cmd

// pidGone asserts that the process whose PID a command wrote to file is gone: herald
// killed the command's whole process group, and reaped it.
func pidGone(b *badEnv, file string) {
	b.t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		b.t.Fatalf("the command did not start: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		b.t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			b.t.Errorf("the command that timed out (pid %d) is still there: %s", pid, stat)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	os.Remove(file)
}

func TestBadInputCheckCmd(t *testing.T) {
	t.Parallel()
	e, cli := badEtcd(t)
	noCheck := func(b *badEnv) { b.writeTOML("") }
	// The check is added by a hot reload in watch mode; the new resource version is
	// valid, its render fails the check.
	withCheck := func(cmd, timeout string) func(b *badEnv) {
		return func(b *badEnv) {
			extra := "check_cmd = " + strconv.Quote(strings.ReplaceAll(cmd, "PIDFILE", filepath.Join(b.dir, "pid"))) + "\n"
			if timeout != "" {
				extra += "check_timeout = " + strconv.Quote(timeout) + "\n"
			}
			b.reloadTOML(extra) // watch: the hot reload happens first
		}
	}
	t.Run("fails", func(t *testing.T) {
		t.Parallel()
		cmd := `echo "line 3: unknown directive 'bakend'" >&2; exit 3`
		runBadData(t, e, cli, badDataCase{
			bad: withCheck(cmd, ""), fix: noCheck,
			want: func(b *badEnv) string {
				return b.dest + `: check_cmd ` + strconv.Quote(cmd) + ` failed: exit status 3: line 3: unknown directive 'bakend'`
			},
		})
	})
	t.Run("hangs", func(t *testing.T) {
		t.Parallel()
		cmd := `echo $$ > PIDFILE; exec sleep 60`
		runBadData(t, e, cli, badDataCase{
			bad: withCheck(cmd, "1s"), fix: noCheck,
			want: func(b *badEnv) string {
				return b.dest + `: check_cmd "echo $$ > ` + filepath.Join(b.dir, "pid") + `; exec sleep 60" timed out after 1s`
			},
			also: func(b *badEnv) { pidGone(b, filepath.Join(b.dir, "pid")) },
		})
	})
	t.Run("missing", func(t *testing.T) {
		t.Parallel()
		cmd := `/nonexistent/bin/validate {{.src}}`
		runBadData(t, e, cli, badDataCase{
			bad: withCheck(cmd, ""), fix: noCheck,
			want: func(b *badEnv) string {
				dir := filepath.Dir(b.dest)
				return b.dest + `: check_cmd "/nonexistent/bin/validate ` + dir + "/" + stageRE + `" failed: exit status 127: /bin/sh: 1: /nonexistent/bin/validate: not found`
			},
		})
	})
}

func TestBadInputReloadCmd(t *testing.T) {
	t.Parallel()
	e, cli := badEtcd(t)
	withReload := func(cmd, timeout string) func(b *badEnv) {
		return func(b *badEnv) {
			extra := "reload_cmd = " + strconv.Quote(strings.ReplaceAll(cmd, "PIDFILE", filepath.Join(b.dir, "pid"))) + "\n"
			if timeout != "" {
				extra += "reload_timeout = " + strconv.Quote(timeout) + "\n"
			}
			b.reloadTOML(extra)
		}
	}
	// The reload runs after the rename: dest holds the new content, which passed its
	// check; the failure is reported and the daemon goes on.
	renamed := func(b *badEnv, _ badSnap) {
		b.t.Helper()
		if got, _ := os.ReadFile(b.dest); string(got) != badGood("2") {
			b.t.Errorf("dest = %q, want the new content %q", got, badGood("2"))
		}
		b.noStage()
	}
	for _, tc := range []struct {
		name, cmd, timeout string
		want               func(b *badEnv) string
		also               func(b *badEnv)
	}{
		{
			name: "fails", cmd: `echo "haproxy: reload refused" >&2; exit 4`,
			want: func(*badEnv) string {
				return `reload_cmd "echo \"haproxy: reload refused\" >&2; exit 4" failed: exit status 4: haproxy: reload refused`
			},
		},
		{
			name: "hangs", cmd: `echo $$ > PIDFILE; exec sleep 60`, timeout: "1s",
			want: func(b *badEnv) string {
				return `reload_cmd "echo $$ > ` + filepath.Join(b.dir, "pid") + `; exec sleep 60" timed out after 1s`
			},
			also: func(b *badEnv) { pidGone(b, filepath.Join(b.dir, "pid")) },
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runBadData(t, e, cli, badDataCase{
				bad: withReload(tc.cmd, tc.timeout), fix: func(b *badEnv) { b.writeTOML("") },
				want: tc.want, wantRender: tc.want, after: renamed, also: tc.also,
			})
		})
	}
}

// ---------------------------------------------------------------------------
// disk full

func TestBadInputDiskFull(t *testing.T) {
	t.Parallel()
	e, cli := badEtcd(t)
	runBadData(t, e, cli, badDataCase{
		// 1 block of 512 bytes: the good file (57 bytes) fits, a 4 KB one does not.
		setup: func(b *badEnv) { b.fsize = 1 },
		bad:   func(b *badEnv) { b.put("/app/pad", strings.Repeat("x", 4096)) },
		data:  true,
		fix:   func(b *badEnv) { b.del("/app/pad") },
		want: func(b *badEnv) string {
			dir := filepath.Dir(b.dest)
			return b.dest + ": write stage file: write " + dir + "/.a (unnamed): file too large"
		},
	})
}

// ---------------------------------------------------------------------------
// the registry: unreachable, wrong credentials, TLS mismatch. Nothing can be read, so
// render fails after --timeout and watch keeps the last good file, retrying.

// runBadRegistry seeds dest with a last good file, then runs render (exit 1, and the
// line "herald render: " followed by what matches wantRE) and watch (running, /healthz
// 503 matching healthRE, dest untouched, SIGTERM ends it) with setup's backend flags.
func runBadRegistry(t *testing.T, setup func(b *badEnv), wantRE, healthRE func(b *badEnv) string) {
	t.Helper()
	seed := func(b *badEnv) badSnap {
		setup(b)
		if err := os.WriteFile(b.dest, []byte("last good\n"), 0o640); err != nil {
			t.Fatal(err)
		}
		return snapshot(t, b.dest)
	}
	t.Run("render", func(t *testing.T) {
		t.Parallel()
		b := newBadEnv(t, nil, nil, "r")
		before := seed(b)
		start := time.Now()
		code, out := b.render()
		if re := regexp.MustCompile(`(?m)^herald render: ` + wantRE(b) + `$`); code != 1 || !re.MatchString(out) {
			t.Errorf("herald render: exit %d, output:\n%s\nwant exit 1 and a line matching\n  %s", code, out, re)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("render took %v to give up with --timeout 5s", d)
		}
		b.same(before)
	})
	t.Run("watch", func(t *testing.T) {
		t.Parallel()
		b := newBadEnv(t, nil, nil, "w")
		before := seed(b)
		p, listen := b.watch()
		re := regexp.MustCompile(healthRE(b))
		deadline := time.Now().Add(20 * time.Second)
		for {
			code, body := httpGet(t, "http://"+listen+"/healthz")
			if code == 503 && re.MatchString(body) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("/healthz = %d %s; want 503 matching %s", code, body, re)
			}
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(time.Second)
		b.running(p, listen)
		b.same(before)
		b.stop(p)
	})
}

// jsonField is the pattern of "field":"value" as /healthz encodes it.
func jsonField(field, value string) string {
	v, _ := json.Marshal(value)
	return regexp.QuoteMeta(`"` + field + `":` + string(v))
}

func TestBadInputRegistry(t *testing.T) {
	t.Parallel()
	lit := func(f func(b *badEnv) string) func(b *badEnv) string {
		return func(b *badEnv) string { return regexp.QuoteMeta(f(b)) }
	}
	// read is how a failed read of the resource's first key starts.
	read := func(b *badEnv, backend string) string {
		return "a.toml: read [" + b.prefix + "/app/name]: " + backend + ": get " + b.prefix + "/app/name: "
	}
	down := func(addr, err string) func(b *badEnv) string {
		return func(*badEnv) string {
			return regexp.QuoteMeta(`"state":"down","endpoint":"`+addr+`",`) + jsonField("error", err)
		}
	}

	t.Run("unreachable", func(t *testing.T) {
		t.Parallel()
		addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)) // nothing listens there
		refused := "dial tcp " + addr + ": connect: connection refused"
		runBadRegistry(t, func(b *badEnv) { b.args = []string{"--backend", "etcd://" + addr} },
			lit(func(b *badEnv) string {
				return read(b, "etcd "+addr) + "context deadline exceeded (last connection error: " + refused + ")"
			}),
			down(addr, refused))
	})

	t.Run("wrong credentials", func(t *testing.T) {
		t.Parallel()
		t.Run("etcd password", func(t *testing.T) {
			t.Parallel()
			e := harness.StartEtcd(t)
			etcdEnableAuth(t, e, "r00t-pw-bad-input", "reader-pw-bad-input", [2]string{"/", "\x00"})
			addr := etcdHosts(e.Endpoints)[0]
			const refusal = "etcdserver: authentication failed, invalid user ID or password"
			runBadRegistry(t, func(b *badEnv) {
				b.args = []string{"--backend", "etcd://" + addr, "--username", "reader"}
				b.env = []string{"HERALD_PASSWORD=wrong-pw-bad-input"}
			}, lit(func(b *badEnv) string { return read(b, "etcd "+addr) + refusal }), down(addr, refusal))
		})
		t.Run("consul token", func(t *testing.T) {
			t.Parallel()
			c := harness.StartConsul(t, harness.ConsulACL())
			msg := func(b *badEnv) string {
				return "get " + b.prefix + "/app/name: consul " + c.Addr + ": PUT /v1/txn: permission denied by Consul ACL " +
					"(check --consul-token, HERALD_CONSUL_TOKEN or CONSUL_HTTP_TOKEN): HTTP 403: ACL not found"
			}
			runBadRegistry(t, func(b *badEnv) {
				b.args = []string{"--backend", "consul://" + c.Addr}
				b.env = []string{"HERALD_CONSUL_TOKEN=00000000-dead-beef-0000-000000000000"}
			}, lit(func(b *badEnv) string { return "a.toml: read [" + b.prefix + "/app/name]: " + msg(b) }),
				func(b *badEnv) string {
					// The agent answers: the connection is up, the read is refused.
					return regexp.QuoteMeta(`"state":"up"`) + ".*" + jsonField("last_error", "read ["+b.prefix+"/app/name]: "+msg(b))
				})
		})
		t.Run("zookeeper digest", func(t *testing.T) {
			t.Parallel()
			z := harness.StartZooKeeper(t)
			admin := zkClient(t, z.Servers, 10*time.Second)
			if err := admin.AddAuth("digest", []byte("alice:alice-pw-bad-input")); err != nil {
				t.Fatal(err)
			}
			runBadRegistry(t, func(b *badEnv) {
				if err := zkMkdirs(admin, b.prefix+"/app"); err != nil {
					t.Fatal(err)
				}
				if _, err := admin.Create(b.prefix+"/app/name", []byte("web"), 0, zk.DigestACL(zk.PermAll, "alice", "alice-pw-bad-input")); err != nil {
					t.Fatal(err)
				}
				b.args = []string{"--backend", "zookeeper://" + z.Servers[0], "--username", "alice"}
				b.env = []string{"HERALD_PASSWORD=wrong-pw-bad-input"}
			}, lit(func(b *badEnv) string { return read(b, "zookeeper "+z.Servers[0]) + "zk: not authenticated" }),
				func(b *badEnv) string {
					return regexp.QuoteMeta(`"state":"up"`) + ".*" +
						jsonField("last_error", strings.TrimPrefix(read(b, "zookeeper "+z.Servers[0]), "a.toml: ")+"zk: not authenticated")
				})
		})
	})

	t.Run("TLS mismatch", func(t *testing.T) {
		t.Parallel()
		certs, other := harness.GenCerts(t), harness.GenCerts(t)
		e := harness.StartEtcd(t, harness.EtcdTLS(certs))
		addr := etcdHosts(e.Endpoints)[0]
		q := regexp.QuoteMeta
		// A refused client certificate reaches the client as the TLS alert or as a write
		// on the connection etcd already closed, depending on timing.
		noCert := `(` + q(addr+": server refused the connection after the TLS handshake (does it require a client certificate signed by its CA?): remote error: tls: bad certificate") +
			`|` + q("server closed the connection right after the TLS handshake (does it require a client certificate signed by its CA?): write tcp ") +
			`127\.0\.0\.1:\d+->` + q(addr) + `: write: (broken pipe|connection reset by peer))`
		for _, tc := range []struct {
			name    string
			args    []string
			causeRE string // after "last connection error: "
			errorRE string // /healthz backend.error
		}{
			// etcd closes or resets the connection: EOF or a reset, depending on timing.
			{"plain text to a TLS port", []string{"--backend", "etcd://" + addr},
				`(` + q(addr+": ") + `)?` + q("server closed the connection without answering (does it expect TLS? use etcds:// or the TLS options): ") +
					`(EOF|read tcp 127\.0\.0\.1:\d+->` + q(addr) + `: read: connection reset by peer)`,
				q(`"error":"server closed the connection without answering (does it expect TLS? use etcds:// or the TLS options): `)},
			{"server certificate from an unknown CA", []string{"--backend", "etcds://" + addr, "--tls-ca", other.CAFile, "--tls-cert", other.ClientCert, "--tls-key", other.ClientKey},
				q(addr + `: TLS handshake: tls: failed to verify certificate: x509: certificate signed by unknown authority (possibly because of "x509: ECDSA verification failure" while trying to verify candidate authority certificate "herald test CA")`),
				jsonField("error", `TLS handshake: tls: failed to verify certificate: x509: certificate signed by unknown authority (possibly because of "x509: ECDSA verification failure" while trying to verify candidate authority certificate "herald test CA")`)},
			{"no client certificate", []string{"--backend", "etcds://" + addr, "--tls-ca", certs.CAFile}, noCert,
				q(`"error":"server `) + `(refused the connection|closed the connection right) after the TLS handshake` + q(" (does it require a client certificate signed by its CA?): ")},
		} {
			t.Run("etcd "+tc.name, func(t *testing.T) {
				t.Parallel()
				runBadRegistry(t, func(b *badEnv) { b.args = tc.args },
					func(b *badEnv) string {
						return q(read(b, "etcd "+addr)+"context deadline exceeded (last connection error: ") + tc.causeRE + q(")")
					},
					func(*badEnv) string { return q(`"state":"down","endpoint":"`+addr+`",`) + tc.errorRE })
			})
		}
		t.Run("consul no client certificate", func(t *testing.T) {
			t.Parallel()
			c := harness.StartConsul(t, harness.ConsulTLS(certs))
			// How the refusal reaches the client depends on timing: the TLS alert, or
			// the transport's error on the connection the agent already closed (a
			// broken pipe, a reset, an HTTP/2 connection that never came up), which
			// herald explains with its own hint.
			cause := `(remote error: tls: certificate required|[^()]+ ` +
				regexp.QuoteMeta("(the agent dropped the TLS connection: does it require a client certificate that was not given or not accepted?)") + `)`
			runBadRegistry(t, func(b *badEnv) {
				b.args = []string{"--backend", "consuls://" + c.Addr, "--tls-ca", certs.CAFile}
			}, func(b *badEnv) string {
				return regexp.QuoteMeta("a.toml: read ["+b.prefix+"/app/name]: get "+b.prefix+"/app/name: consul "+c.Addr+": PUT /v1/txn: ") +
					cause + regexp.QuoteMeta("; gave up: context deadline exceeded")
			}, func(b *badEnv) string {
				return regexp.QuoteMeta(`"state":"down","endpoint":"`+c.Addr+`","error":"consul `+c.Addr+`: PUT /v1/txn: `) + cause
			})
		})
	})
}
