package integration

// Issue 17 (security part), driving the real herald binary: credentials are not handed
// on to commands, children, templates or env://; /healthz shows no values or command
// output; --listen's keep-alive connections time out; symlinked dests and backups as an
// unprivileged user would attack them.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/integration/harness"
)

// hardSecrets are herald's credential variables, each with a value found nowhere else.
func hardSecrets(t *testing.T) (env []string, secrets []string) {
	t.Helper()
	certs := harness.GenCerts(t)
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte("Tok-File-Secret-4\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env = []string{
		"HERALD_PASSWORD=Pw-Secret-1", "HERALD_CONSUL_TOKEN=Tok-Secret-2", "CONSUL_HTTP_TOKEN=Tok-Secret-3",
		"HERALD_TLS_CERT=" + certs.ClientCert, "HERALD_TLS_KEY=" + certs.ClientKey, "HERALD_TLS_CA=" + certs.CAFile,
		"CONSUL_HTTP_TOKEN_FILE=" + tokFile, "HERALD_USERNAME=u",
	}
	// CONSUL_HTTP_TOKEN_FILE and HERALD_CONSUL_TOKEN together are an error; the file
	// variable is checked on its own below.
	return env, []string{"Pw-Secret-1", "Tok-Secret-2", "Tok-Secret-3", certs.ClientKey, tokFile}
}

// What check and reload commands, a template's getenv, env:// and exec's child see of
// herald's environment: none of its credential variables, unless --keep-credential-env.
func TestHardeningCredentialsNotHandedOn(t *testing.T) {
	t.Parallel()
	env, secrets := hardSecrets(t)
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep=%v", keep), func(t *testing.T) {
			var extra []string
			if keep {
				extra = []string{"--keep-credential-env"}
			}
			dir := t.TempDir()
			out := filepath.Join(dir, "out")
			writeTree(t, dir, map[string]string{
				"data.yaml": "app:\n  name: one\n",
				"templates/a.tmpl": `name={{getv "/app/name"}}
pw=[{{getenv "HERALD_PASSWORD"}}] tok=[{{getenv "HERALD_CONSUL_TOKEN"}}] ctok=[{{getenv "CONSUL_HTTP_TOKEN"}}] key=[{{getenv "HERALD_TLS_KEY"}}] file=[{{getenv "CONSUL_HTTP_TOKEN_FILE"}}]
`,
				"templates/e.tmpl": `pw=[{{getv "/herald/password" ""}}] tok=[{{getv "/consul/http/token" ""}}] key=[{{getv "/herald/tls/key" ""}}]
`,
				"conf.d/a.toml": fmt.Sprintf("[template]\nsrc = \"a.tmpl\"\ndest = %q\nmake_dirs = true\ncheck_cmd = \"env > {{.dest}}.check\"\nreload_cmd = \"env > {{.dest}}.reload\"\n", filepath.Join(out, "a")),
			})
			// A file backend: render, template, check and reload.
			all := map[string]string{}
			code, log := secRun(t, env, append([]string{"render", "--confdir", dir, "--backend", "file://" + filepath.Join(dir, "data.yaml")}, extra...)...)
			if code != 0 {
				t.Fatalf("render: exit %d\n%s", code, log)
			}
			all["render log"] = log
			for _, f := range []string{"a", "a.check", "a.reload"} {
				b, err := os.ReadFile(filepath.Join(out, f))
				if err != nil {
					t.Fatal(err)
				}
				all[f] = string(b)
			}
			if !strings.Contains(all["a.check"], "PATH=") {
				t.Fatalf("check_cmd's environment lacks PATH:\n%s", all["a.check"])
			}
			// env://: keys are variables.
			writeTree(t, dir, map[string]string{"conf.d/a.toml": fmt.Sprintf("[template]\nsrc = \"e.tmpl\"\ndest = %q\n", filepath.Join(out, "e"))})
			if code, log := secRun(t, env, append([]string{"render", "--confdir", dir, "--backend", "env://"}, extra...)...); code != 0 {
				t.Fatalf("render env://: exit %d\n%s", code, log)
			}
			b, _ := os.ReadFile(filepath.Join(out, "e"))
			all["env:// render"] = string(b)
			// herald exec's child.
			childEnv := filepath.Join(out, "child")
			code, log = secRun(t, env, append(append([]string{"exec", "--backend", "file://" + filepath.Join(dir, "data.yaml"), "--prefix", "/app"}, extra...),
				"--", "/bin/sh", "-c", "env > "+childEnv)...)
			if code != 0 {
				t.Fatalf("exec: exit %d\n%s", code, log)
			}
			b, _ = os.ReadFile(childEnv)
			all["exec's child"] = string(b)
			if !strings.Contains(all["exec's child"], "name=one") {
				t.Fatalf("exec's child lacks the registry's variable:\n%s", b)
			}
			if !keep {
				secNoLeak(t, secrets, all)
				return
			}
			// Opted in: every one of them is there (the test can see a leak).
			for where, s := range map[string]string{"a": "pw=[Pw-Secret-1]", "a.check": "CONSUL_HTTP_TOKEN=Tok-Secret-3", "a.reload": "HERALD_TLS_KEY=", "env:// render": "pw=[Pw-Secret-1] tok=[Tok-Secret-3]", "exec's child": "HERALD_CONSUL_TOKEN=Tok-Secret-2"} {
				if !strings.Contains(all[where], s) {
					t.Errorf("--keep-credential-env: %s lacks %q:\n%s", where, s, all[where])
				}
			}
		})
	}
}

