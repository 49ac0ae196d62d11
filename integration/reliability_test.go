package integration

// Reliability under what deploy tools, Kubernetes and careless operators do (issue 17,
// items 7-15): each test drives the real herald binary over the file backend, which
// needs no server, so what is tested is herald's own handling.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fileTree is a confdir whose resources read data.yaml through the file backend.
func fileTree(t *testing.T, files map[string]string) (dir, backend string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "herald-reliab-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// Readable by nobody, for the tests that run herald unprivileged.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeTree(t, dir, files)
	return dir, "file://" + filepath.Join(dir, "data.yaml")
}

// waitFor polls cond (bounded), failing with what's description.
func waitFor(t *testing.T, p *heraldProc, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if p != nil {
			select {
			case <-p.done:
				t.Fatalf("herald exited (%v) while waiting for %s:\n%s", p.err, what, tail(p.Output(), 40))
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 20s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func healthz(t *testing.T, listen string) (int, string) {
	t.Helper()
	return httpGet(t, "http://"+listen+"/healthz")
}

// runHerald runs a herald command to completion (bounded), optionally as nobody.
func runHerald(t *testing.T, nobody bool, args ...string) (int, string) {
	t.Helper()
	c := exec.Command(heraldBinaryFor(t, nobody), args...)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if nobody {
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		c.Process.Kill()
		<-done
		t.Fatalf("herald %v did not end within 60s:\n%s", args, out.String())
	}
	return c.ProcessState.ExitCode(), out.String()
}

// heraldBinaryFor returns the herald binary, copied where nobody can run it if asked
// (the built one sits in a private temp dir).
func heraldBinaryFor(t *testing.T, nobody bool) string {
	t.Helper()
	bin := heraldBinary(t)
	if !nobody {
		return bin
	}
	if os.Geteuid() != 0 {
		t.Fatal("running herald as nobody needs root")
	}
	dir, err := os.MkdirTemp("", "herald-bin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	own := filepath.Join(dir, "herald")
	if err := os.WriteFile(own, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return own
}

// Item 7: conf.d moved away (a deploy tool replacing it) keeps every resource running,
// /healthz says so, and the recreated conf.d is picked up without SIGHUP.
func TestWatchKeepsResourcesWhileConfDirIsReplaced(t *testing.T) {
	dir, backend := fileTree(t, map[string]string{
		"data.yaml":        "app: {a: '1'}\n",
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"out/a\"\nmake_dirs = true\n",
		"templates/a.tmpl": `a={{getv "/app/a"}}`,
		"templates/b.tmpl": `b={{getv "/app/a"}}`,
	})
	listen := freeAddr(t)
	p := startHerald(t, nil, "watch", "--confdir", dir, "--backend", backend, "--listen", listen)
	out := filepath.Join(dir, "out")
	waitFile(t, filepath.Join(out, "a"), "a=1", 10*time.Second)
	waitFor(t, p, "/healthz 200", func() bool { c, _ := healthz(t, listen); return c == 200 })

	cd := filepath.Join(dir, "conf.d")
	if err := os.Rename(cd, cd+".old"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, p, "/healthz 503 naming conf.d", func() bool {
		c, body := healthz(t, listen)
		return c == 503 && strings.Contains(body, `"config_error":"`+cd+`: cannot read directory`) && strings.Contains(body, `"name":"a.toml"`)
	})
	// The resource still runs: a data change still reaches its file.
	writeTree(t, dir, map[string]string{"data.yaml": "app: {a: '2'}\n"})
	waitFile(t, filepath.Join(out, "a"), "a=2", 10*time.Second)

	// The new conf.d arrives whole by a rename, with one more resource: watched again
	// by itself.
	writeTree(t, dir, map[string]string{
		"conf.d.new/a.toml": "[template]\nsrc = \"a.tmpl\"\ndest = \"out/a\"\nmake_dirs = true\n",
		"conf.d.new/b.toml": "[template]\nsrc = \"b.tmpl\"\ndest = \"out/b\"\nmake_dirs = true\n",
	})
	if err := os.Rename(cd+".new", cd); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(out, "b"), "b=2", 10*time.Second)
	waitFor(t, p, "/healthz 200 again", func() bool { c, _ := healthz(t, listen); return c == 200 })
	// And later edits in it are seen too.
	writeTree(t, dir, map[string]string{"templates/b.tmpl": `B={{getv "/app/a"}}`})
	waitFile(t, filepath.Join(out, "b"), "B=2", 10*time.Second)
}

// Item 7: a ConfigMap volume as conf.d renders each resource once (it failed with
// "dest ... is also written by"), and its ..data swap is a hot reload.
func TestConfigMapLayoutRendersAndReloads(t *testing.T) {
	dir, backend := fileTree(t, map[string]string{
		"data.yaml":                             "app: {a: '1'}\n",
		"templates/a.tmpl":                      `a={{getv "/app/a"}}`,
		"templates/b.tmpl":                      `b={{getv "/app/a"}}`,
		"conf.d/..2026_01_01_00_00_00.1/a.toml": "[template]\nsrc = \"a.tmpl\"\ndest = \"out/a\"\nmake_dirs = true\n",
	})
	cd := filepath.Join(dir, "conf.d")
	for target, link := range map[string]string{"..2026_01_01_00_00_00.1": "..data", "..data/a.toml": "a.toml", "..data/b.toml": "b.toml"} {
		if err := os.Symlink(target, filepath.Join(cd, link)); err != nil {
			t.Fatal(err)
		}
	}
	// b.toml dangles until the second version: an error naming it, a renders.
	code, out := runHerald(t, false, "render", "--confdir", dir, "--backend", backend)
	if code != 1 || strings.Contains(out, "also written by") || !strings.Contains(out, filepath.Join(cd, "b.toml")+": cannot read") {
		t.Fatalf("render: exit %d\n%s", code, out)
	}
	waitFile(t, filepath.Join(dir, "out", "a"), "a=1", time.Second)

	p := startHerald(t, nil, "watch", "--confdir", dir, "--backend", backend)
	writeTree(t, dir, map[string]string{"data.yaml": "app: {a: '2'}\n"})
	waitFile(t, filepath.Join(dir, "out", "a"), "a=2", 10*time.Second)
	// kubelet's update: a new hidden directory, ..data swapped to it by a rename.
	writeTree(t, dir, map[string]string{
		"conf.d/..2026_01_01_00_01_00.2/a.toml": "[template]\nsrc = \"a.tmpl\"\ndest = \"out/a\"\nmake_dirs = true\n",
		"conf.d/..2026_01_01_00_01_00.2/b.toml": "[template]\nsrc = \"b.tmpl\"\ndest = \"out/b\"\nmake_dirs = true\n",
	})
	if err := os.Symlink("..2026_01_01_00_01_00.2", filepath.Join(cd, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(cd, "..data_tmp"), filepath.Join(cd, "..data")); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(cd, "..2026_01_01_00_00_00.1"))
	waitFile(t, filepath.Join(dir, "out", "b"), "b=2", 10*time.Second)
	if strings.Contains(p.Output(), "also written by") {
		t.Fatalf("a resource was read twice:\n%s", p.Output())
	}
}

// Item 7: an unreadable sub-directory fails only its own files: render renders the
// rest and exits 1 naming the directory.
func TestRenderUnreadableSubdirFailsOnlyItsFiles(t *testing.T) {
	dir, backend := fileTree(t, map[string]string{
		"data.yaml":             "app: {a: '1'}\n",
		"conf.d/a.toml":         "[template]\nsrc = \"a.tmpl\"\ndest = \"out/a\"\n",
		"conf.d/private/b.toml": "[template]\nsrc = \"a.tmpl\"\ndest = \"out/b\"\n",
		"templates/a.tmpl":      `a={{getv "/app/a"}}`,
		"out/.keep":             "",
	})
	private := filepath.Join(dir, "conf.d", "private")
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "out"), 0o777); err != nil {
		t.Fatal(err)
	}
	code, out := runHerald(t, true, "render", "--confdir", dir, "--backend", backend)
	want := regexp.MustCompile(`(?m)^herald render: ` + regexp.QuoteMeta(private+": cannot read directory: open "+private+": permission denied") + `$`)
	if code != 1 || !want.MatchString(out) {
		t.Fatalf("render: exit %d\n%s\nwant exit 1 and %s", code, out, want)
	}
	waitFile(t, filepath.Join(dir, "out", "a"), "a=1", time.Second)
}

// Item 11: render's --timeout is the registry wait only. 30 resources with a 1-second
// check each (two at a time on 2 CPUs: ~15 s) all pass under --timeout 2s, and a check
// that overruns its own check_timeout is reported with that duration.
func TestRenderTimeoutDoesNotBoundChecks(t *testing.T) {
	files := map[string]string{
		"data.yaml":        "app: {a: '1'}\n",
		"templates/a.tmpl": `a={{getv "/app/a"}}`,
		"conf.d/slow.toml": "[template]\nsrc = \"a.tmpl\"\ndest = \"out/slow\"\nmake_dirs = true\ncheck_cmd = \"sleep 5\"\ncheck_timeout = \"1s\"\n",
	}
	for i := range 30 {
		files[fmt.Sprintf("conf.d/r%02d.toml", i)] = fmt.Sprintf("[template]\nsrc = \"a.tmpl\"\ndest = \"out/r%02d\"\nmake_dirs = true\ncheck_cmd = \"sleep 1\"\n", i)
	}
	dir, backend := fileTree(t, files)
	code, out := runHerald(t, false, "render", "--confdir", dir, "--backend", backend, "--timeout", "2s")
	want := `(?m)^herald render: slow.toml: ` + regexp.QuoteMeta(filepath.Join(dir, "out", "slow")+`: check_cmd "sleep 5" timed out after 1s`) + `$`
	if code != 1 || !regexp.MustCompile(want).MatchString(out) || strings.Count(out, "herald render: ") != 1 {
		t.Fatalf("render: exit %d\n%s\nwant exit 1 and only %s", code, out, want)
	}
	for i := range 30 {
		waitFile(t, filepath.Join(dir, "out", fmt.Sprintf("r%02d", i)), "a=1", time.Second)
	}
}

// Item 10: templates that loop practically forever — one that stops at its next output,
// one that calls nothing herald can stop — end with an error naming the resource and its
// render_timeout; the other resources keep following changes and SIGTERM still ends the
// daemon at once.
func TestRenderTimeoutEndsRunawayTemplates(t *testing.T) {
	dir, backend := fileTree(t, map[string]string{
		"data.yaml":         "app: {a: '1'}\n",
		"templates/ok.tmpl": `a={{getv "/app/a"}}`,
		// 10^12 iterations printing: stops at its next write (or, if its goroutine
		// gets no CPU within the grace period on a busy machine, is abandoned).
		"templates/print.tmpl": `{{range seq 1 1000000}}{{range seq 1 1000000}}x{{end}}{{end}}`,
		// 10^12 iterations calling nothing: cannot be stopped, only abandoned.
		"templates/spin.tmpl": `{{$l := seq 1 1000000}}{{range $l}}{{range $l}}{{end}}{{end}}`,
		"conf.d/ok.toml":      "[template]\nsrc = \"ok.tmpl\"\ndest = \"out/ok\"\nmake_dirs = true\n",
		"conf.d/print.toml":   "[template]\nsrc = \"print.tmpl\"\ndest = \"out/print\"\nmake_dirs = true\n",
		"conf.d/spin.toml":    "[template]\nsrc = \"spin.tmpl\"\ndest = \"out/spin\"\nmake_dirs = true\nrender_timeout = \"1s\"\n",
	})
	start := time.Now()
	code, out := runHerald(t, false, "render", "--confdir", dir, "--backend", backend, "--render-timeout", "2s")
	for _, want := range []string{
		`(?m)^herald render: print.toml: render ` + regexp.QuoteMeta(filepath.Join(dir, "templates", "print.tmpl")) + `: (stopped|abandoned, as it does not stop by itself): took longer than render_timeout 2s$`,
		// Abandoned, unless its goroutine got no CPU until past the timeout (a loaded
		// machine): then seq, which checks the deadline, stops it before it spins.
		`(?m)^spin.toml: render ` + regexp.QuoteMeta(filepath.Join(dir, "templates", "spin.tmpl")) + `: (abandoned, as it does not stop by itself|template: spin\.tmpl:1:8: executing "spin\.tmpl" at <seq 1 1000000>: error calling seq: stopped): took longer than render_timeout 1s$`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("render output lacks %s:\n%s", want, out)
		}
	}
	if code != 1 || time.Since(start) > 30*time.Second {
		t.Fatalf("render: exit %d after %v\n%s", code, time.Since(start), out)
	}
	waitFile(t, filepath.Join(dir, "out", "ok"), "a=1", time.Second)

	listen := freeAddr(t)
	p := startHerald(t, nil, "watch", "--confdir", dir, "--backend", backend, "--listen", listen, "--render-timeout", "1s")
	waitFor(t, p, "both runaway renders reported", func() bool {
		o := p.Output()
		return strings.Contains(o, "resource=spin.toml") && strings.Contains(o, "resource=print.toml") &&
			strings.Count(o, "took longer than render_timeout 1s") >= 2
	})
	// Twice, so that the runaways, re-dispatched by each change, are refused fast.
	for _, v := range []string{"2", "3"} {
		writeTree(t, dir, map[string]string{"data.yaml": "app: {a: '" + v + "'}\n"})
		waitFile(t, filepath.Join(dir, "out", "ok"), "a="+v, 10*time.Second)
	}
	if c, body := healthz(t, listen); c != 503 || !strings.Contains(body, `"behind":true`) {
		t.Errorf("/healthz = %d %s, want 503 with resources behind", c, body)
	}
	if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("watch exited %d after SIGTERM", code)
	}
}

