package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/heraldhq/herald/integration/harness"
)

// herald exec against real etcd and Consul, with integration/testdata/execchild as the
// child: it writes its pid and environment to STATE/env.json when it starts and one line
// per signal it receives to STATE/signals.

func execChildBinary(t testing.TB) string { return goBinary(t, "integration/testdata/execchild") }

// execChildState is the state directory of the children of one test.
type execChildState struct{ dir string }

type execChildStart struct {
	PID   int               `json:"pid"`
	Start int64             `json:"start"`
	Env   map[string]string `json:"env"`
}

func newExecChildState(t *testing.T) execChildState { return execChildState{t.TempDir()} }

// args is the child's command line, after "--".
func (s execChildState) args(t testing.TB, extra ...string) []string {
	return append([]string{execChildBinary(t), "-state", s.dir}, extra...)
}

func (s execChildState) read() (execChildStart, bool) {
	var st execChildStart
	b, err := os.ReadFile(filepath.Join(s.dir, "env.json"))
	if err != nil || json.Unmarshal(b, &st) != nil {
		return st, false
	}
	return st, true
}

// next waits for a child other than notPID to have started and returns what it saw.
func (s execChildState) next(t testing.TB, notPID int, within time.Duration) execChildStart {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if st, ok := s.read(); ok && st.PID != notPID {
			return st
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("no child (other than pid %d) started within %v", notPID, within)
	return execChildStart{}
}

func (s execChildState) signals() []string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "signals"))
	return strings.Fields(strings.ReplaceAll(string(b), "\n", " "))
}

func execAlive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func execEtcdURL(e *harness.Etcd) string {
	return "etcd://" + strings.TrimPrefix(e.Endpoints[0], "http://")
}

// execArgs is `herald exec GLOBAL... EXEC... -- CHILD...`.
func execArgs(global, execFlags, child []string) []string {
	args := append([]string{"exec"}, global...)
	args = append(args, execFlags...)
	return append(append(args, "--"), child...)
}

// execWaitWarn waits until herald has logged more than n warnings: the positive event
// that it noticed a registry fault (and is still handling it).
func execWaitWarn(t *testing.T, p *heraldProc, n int, within time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(within); strings.Count(p.Output(), "level=WARN") <= n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("herald logged no warning within %v:\n%s", within, tail(p.Output(), 20))
		}
	}
}

func execWaitExit(t *testing.T, p *heraldProc, within time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("herald exec did not exit within %v", within)
	}
	return p.cmd.ProcessState.ExitCode()
}

func TestExecEnvNamingEtcd(t *testing.T) {
	e := harness.StartEtcd(t)
	cli := e.Client(t)
	ctx := context.Background()
	for k, v := range map[string]string{
		"/myapp/config":              "the prefix's own key has no name",
		"/myapp/config/db/host":      "db.base",
		"/myapp/config/db/port":      "5432",
		"/myapp/config/log-level":    "debug",
		"/myapp/config/9lives":       "cat",
		"/myapp/config/a.b/c d":      "spaced",
		"/myapp/config/api_token":    "s3cr3t-tok3n-value",
		"/myapp/configuration/other": "not under the prefix (path boundary)",
		"/myapp/override/db/host":    "db.override",
	} {
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	st := newExecChildState(t)
	p := startHerald(t, []string{"INHERITED_VAR=kept", "APP_DB_PORT=inherited-loses"},
		execArgs([]string{"--backend", execEtcdURL(e), "--log-level", "debug"},
			[]string{"--prefix", "/myapp/config", "--prefix", "/myapp/override", "--upcase", "--env-prefix", "APP_"},
			st.args(t))...)
	child := st.next(t, 0, 15*time.Second)
	want := map[string]string{
		"APP_DB_HOST":   "db.override", // the later prefix wins
		"APP_DB_PORT":   "5432",        // the registry beats an inherited variable
		"APP_LOG_LEVEL": "debug",
		"APP_9LIVES":    "cat",
		"APP_A_B_C_D":   "spaced",
		"APP_API_TOKEN": "s3cr3t-tok3n-value",
		"INHERITED_VAR": "kept", // not --pristine: herald's environment is passed on
	}
	for k, v := range want {
		if child.Env[k] != v {
			t.Errorf("%s = %q, want %q", k, child.Env[k], v)
		}
	}
	var fromRegistry []string
	for k := range child.Env {
		if strings.HasPrefix(k, "APP_") {
			fromRegistry = append(fromRegistry, k)
		}
	}
	slices.Sort(fromRegistry)
	if wantNames := []string{"APP_9LIVES", "APP_API_TOKEN", "APP_A_B_C_D", "APP_DB_HOST", "APP_DB_PORT", "APP_LOG_LEVEL"}; !slices.Equal(fromRegistry, wantNames) {
		t.Errorf("registry variables %v, want %v", fromRegistry, wantNames)
	}
	if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM (child exits 0 on TERM)", code)
	}
	out := p.Output()
	if strings.Contains(out, "s3cr3t-tok3n-value") || strings.Contains(out, "db.override") {
		t.Errorf("herald logged a value:\n%s", out)
	}
	if !strings.Contains(out, "APP_API_TOKEN") || !strings.Contains(out, "/myapp/override/db/host") {
		t.Errorf("the debug log should name variables and the colliding key:\n%s", out)
	}
}