// /healthz names a failed resource's cause class, key or template position, never a
// rendered value or a check command's output; the log has the details. An idle
// keep-alive connection to --listen is closed by herald.
func TestHardeningHealthzShowsNoValues(t *testing.T) {
	t.Parallel()
	const secret = "Rendered-Secret-9b2"
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	res := func(tmpl, extra string) string {
		return fmt.Sprintf("[template]\nsrc = %q\ndest = %q\nmake_dirs = true\n%s", tmpl, filepath.Join(out, tmpl), extra)
	}
	writeTree(t, dir, map[string]string{
		"data.yaml":       "app:\n  password: " + secret + "\n",
		"templates/check": `pw={{getv "/app/password"}}` + "\n",
		"templates/atoi":  "line one\n{{atoi (getv \"/app/password\")}}\n",
		"conf.d/a.toml":   res("check", "check_cmd = \"cat {{.src}}; exit 3\"\n"),
		"conf.d/b.toml":   res("atoi", ""),
		"templates/ok":    "fine\n",
		"conf.d/ok.toml":  res("ok", ""),
		"templates/nokey": `{{getv "/app/missing"}}`,
		"conf.d/key.toml": res("nokey", ""),
	})
	listen := freeAddr(t)
	p := startHerald(t, nil, "watch", "--confdir", dir, "--backend", "file://"+filepath.Join(dir, "data.yaml"), "--listen", listen)
	want := map[string]string{
		"a.toml":   `"last_error":"check_cmd failed: exit status 3"`,
		"b.toml":   `"last_error":"template error at atoi:2:`,
		"key.toml": `"last_error":"template: key does not exist: /app/missing"`,
	}
	var body string
	deadline := time.Now().Add(20 * time.Second)
	for {
		// Every failed resource has its error, the check's too (it runs last).
		if _, body = httpGet(t, "http://"+listen+"/healthz"); strings.Count(body, `"last_error"`) == len(want) && strings.Contains(body, "check_cmd") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz never showed %d failures:\n%s", len(want), body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	secNoLeak(t, []string{secret}, map[string]string{"/healthz": body})
	for res, w := range want {
		if !strings.Contains(body, w) {
			t.Errorf("/healthz lacks %s's summary %s:\n%s", res, w, body)
		}
	}
	// The log has what /healthz leaves out: the check's output.
	if !strings.Contains(p.Output(), "pw="+secret) {
		t.Errorf("the log lacks the check command's output:\n%s", p.Output())
	}

	// Keep-alive: after one request, a connection that stays quiet is closed.
	conn, err := net.Dial("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	start := time.Now()
	conn.SetReadDeadline(start.Add(30 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle keep-alive connection: %v after %v, want EOF (closed by herald)", err, time.Since(start).Round(time.Second))
	}
	t.Logf("idle keep-alive connection closed after %v", time.Since(start).Round(100*time.Millisecond))
}

// asNobody runs a shell command as the unprivileged user nobody (setpriv), as an
// attacker with write access to dest's directory would.
func asNobody(t *testing.T, script string) string {
	t.Helper()
	c := exec.Command("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/bin/sh", "-c", script)
	b, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("as nobody: %s: %v\n%s", script, err, b)
	}
	return string(b)
}

// An unprivileged user who can write dest's directory links dest to a root-only file
// and leaves a world-readable dest.bak: herald (root) refuses the symlinked dest and
// copies nothing; with follow_symlink the backup of the real file is a new file with
// that file's mode and owner; a link to a huge file costs no memory.
func TestHardeningSymlinkedDestAndBackup(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Fatal("needs root: herald runs as root here and the attacker as nobody (CI runs as root)")
	}
	dir := t.TempDir()
	// nobody must reach dir: t.TempDir's parent is 0700.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	shared := filepath.Join(dir, "shared") // nobody may write here
	if err := os.Mkdir(shared, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(shared, 0o777)
	secret := filepath.Join(dir, "root-only")
	if err := os.WriteFile(secret, []byte("Root-Only-Secret-51\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(shared, "app.cfg")
	asNobody(t, fmt.Sprintf("ln -s %s %s && touch %s.bak && chmod 644 %s.bak", secret, dest, dest, dest))
	writeTree(t, dir, map[string]string{
		"data.yaml":        "app:\n  name: one\n",
		"templates/a.tmpl": `name={{getv "/app/name"}}` + "\n",
		"conf.d/a.toml":    fmt.Sprintf("[template]\nsrc = \"a.tmpl\"\ndest = %q\nbackup = true\n", dest),
	})
	code, log := secRun(t, nil, "render", "--confdir", dir, "--backend", "file://"+filepath.Join(dir, "data.yaml"))
	if code == 0 || !strings.Contains(log, "a.toml:3: dest "+dest+" is a symlink") || !strings.Contains(log, "follow_symlink = true") {
		t.Errorf("render through a symlinked dest: exit %d, want 1 and the refusal naming a.toml:3 and the dest:\n%s", code, log)
	}
	if got := asNobody(t, "cat "+dest+".bak"); strings.Contains(got, "Root-Only-Secret") {
		t.Fatalf("nobody reads the root-only file through dest.bak: %q", got)
	}
	if b, _ := os.ReadFile(secret); string(b) != "Root-Only-Secret-51\n" {
		t.Fatalf("the link's target was changed: %q", b)
	}

	// follow_symlink = true: herald writes the real file (root's 0600 one here) and its
	// backup is root's and 0600 too, a new file (nobody's dest.bak was not reused).
	writeTree(t, dir, map[string]string{"conf.d/a.toml": fmt.Sprintf("[template]\nsrc = \"a.tmpl\"\ndest = %q\nbackup = true\nfollow_symlink = true\n", dest)})
	if code, log := secRun(t, nil, "render", "--confdir", dir, "--backend", "file://"+filepath.Join(dir, "data.yaml")); code != 0 {
		t.Fatalf("render with follow_symlink: exit %d\n%s", code, log)
	}
	if b, _ := os.ReadFile(secret); string(b) != "name=one\n" {
		t.Fatalf("follow_symlink: the real file holds %q", b)
	}
	fi, err := os.Stat(secret + ".bak")
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode() != 0o600 || st.Uid != 0 {
		t.Errorf("backup of the real file is %v owned by %d, want -rw------- root", fi.Mode(), st.Uid)
	}
	if got := asNobody(t, "cat "+secret+".bak 2>&1 || true"); strings.Contains(got, "Root-Only-Secret") {
		t.Fatalf("nobody reads the backup: %q", got)
	}

	// A link to a 4 GiB (sparse) file, followed, under a 3.5 GiB address-space limit:
	// no backup is attempted, the file is replaced, herald survives. (Reading the file
	// whole needs 4 GiB. A lower limit is not safe: Go 1.26's runtime, with its randomised
	// heap base, fails at start-up under 1.5 GiB in about 1 run of 20.)
	huge := filepath.Join(dir, "huge")
	if err := os.WriteFile(huge, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(huge, 4<<30); err != nil {
		t.Fatal(err)
	}
	os.Remove(dest)
	if err := os.Symlink(huge, dest); err != nil {
		t.Fatal(err)
	}
	c := exec.Command("/bin/sh", "-c", `ulimit -v 3500000 && exec "$0" "$@"`, heraldBinary(t),
		"render", "--confdir", dir, "--backend", "file://"+filepath.Join(dir, "data.yaml"))
	b, err := c.CombinedOutput()
	if err != nil || !strings.Contains(string(b), "no backup: dest is too large") {
		t.Fatalf("render of a link to a 4 GiB file under ulimit -v: %v\n%s", err, b)
	}
	if got, _ := os.ReadFile(huge); string(got) != "name=one\n" {
		t.Fatalf("the huge file was not replaced: %d bytes", len(got))
	}
}

// {{.dest}} with a space and a ';' reaches check_cmd and reload_cmd as one word and
// runs nothing, in a real render.
func TestHardeningCommandQuoting(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	injected := filepath.Join(dir, "INJECTED")
	dest := filepath.Join(dir, "out dir", "a b; touch "+injected)
	writeTree(t, dir, map[string]string{
		"data.yaml":        "app:\n  name: one\n",
		"templates/a.tmpl": `name={{getv "/app/name"}}` + "\n",
		"conf.d/a.toml": fmt.Sprintf("[template]\nsrc = \"a.tmpl\"\ndest = %q\nmake_dirs = true\ncheck_cmd = \"test -f {{.src}} && grep -q name=one {{.src}}\"\nreload_cmd = \"cp {{.dest}} %s\"\n",
			dest, filepath.Join(dir, "reloaded")),
	})
	if code, log := secRun(t, nil, "render", "--confdir", dir, "--backend", "file://"+filepath.Join(dir, "data.yaml")); code != 0 {
		t.Fatalf("render: exit %d\n%s", code, log)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "reloaded")); string(b) != "name=one\n" {
		t.Errorf("reload_cmd did not copy dest: %q", b)
	}
	if _, err := os.Stat(injected); err == nil {
		t.Error("a dest name ran a command")
	}
}

// uid = 4294967296 (which wrapped to root) is refused with file:line by check and
// render; nothing is written.
func TestHardeningIDOutOfRange(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dest := filepath.Join(dir, "out")
	writeTree(t, dir, map[string]string{
		"data.yaml":        "app:\n  name: one\n",
		"templates/a.tmpl": "x\n",
		"conf.d/a.toml":    fmt.Sprintf("[template]\nsrc = \"a.tmpl\"\ndest = %q\nuid = 4294967296\n", dest),
	})
	for _, cmd := range []string{"check", "render"} {
		code, log := secRun(t, nil, cmd, "--confdir", dir, "--backend", "file://"+filepath.Join(dir, "data.yaml"))
		if code == 0 || !strings.Contains(log, "a.toml:4: uid: 4294967296 is out of range") {
			t.Errorf("%s: exit %d, want a failure naming a.toml:4:\n%s", cmd, code, log)
		}
	}
	if _, err := os.Stat(dest); !os.IsNotExist(err) {
		t.Errorf("dest written: %v", err)
	}
}

// hardWaitOutput waits until p's output holds n matches of pattern.
func hardWaitOutput(t *testing.T, p *heraldProc, pattern string, n int) {
	t.Helper()
	re := regexp.MustCompile(pattern)
	deadline := time.Now().Add(20 * time.Second)
	for len(re.FindAllString(p.Output(), -1)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("herald did not log %s %d times within 20s:\n%s", pattern, n, tail(p.Output(), 40))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mode = "4755" is applied exactly and, once on disk, in sync: a render that produces
// the same content rewrites nothing and reloads nothing (it used to do both on every
// render, the setuid bit dropped each time).
func TestHardeningSetuidModeInSync(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dest := filepath.Join(dir, "out", "tool")
	reloads := filepath.Join(dir, "reloads")
	data := filepath.Join(dir, "data.yaml")
	writeTree(t, dir, map[string]string{
		"data.yaml":        "app:\n  x: a\n",
		"templates/a.tmpl": `{{if getv "/app/x"}}same{{end}}` + "\n",
		"conf.d/a.toml": fmt.Sprintf("[template]\nsrc = \"a.tmpl\"\ndest = %q\nmake_dirs = true\nmode = \"4755\"\nreload_cmd = \"echo r >> %s\"\n",
			dest, reloads),
	})
	p := startHerald(t, nil, "watch", "--confdir", dir, "--backend", "file://"+data, "--log-level", "debug")
	waitFile(t, dest, "same\n", 20*time.Second)
	for i, v := range []string{"b", "c", "d"} {
		if err := os.WriteFile(data, []byte("app:\n  x: "+v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		// The render of each change is logged; unchanged means no write, no reload.
		hardWaitOutput(t, p, `msg=rendered resource=a.toml .*changed=false`, i+1)
	}
	fi, err := os.Stat(dest)
	if err != nil || fi.Mode() != os.ModeSetuid|0o755 {
		t.Fatalf("dest: %v %v, want -rwsr-xr-x", fi, err)
	}
	if b, _ := os.ReadFile(reloads); string(b) != "r\n" {
		t.Errorf("reload_cmd ran %d times for one change of content, want 1", strings.Count(string(b), "r"))
	}
	if code := p.stop(t, syscall.SIGTERM, 15*time.Second); code != 0 {
		t.Errorf("herald watch exited %d", code)
	}
}

// herald itself unprivileged (nobody, via setpriv): special bits the kernel would drop
// (setgid on a file of a group herald is not in) are an error naming the bits, not a
// file rewritten on every render; a dest owned by root, in a directory herald may
// write, is rewritten with a warning that its owner could not be kept.
func TestHardeningUnprivilegedHerald(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Fatal("needs root to set the scene (CI runs as root)")
	}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "herald")
	b, err := os.ReadFile(heraldBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	sgid, plain := filepath.Join(dir, "sgid"), filepath.Join(dir, "plain")
	for d, mode := range map[string]os.FileMode{sgid: os.ModeSetgid | 0o775, plain: 0o755} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, 65534, 0); err != nil { // nobody's, group root
			t.Fatal(err)
		}
		if err := os.Chmod(d, mode); err != nil {
			t.Fatal(err)
		}
	}
	rootOwned := filepath.Join(plain, "b")
	if err := os.WriteFile(rootOwned, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeTree(t, dir, map[string]string{
		"data.yaml":        "app:\n  name: one\n",
		"templates/a.tmpl": `name={{getv "/app/name"}}` + "\n",
		"conf.d/a.toml":    fmt.Sprintf("[template]\nsrc = \"a.tmpl\"\ndest = %q\nmode = \"2755\"\n", filepath.Join(sgid, "a")),
		"conf.d/b.toml":    fmt.Sprintf("[template]\nsrc = \"a.tmpl\"\ndest = %q\n", rootOwned),
	})
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && p != bin && p != rootOwned {
			os.Chmod(p, 0o644)
		}
		return nil
	})
	for _, d := range []string{"conf.d", "templates"} {
		os.Chmod(filepath.Join(dir, d), 0o755)
	}
	c := exec.Command("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", bin,
		"render", "--confdir", dir, "--backend", "file://"+filepath.Join(dir, "data.yaml"))
	out, err := c.CombinedOutput()
	log := string(out)
	if err == nil || !strings.Contains(log, "chmod 2755: the file got 0755") {
		t.Errorf("setgid the kernel drops: %v, want exit 1 naming the bits:\n%s", err, log)
	}
	if _, err := os.Stat(filepath.Join(sgid, "a")); !os.IsNotExist(err) {
		t.Errorf("a dest without its setgid bit was written: %v", err)
	}
	if got, _ := os.ReadFile(rootOwned); string(got) != "name=one\n" {
		t.Errorf("root's dest in nobody's directory: %q, want it rewritten", got)
	}
	if !strings.Contains(log, "cannot keep dest's owner") {
		t.Errorf("no warning that root's ownership could not be kept:\n%s", log)
	}
}