// startHeraldNobody is startHerald, as nobody when asked (startHeraldAs cannot set
// credentials: it starts the process itself).
func startHeraldNobody(t *testing.T, nobody bool, args ...string) *heraldProc {
	t.Helper()
	p := &heraldProc{cmd: exec.Command(heraldBinaryFor(t, nobody), args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if nobody {
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("herald %v output:\n%s", args, tail(p.Output(), 60))
		}
	})
	return p
}

// Item 12: a write that fails (here: dest's directory not writable, as a full disk
// fails) is retried with backoff, with no registry change; meanwhile /healthz is 503
// with the resource behind.
func TestWatchRetriesFailedWrites(t *testing.T) {
	dir, backend := fileTree(t, map[string]string{
		"data.yaml":        "app: {a: '1'}\n",
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"out/a\"\n",
		"templates/a.tmpl": `a={{getv "/app/a"}}`,
		"out/.keep":        "",
	})
	out := filepath.Join(dir, "out")
	if err := os.Chmod(out, 0o755); err != nil { // root's: nobody cannot create the stage file
		t.Fatal(err)
	}
	listen := freeAddr(t)
	p := startHeraldNobody(t, true, "watch", "--confdir", dir, "--backend", backend, "--listen", listen)
	waitFor(t, p, "/healthz 503 with a.toml behind", func() bool {
		c, body := healthz(t, listen)
		return c == 503 && strings.Contains(body, `"behind":true`) && strings.Contains(body, "create stage file")
	})
	if err := os.Chmod(out, 0o777); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(out, "a"), "a=1", 10*time.Second)
	waitFor(t, p, "/healthz 200", func() bool { c, _ := healthz(t, listen); return c == 200 })
	if !strings.Contains(p.Output(), `reason="retry after: `) {
		t.Errorf("the write was not retried by itself:\n%s", p.Output())
	}
}