func TestExecPristineAndRestartConsul(t *testing.T) {
	c := harness.StartConsul(t)
	kv := c.Client(t).KV()
	put := func(k, v string) {
		t.Helper()
		if _, err := kv.Put(&api.KVPair{Key: k, Value: []byte(v)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	put("app/db/host", "db1")
	put("app/feature.flags/beta", "on")
	st := newExecChildState(t)
	p := startHerald(t, []string{"INHERITED_VAR=dropped"},
		execArgs([]string{"--backend", "consul://" + c.Addr},
			[]string{"--prefix", "/app", "--pristine"},
			st.args(t))...)
	first := st.next(t, 0, 15*time.Second)
	if want := map[string]string{"db_host": "db1", "feature_flags_beta": "on"}; !mapsEqual(first.Env, want) {
		t.Fatalf("pristine child env = %v, want exactly %v", first.Env, want)
	}
	put("app/db/host", "db2")
	second := st.next(t, first.PID, 15*time.Second)
	if second.Env["db_host"] != "db2" {
		t.Fatalf("restarted child sees db_host=%q", second.Env["db_host"])
	}
	if execAlive(first.PID) {
		t.Fatalf("old child %d still running", first.PID)
	}
	if sig := st.signals(); !slices.Contains(sig, strconv.Itoa(first.PID)) || !slices.Contains(sig, "TERM") {
		t.Errorf("old child was not sent SIGTERM: %v", sig)
	}
	if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestExecRestartOnChangeEtcd also measures the time from a put to the restarted child
// seeing the new value.
func TestExecRestartOnChangeEtcd(t *testing.T) {
	e := harness.StartEtcd(t)
	cli := e.Client(t)
	ctx := context.Background()
	if _, err := cli.Put(ctx, "/svc/version", "v0"); err != nil {
		t.Fatal(err)
	}
	st := newExecChildState(t)
	startHerald(t, nil, execArgs([]string{"--backend", execEtcdURL(e)}, []string{"--prefix", "/svc"}, st.args(t))...)
	cur := st.next(t, 0, 15*time.Second)
	var lat []time.Duration
	for i := 1; i <= 7; i++ {
		v := fmt.Sprintf("v%d", i)
		put := time.Now()
		if _, err := cli.Put(ctx, "/svc/version", v); err != nil {
			t.Fatal(err)
		}
		next := st.next(t, cur.PID, 15*time.Second)
		if next.Env["version"] != v {
			t.Fatalf("restarted child sees version=%q, want %q", next.Env["version"], v)
		}
		lat = append(lat, time.Unix(0, next.Start).Sub(put))
		cur = next
	}
	slices.Sort(lat)
	t.Logf("put -> restarted child sees the value (etcd, default --wait 0, kill on TERM): p50 %v, min %v, max %v over %d runs",
		lat[len(lat)/2].Round(time.Microsecond), lat[0].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond), len(lat))
}

// TestExecQuiescenceOneRestartPerBurst: a burst of puts inside --wait restarts the child
// once, with the last value.
func TestExecQuiescenceOneRestartPerBurst(t *testing.T) {
	e := harness.StartEtcd(t)
	cli := e.Client(t)
	ctx := context.Background()
	cli.Put(ctx, "/svc/n", "0")
	st := newExecChildState(t)
	startHerald(t, nil, execArgs([]string{"--backend", execEtcdURL(e), "--wait", "300ms:3s"}, []string{"--prefix", "/svc"}, st.args(t))...)
	first := st.next(t, 0, 15*time.Second)
	for i := 1; i <= 10; i++ {
		if _, err := cli.Put(ctx, "/svc/n", strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	second := st.next(t, first.PID, 15*time.Second)
	if second.Env["n"] != "10" {
		t.Fatalf("child after the burst sees n=%q, want 10", second.Env["n"])
	}
	// The later positive event: one more change restarts the child once more. Had the
	// burst caused a second restart, this child would not be the next after the
	// second, or there would be a third TERM.
	if _, err := cli.Put(ctx, "/svc/n", "11"); err != nil {
		t.Fatal(err)
	}
	third := st.next(t, second.PID, 15*time.Second)
	if third.Env["n"] != "11" {
		t.Fatalf("restarted again after the burst: the child after pid %d sees n=%q, want the later change's 11", second.PID, third.Env["n"])
	}
	want := []string{strconv.Itoa(first.PID), "TERM", strconv.Itoa(second.PID), "TERM"}
	if sig := st.signals(); !slices.Equal(sig, want) { // "PID TERM" per restart
		t.Fatalf("signals %v: want %v, one TERM for the burst's restart and one for the later change's", sig, want)
	}
}

func TestExecReloadSignalEtcd(t *testing.T) {
	e := harness.StartEtcd(t)
	cli := e.Client(t)
	ctx := context.Background()
	cli.Put(ctx, "/web/color", "blue")
	dir := t.TempDir()
	tmpl := filepath.Join(dir, "app.conf.tmpl")
	out := filepath.Join(dir, "app.conf")
	os.WriteFile(tmpl, []byte(`color = {{getv "/web/color"}}`+"\n"), 0o644)
	st := newExecChildState(t)
	startHerald(t, nil, execArgs([]string{"--backend", execEtcdURL(e)},
		[]string{"--prefix", "/web", "--template", tmpl + ":" + out, "--reload-signal", "SIGHUP"},
		st.args(t, "-reload-file", out))...)
	first := st.next(t, 0, 15*time.Second)
	// The file was rendered before the child started: it read it at start.
	reloaded := filepath.Join(st.dir, "reloaded")
	if b, _ := os.ReadFile(reloaded); string(b) != "color = blue\n" {
		t.Fatalf("child read %q at start", b)
	}
	cli.Put(ctx, "/web/color", "red")
	// On HUP the child re-reads the file: it must already hold the new value.
	waitFile(t, reloaded, "color = red\n", 10*time.Second)
	if now, _ := st.read(); now.PID != first.PID || !execAlive(first.PID) {
		t.Fatalf("child was restarted in --reload-signal mode (pid %d -> %d)", first.PID, now.PID)
	}
	if sig := st.signals(); !slices.Equal(sig, []string{strconv.Itoa(first.PID), "HUP"}) {
		t.Fatalf("signals = %v, want one HUP", sig)
	}
}

func TestExecSignalForwardingAndExitStatus(t *testing.T) {
	e := harness.StartEtcd(t)
	e.Client(t).Put(context.Background(), "/app/x", "1")
	st := newExecChildState(t)
	p := startHerald(t, nil, execArgs([]string{"--backend", execEtcdURL(e)}, []string{"--prefix", "/app"},
		st.args(t, "-term", "exit:42"))...)
	child := st.next(t, 0, 15*time.Second)
	pid := strconv.Itoa(child.PID)
	var want []string
	for _, s := range []struct {
		sig  syscall.Signal
		name string // "" when not forwarded
	}{{syscall.SIGUSR1, "USR1"}, {syscall.SIGURG, ""}, {syscall.SIGUSR2, "USR2"}, {syscall.SIGWINCH, ""}, {syscall.SIGHUP, "HUP"}} {
		p.cmd.Process.Signal(s.sig)
		if s.name == "" {
			continue // SIGURG is Go runtime noise, SIGWINCH terminal chatter: neither is forwarded
		}
		want = append(want, pid, s.name)
		// One at a time: pending signals are delivered by number, not by arrival.
		deadline := time.Now().Add(5 * time.Second)
		for len(st.signals()) < len(want) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if got := st.signals(); !slices.Equal(got, want) {
		t.Fatalf("child received %v, want %v", got, want)
	}
	// herald exits with the child's status: 42 is what the child chose on TERM.
	if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 42 {
		t.Fatalf("herald exit %d, want the child's 42", code)
	}
	// The TERM, forwarded last, is the later positive event: nothing else (no URG, no
	// WINCH, no duplicate) came before it.
	if got, want := st.signals(), append(want, pid, "TERM"); !slices.Equal(got, want) {
		t.Fatalf("child received %v, want %v (TERM forwarded last, nothing else)", got, want)
	}
}

func TestExecExitStatusPropagation(t *testing.T) {
	e := harness.StartEtcd(t)
	e.Client(t).Put(context.Background(), "/app/x", "1")
	cases := []struct {
		name  string
		child []string
		send  syscall.Signal
		want  int
	}{
		{"exits 7 by itself", []string{"-exit-after", "300ms", "-exit-code", "7"}, 0, 7},
		{"exits 0 by itself", []string{"-exit-after", "300ms"}, 0, 0},
		{"killed by SIGKILL", []string{"-exit-after", "300ms", "-die-signal", "KILL"}, 0, 128 + 9},
		{"dies of the forwarded INT", []string{"-term", "die"}, syscall.SIGINT, 128 + 2},
		{"exits 5 on the forwarded QUIT", []string{"-term", "exit:5"}, syscall.SIGQUIT, 5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := newExecChildState(t)
			p := startHerald(t, nil, execArgs([]string{"--backend", execEtcdURL(e)}, []string{"--prefix", "/app"}, st.args(t, c.child...))...)
			st.next(t, 0, 15*time.Second)
			if c.send != 0 {
				p.cmd.Process.Signal(c.send)
			}
			if code := execWaitExit(t, p, 10*time.Second); code != c.want {
				t.Fatalf("herald exit %d, want %d", code, c.want)
			}
		})
	}
}

func TestExecKillTimeoutEscalation(t *testing.T) {
	e := harness.StartEtcd(t)
	cli := e.Client(t)
	ctx := context.Background()
	cli.Put(ctx, "/app/x", "1")
	st := newExecChildState(t)
	p := startHerald(t, nil, execArgs([]string{"--backend", execEtcdURL(e)},
		[]string{"--prefix", "/app", "--kill-signal", "SIGUSR1", "--kill-timeout", "1500ms"},
		st.args(t, "-term", "ignore"))...)
	first := st.next(t, 0, 15*time.Second)
	put := time.Now()
	cli.Put(ctx, "/app/x", "2")
	second := st.next(t, first.PID, 15*time.Second)
	took := time.Unix(0, second.Start).Sub(put)
	if took < 1500*time.Millisecond || took > 6*time.Second {
		t.Fatalf("new child started %v after the change; want just after --kill-timeout 1.5s", took)
	}
	if second.Env["x"] != "2" {
		t.Fatalf("new child sees x=%q", second.Env["x"])
	}
	if execAlive(first.PID) {
		t.Fatalf("child %d survived SIGKILL", first.PID)
	}
	// The child got --kill-signal (USR1) first, then SIGKILL, which it cannot record.
	if sig := st.signals(); !slices.Equal(sig, []string{strconv.Itoa(first.PID), "USR1"}) {
		t.Fatalf("signals %v, want the kill signal USR1 once", sig)
	}
	if !strings.Contains(p.Output(), "SIGKILL") {
		t.Errorf("the escalation is not logged:\n%s", p.Output())
	}
	t.Logf("kill-timeout 1.5s: new child %v after the put", took.Round(time.Millisecond))
}

func TestExecRegistryDownAtStart(t *testing.T) {
	t.Run("unreachable until --timeout", func(t *testing.T) {
		port := harness.FreePort(t) // nothing listens there
		st := newExecChildState(t)
		begin := time.Now()
		p := startHerald(t, nil, execArgs([]string{"--backend", fmt.Sprintf("etcd://127.0.0.1:%d", port), "--timeout", "2s"},
			[]string{"--prefix", "/app"}, st.args(t))...)
		code := execWaitExit(t, p, 20*time.Second)
		if d := time.Since(begin); d < 2*time.Second || d > 10*time.Second {
			t.Errorf("gave up after %v with --timeout 2s", d)
		}
		if code != 1 {
			t.Fatalf("exit %d, want 1", code)
		}
		out := p.Output()
		if !strings.Contains(out, fmt.Sprintf("127.0.0.1:%d", port)) || !strings.Contains(out, "--timeout") {
			t.Errorf("the error does not name the endpoint and --timeout:\n%s", out)
		}
		if _, ok := st.read(); ok {
			t.Fatal("the child started without its data")
		}
	})
	t.Run("comes up within --timeout", func(t *testing.T) {
		e := harness.StartEtcd(t)
		e.Client(t).Put(context.Background(), "/app/x", "late")
		e.Members[0].Stop(t)
		st := newExecChildState(t)
		p := startHerald(t, nil, execArgs([]string{"--backend", execEtcdURL(e), "--timeout", "30s"}, []string{"--prefix", "/app"}, st.args(t))...)
		execWaitWarn(t, p, 0, 20*time.Second) // it tried etcd and is waiting
		if _, ok := st.read(); ok {
			t.Fatal("the child started while etcd was down")
		}
		e.Members[0].Restart(t)
		if child := st.next(t, 0, 30*time.Second); child.Env["x"] != "late" {
			t.Fatalf("child sees x=%q", child.Env["x"])
		}
	})
	t.Run("SIGTERM while waiting", func(t *testing.T) {
		port := harness.FreePort(t)
		st := newExecChildState(t)
		p := startHerald(t, nil, execArgs([]string{"--backend", fmt.Sprintf("etcd://127.0.0.1:%d", port), "--timeout", "60s"},
			[]string{"--prefix", "/app"}, st.args(t))...)
		execWaitWarn(t, p, 0, 20*time.Second) // waiting for the registry
		if code := p.stop(t, syscall.SIGTERM, 5*time.Second); code != 128+15 {
			t.Fatalf("exit %d, want 143", code)
		}
	})
}

func TestExecRegistryDownWhileRunning(t *testing.T) {
	e := harness.StartEtcd(t)
	cli := e.Client(t)
	ctx := context.Background()
	cli.Put(ctx, "/app/x", "1")
	st := newExecChildState(t)
	p := startHerald(t, nil, execArgs([]string{"--backend", execEtcdURL(e)}, []string{"--prefix", "/app"}, st.args(t))...)
	first := st.next(t, 0, 15*time.Second)

	warns := strings.Count(p.Output(), "level=WARN")
	e.Members[0].Stop(t)
	execWaitWarn(t, p, warns, 30*time.Second) // herald noticed etcd is down
	select {
	case <-p.done:
		t.Fatalf("herald exited while etcd was down:\n%s", p.Output())
	default:
	}
	if now, _ := st.read(); now.PID != first.PID || !execAlive(first.PID) {
		t.Fatalf("the child was restarted or stopped while etcd was down (pid %d -> %d)", first.PID, now.PID)
	}
	if sig := st.signals(); len(sig) != 0 {
		t.Fatalf("the child was signalled while etcd was down: %v", sig)
	}

	e.Members[0].Restart(t)
	cli = e.Client(t)
	if _, err := cli.Put(ctx, "/app/x", "2"); err != nil {
		t.Fatal(err)
	}
	// The later positive event: the change after the outage restarts the child once.
	// A restart during the outage would show as a child with the old value here, or
	// as a second TERM.
	if second := st.next(t, first.PID, 30*time.Second); second.Env["x"] != "2" {
		t.Fatalf("after etcd came back the child sees x=%q", second.Env["x"])
	}
	if sig, want := st.signals(), []string{strconv.Itoa(first.PID), "TERM"}; !slices.Equal(sig, want) {
		t.Fatalf("signals %v, want %v: one restart, for the change after the outage", sig, want)
	}
}

// TestExecReapsZombiesAsPID1 runs herald as PID 1 of a new PID namespace, as in a
// container, with a child that leaves an orphan behind: the orphan is re-parented to
// herald, and once it ends, herald must reap it. The child looks for zombies in the
// namespace's /proc and exits 3 if it finds one.
func TestExecReapsZombiesAsPID1(t *testing.T) {
	e := harness.StartEtcd(t)
	e.Client(t).Put(context.Background(), "/app/x", "1")
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatalf("unshare (util-linux) is needed to run herald as PID 1: %v", err)
	}
	script := `(sleep 0.1 &); sleep 0.8
for f in /proc/[0-9]*/stat; do
  read -r l < "$f" 2>/dev/null || continue
  case "$l" in *") Z "*) echo "zombie: $l"; exit 3;; esac
done
exit 0`
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"--pid", "--fork", "--mount-proc", "--kill-child", heraldBinary(t)},
		execArgs([]string{"--backend", execEtcdURL(e), "--log-level", "debug"}, []string{"--prefix", "/app"}, []string{"/bin/sh", "-c", script})...)
	cmd := exec.CommandContext(ctx, unshare, args...)
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit %d (%v), want 0: a zombie was left or herald failed:\n%s", code, err, out)
	}
	if !strings.Contains(string(out), "reap=true") || !strings.Contains(string(out), "reaped an orphan") {
		t.Fatalf("herald did not run as PID 1 or reaped nothing:\n%s", out)
	}
}

// TestExecCommandLine: `herald exec --prefix P -- CMD` as the issue spells it; bad flags
// are usage errors (status 2) that start nothing.
func TestExecCommandLine(t *testing.T) {
	e := harness.StartEtcd(t)
	e.Client(t).Put(context.Background(), "/app/x", "1")
	st := newExecChildState(t)
	p := startHerald(t, nil, "exec", "--backend", execEtcdURL(e), "--prefix", "/app", "--", execChildBinary(t), "-state", st.dir)
	if child := st.next(t, 0, 15*time.Second); child.Env["x"] != "1" {
		t.Fatalf("child sees x=%q with the global --prefix", child.Env["x"])
	}
	p.stop(t, syscall.SIGTERM, 10*time.Second)

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--", "/bin/true"}, "give --prefix"},
		{[]string{"--prefix", "/a", "--env-prefix", "1X", "--", "/bin/true"}, "--env-prefix"},
		{[]string{"--prefix", "/a", "--kill-signal", "SIGNOPE", "--", "/bin/true"}, "--kill-signal"},
		{[]string{"--prefix", "/a", "--template", "nocolon", "--", "/bin/true"}, "IN:OUT"},
		{[]string{"--prefix", "/a", "--"}, "no command"},
		{[]string{"--prefix", "/a", "--no-such-flag", "--", "/bin/true"}, "no-such-flag"},
	} {
		args := append([]string{"exec", "--backend", execEtcdURL(e)}, c.args...)
		p := startHerald(t, nil, args...)
		if code := execWaitExit(t, p, 10*time.Second); code != 2 || !strings.Contains(p.Output(), c.want) {
			t.Errorf("herald %v: exit %d, want 2 with %q:\n%s", c.args, code, c.want, p.Output())
		}
	}
}