// Item 14: SIGHUP while `herald watch` is still starting (reading 2,000 resources) does
// not kill it (it did: exit 129); it is the reload signal.
func TestWatchSurvivesSIGHUPDuringStartup(t *testing.T) {
	files := map[string]string{"data.yaml": "app: {a: '1'}\n", "templates/a.tmpl": `a={{getv "/app/a"}}`}
	for i := range 2000 {
		files[fmt.Sprintf("conf.d/r%04d.toml", i)] = fmt.Sprintf("[template]\nsrc = \"a.tmpl\"\ndest = \"out/r%04d\"\nmake_dirs = true\n", i)
	}
	dir, backend := fileTree(t, files)
	p := startHerald(t, nil, "watch", "--confdir", dir, "--backend", backend)
	// Past the Go runtime's own start (~10 ms), before which no Go program can catch
	// a signal; main's package initializers (~40-80 ms) are covered.
	time.Sleep(100 * time.Millisecond)
	sent := 0
	for !strings.Contains(p.Output(), "herald watching") {
		select {
		case <-p.done:
			t.Fatalf("herald watch died (%v) after %d SIGHUPs during start-up:\n%s", p.err, sent, tail(p.Output(), 20))
		default:
		}
		p.cmd.Process.Signal(syscall.SIGHUP)
		sent++
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("%d SIGHUPs during start-up", sent)
	waitFile(t, filepath.Join(dir, "out", "r1999"), "a=1", 20*time.Second)
	writeTree(t, dir, map[string]string{"data.yaml": "app: {a: '2'}\n"})
	waitFile(t, filepath.Join(dir, "out", "r0000"), "a=2", 20*time.Second)
	if code := p.stop(t, syscall.SIGTERM, 20*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
}

// Item 14: `herald render` ignores SIGHUP (it died, leaving its stage files), and stage
// files a crash left are removed at start; only herald's own.
func TestRenderIgnoresSIGHUPAndRemovesStaleStages(t *testing.T) {
	dir, backend := fileTree(t, map[string]string{
		"data.yaml":                     "app: {a: '1'}\n",
		"conf.d/a.toml":                 "[template]\nsrc = \"a.tmpl\"\ndest = \"out/a\"\ncheck_cmd = \"sleep 1\"\n",
		"templates/a.tmpl":              `a={{getv "/app/a"}}`,
		"out/.a8674665223082153551":     "left by a crash",
		"out/.a.bak5577006791947779410": "left by a crash",
		"out/.a12":                      "a user's file",
		"out/.other8674665223082153551": "not a dest of ours",
	})
	c := exec.Command(heraldBinary(t), "render", "--confdir", dir, "--backend", backend)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	stage := regexp.MustCompile(`^\.a[0-9]{10,}$`)
	// While the check runs, the fresh stage file exists: SIGHUP then.
	waitFor(t, nil, "the stage file of this run", func() bool {
		es, _ := os.ReadDir(filepath.Join(dir, "out"))
		for _, e := range es {
			if stage.MatchString(e.Name()) && e.Name() != ".a8674665223082153551" {
				return true
			}
		}
		return false
	})
	c.Process.Signal(syscall.SIGHUP)
	if err := c.Wait(); err != nil {
		t.Fatalf("render after SIGHUP: %v\n%s", err, out.String())
	}
	waitFile(t, filepath.Join(dir, "out", "a"), "a=1", time.Second)
	var left []string
	es, _ := os.ReadDir(filepath.Join(dir, "out"))
	for _, e := range es {
		left = append(left, e.Name())
	}
	if want := []string{".a12", ".other8674665223082153551", "a"}; strings.Join(left, " ") != strings.Join(want, " ") {
		t.Fatalf("out/ holds %v, want %v\n%s", left, want, out.String())
	}
}

// Item 13: a value over the kernel's per-variable limit is skipped with a warning naming
// its key (herald stopped the healthy child, failed to start the next and exited 1);
// a change whose environment no child could start with leaves the running child alone.
func TestExecSkipsOversizedValuesAndKeepsTheChild(t *testing.T) {
	dir, backend := fileTree(t, map[string]string{"data.yaml": "svc: {version: v0}\n"})
	st := newExecChildState(t)
	// A 2 MiB stack limit: execve then takes at most 512 KiB of arguments and environment.
	args := execArgs([]string{"--backend", backend}, []string{"--prefix", "/svc"}, st.args(t))
	c := exec.Command("/bin/sh", append([]string{"-c", `ulimit -s 2048 && exec "$0" "$@"`, heraldBinary(t)}, args...)...)
	p := &heraldProc{cmd: c, done: make(chan struct{})}
	c.Stdout, c.Stderr = p, p
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = c.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			c.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("herald exec output:\n%s", tail(p.Output(), 40))
		}
	})
	cur := st.next(t, 0, 15*time.Second)

	// One value of 200 KiB: skipped by name; the restarted child sees the rest.
	big := strings.Repeat("b", 200<<10)
	writeTree(t, dir, map[string]string{"data.yaml": "svc: {version: v1, big: " + big + "}\n"})
	next := st.next(t, cur.PID, 15*time.Second)
	if next.Env["version"] != "v1" || next.Env["big"] != "" {
		t.Fatalf("child sees version=%q and big of %d bytes", next.Env["version"], len(next.Env["big"]))
	}
	if !regexp.MustCompile(`msg="key not passed to the child" key=/svc/big why="NAME=value takes 20480[0-9] bytes with its NUL, over the kernel.s 131072-byte limit`).MatchString(p.Output()) {
		t.Errorf("no warning naming /svc/big:\n%s", p.Output())
	}
	cur = next

	// Six values of 100 KiB: each fits, together they exceed 512 KiB. The child keeps
	// running; the next change it can start with restarts it.
	var b strings.Builder
	b.WriteString("svc: {version: v2")
	for i := range 6 {
		fmt.Fprintf(&b, ", v%d: %s", i, strings.Repeat("c", 100<<10))
	}
	b.WriteString("}\n")
	writeTree(t, dir, map[string]string{"data.yaml": b.String()})
	waitFor(t, p, "the refusal to restart", func() bool {
		return strings.Contains(p.Output(), "a new child could not start; the running child keeps running")
	})
	writeTree(t, dir, map[string]string{"data.yaml": "svc: {version: v3}\n"})
	next = st.next(t, cur.PID, 15*time.Second)
	if next.Env["version"] != "v3" {
		t.Fatalf("child sees version=%q, want v3", next.Env["version"])
	}
	// herald logs the start just after the child is running: wait for the log line, then
	// count (a fourth start would need a change that never comes).
	waitFor(t, p, "the third start's log line", func() bool { return strings.Count(p.Output(), "child started") >= 3 })
	if strings.Count(p.Output(), "child started") != 3 {
		t.Errorf("want 3 child starts (v0, v1, v3):\n%s", p.Output())
	}
}

// Item 9: a small YAML file whose aliases repeat long keys (gigabytes flattened) fails
// fast with an error naming the file, under a 3 GiB address-space limit (Go itself
// reserves over 1 GiB; the refusal peaks at ~400 MB resident) so that a
// regression cannot take the machine down.
func TestRenderRefusesAliasBombWithinMemory(t *testing.T) {
	var b strings.Builder
	long := func(level, i int) string { return fmt.Sprintf("k%d_%d_%s", level, i, strings.Repeat("x", 1000)) }
	b.WriteString("l0: &l0 {")
	for i := range 15 {
		fmt.Fprintf(&b, "%s: v, ", long(0, i))
	}
	b.WriteString("}\n")
	for level := 1; level < 5; level++ {
		fmt.Fprintf(&b, "l%d: &l%d {", level, level)
		for i := range 15 {
			fmt.Fprintf(&b, "%s: *l%d, ", long(level, i), level-1)
		}
		b.WriteString("}\n")
	}
	dir, backend := fileTree(t, map[string]string{
		"data.yaml":        b.String(),
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"out/a\"\nmake_dirs = true\n",
		"templates/a.tmpl": `{{getv "/l0/x" "none"}}`,
	})
	c := exec.Command("/bin/sh", "-c", `ulimit -v 3145728 && exec "$0" "$@"`, heraldBinary(t),
		"render", "--confdir", dir, "--backend", backend)
	start := time.Now()
	out, _ := c.CombinedOutput()
	want := regexp.MustCompile(`(?m)^herald render: .*` + regexp.QuoteMeta(filepath.Join(dir, "data.yaml")) + `:\d+: keys and values take more than 134217728 bytes once flattened`)
	if c.ProcessState.ExitCode() != 1 || !want.MatchString(string(out)) || time.Since(start) > 30*time.Second {
		t.Fatalf("render: exit %d after %v\n%s\nwant exit 1 and %s", c.ProcessState.ExitCode(), time.Since(start), tail(string(out), 10), want)
	}
}

// Item 8: a FIFO and a link to /dev/zero named *.toml in conf.d — present at start and
// added while watching — are refused with an error naming them: herald neither hangs
// nor fills its memory, the other resources follow changes, and SIGTERM ends it.
func TestWatchRefusesSpecialResourceFiles(t *testing.T) {
	dir, backend := fileTree(t, map[string]string{
		"data.yaml":        "app: {a: '1'}\n",
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"out/a\"\nmake_dirs = true\n",
		"templates/a.tmpl": `a={{getv "/app/a"}}`,
	})
	cd := filepath.Join(dir, "conf.d")
	if err := syscall.Mkfifo(filepath.Join(cd, "fifo.toml"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startHerald(t, nil, "watch", "--confdir", dir, "--backend", backend)
	waitFile(t, filepath.Join(dir, "out", "a"), "a=1", 10*time.Second)
	if !strings.Contains(p.Output(), filepath.Join(cd, "fifo.toml")+": cannot read: not a regular file (a FIFO)") {
		t.Errorf("the FIFO was not named:\n%s", p.Output())
	}
	if err := os.Symlink("/dev/zero", filepath.Join(cd, "zero.toml")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, p, "the /dev/zero link named", func() bool {
		return strings.Contains(p.Output(), filepath.Join(cd, "zero.toml")+": cannot read: not a regular file (a character device)")
	})
	writeTree(t, dir, map[string]string{"data.yaml": "app: {a: '2'}\n"})
	waitFile(t, filepath.Join(dir, "out", "a"), "a=2", 10*time.Second)
	if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}
}

// spare_file end to end, as root and as an unprivileged user: herald render keeps dest's
// previous version as .a.herald-spare and swaps it back in at the next change (dest's
// inode alternates between two), a shell reading the old version meanwhile keeps it,
// and dropping the key removes the spare at the next run.
func TestRenderSpareFile(t *testing.T) {
	t.Parallel()
	for _, nobody := range []bool{false, true} {
		t.Run(fmt.Sprintf("nobody=%v", nobody), func(t *testing.T) {
			t.Parallel()
			toml := "[template]\nsrc = \"a.tmpl\"\ndest = \"out/a\"\nspare_file = true\n"
			dir, backend := fileTree(t, map[string]string{
				"data.yaml":        "app: {a: '1'}\n",
				"conf.d/a.toml":    toml,
				"templates/a.tmpl": `a={{getv "/app/a"}}` + "\n",
			})
			out, data := filepath.Join(dir, "out"), filepath.Join(dir, "data.yaml")
			if err := os.Mkdir(out, 0o777); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(out, 0o777); err != nil { // nobody writes here too
				t.Fatal(err)
			}
			dest, spare := filepath.Join(out, "a"), filepath.Join(out, ".a.herald-spare")
			ino := func(p string) uint64 {
				var st syscall.Stat_t
				if err := syscall.Stat(p, &st); err != nil {
					t.Fatal(err)
				}
				return st.Ino
			}
			render := func(value string) {
				t.Helper()
				if err := os.WriteFile(data, []byte("app: {a: '"+value+"'}\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				if code, o := runHerald(t, nobody, "render", "--confdir", dir, "--backend", backend); code != 0 {
					t.Fatalf("render %s: exit %d\n%s", value, code, o)
				}
				if b, _ := os.ReadFile(dest); string(b) != "a="+value+"\n" {
					t.Fatalf("dest = %q after render %s", b, value)
				}
			}
			render("1")
			first := ino(dest)
			render("2")
			if b, _ := os.ReadFile(spare); string(b) != "a=1\n" || ino(spare) != first {
				t.Fatalf("spare holds %q (inode %d), want version 1 in dest's previous inode %d", b, ino(spare), first)
			}
			render("3")
			if ino(dest) != first {
				t.Fatalf("dest is inode %d, want the spare's %d rewritten", ino(dest), first)
			}
			// A reader holding the spare (version 2) open: the next change leaves it be.
			reader := exec.Command("/bin/sh", "-c", "exec 3<\"$0\"; read -r line; cat <&3", spare)
			stdin, _ := reader.StdinPipe()
			var got bytes.Buffer
			reader.Stdout = &got
			if err := reader.Start(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, nil, "the reader to open the spare", func() bool {
				fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", reader.Process.Pid))
				for _, fd := range fds {
					if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", reader.Process.Pid, fd.Name())); l == spare {
						return true
					}
				}
				return false
			})
			render("4")
			stdin.Write([]byte("go\n"))
			stdin.Close()
			if err := reader.Wait(); err != nil || got.String() != "a=2\n" {
				t.Fatalf("the reader read %q (%v), want version 2 untouched", got.String(), err)
			}
			render("5")
			// Without the key, the next run removes the spare.
			if err := os.WriteFile(filepath.Join(dir, "conf.d/a.toml"), []byte(strings.Replace(toml, "spare_file = true\n", "", 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			render("6")
			if es, _ := os.ReadDir(out); len(es) != 1 {
				t.Fatalf("out/ holds %d entries, want dest alone", len(es))
			}
		})
	}
}

// --spare-files (or spare_files in herald.toml) gives every resource a spare, except one
// that says spare_file = false; run without it, herald removes the spares it made.
func TestRenderSpareFilesOption(t *testing.T) {
	t.Parallel()
	dir, backend := fileTree(t, map[string]string{
		"data.yaml":         "app: {a: '1'}\n",
		"conf.d/a.toml":     "[template]\nsrc = \"a.tmpl\"\ndest = \"out/a\"\nmake_dirs = true\n",
		"conf.d/b.toml":     "[template]\nsrc = \"a.tmpl\"\ndest = \"out/b\"\nmake_dirs = true\nspare_file = false\n",
		"templates/a.tmpl":  `a={{getv "/app/a"}}` + "\n",
		"herald-spare.toml": "spare_files = true\n",
	})
	out, data := filepath.Join(dir, "out"), filepath.Join(dir, "data.yaml")
	render := func(value string, args ...string) []string {
		t.Helper()
		if err := os.WriteFile(data, []byte("app: {a: '"+value+"'}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"render", "--confdir", dir, "--backend", backend}, args...)
		if code, o := runHerald(t, false, args...); code != 0 {
			t.Fatalf("herald %v: exit %d\n%s", args, code, o)
		}
		var names []string
		es, _ := os.ReadDir(out)
		for _, e := range es {
			names = append(names, e.Name())
		}
		return names
	}
	render("1", "--spare-files")
	if got := strings.Join(render("2", "--spare-files"), " "); got != ".a.herald-spare a b" {
		t.Fatalf("with --spare-files out/ holds %q, want a's spare beside a and b", got)
	}
	if b, _ := os.ReadFile(filepath.Join(out, ".a.herald-spare")); string(b) != "a=1\n" {
		t.Fatalf("a's spare holds %q, want the previous version", b)
	}
	if got := strings.Join(render("3"), " "); got != "a b" {
		t.Fatalf("without --spare-files out/ holds %q, want the spare removed", got)
	}
	render("4", "--config", filepath.Join(dir, "herald-spare.toml"))
	if got := strings.Join(render("5", "--config", filepath.Join(dir, "herald-spare.toml")), " "); got != ".a.herald-spare a b" {
		t.Fatalf("with spare_files in herald.toml out/ holds %q, want a's spare beside a and b", got)
	}
}
