package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/integration/harness"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// burstReloadSh is a reload command that records each run as "start NAME NS CONTENT" and
// "end NAME NS" lines (appended with O_APPEND, one write each), and detects a second run
// of the same command while one is running by a lock file it creates exclusively.
const burstReloadSh = `#!/bin/sh
# $1: the command's name, $2: a file it rendered (its content is logged)
log="$(dirname "$0")/reloads.log"
lock="$(dirname "$0")/$1.lock"
if (set -C; : > "$lock") 2>/dev/null; then mine=1; else mine=0; echo "overlap $1 $(date +%s%N)" >> "$log"; fi
echo "start $1 $(date +%s%N) $(cat "$2")" >> "$log"
sleep 0.2
echo "end $1 $(date +%s%N)" >> "$log"
if [ $mine = 1 ]; then rm -f "$lock"; fi
`

// burstRun is one run of a reload command as its log recorded it.
type burstRun struct {
	start, end int64
	content    string
}

// burstRuns parses the reload log: the finished runs per command name, and every
// problem (an overlap, a start before the previous end, an unfinished run).
func burstRuns(t *testing.T, log string) (map[string][]burstRun, []string) {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	runs := map[string][]burstRun{}
	open := map[string]*burstRun{}
	var problems []string
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		f := strings.SplitN(l, " ", 4)
		if len(f) < 3 {
			continue
		}
		ns, _ := strconv.ParseInt(f[2], 10, 64)
		name := f[1]
		switch f[0] {
		case "overlap":
			problems = append(problems, "a second run of "+name+" started while one was running (lock file held)")
		case "start":
			if open[name] != nil {
				problems = append(problems, "a run of "+name+" started before the previous one ended")
			}
			if rs := runs[name]; len(rs) > 0 && ns < rs[len(rs)-1].end {
				problems = append(problems, "a run of "+name+" started before the previous one's end")
			}
			r := &burstRun{start: ns}
			if len(f) == 4 {
				r.content = f[3]
			}
			open[name] = r
		case "end":
			if r := open[name]; r != nil {
				r.end = ns
				runs[name] = append(runs[name], *r)
				open[name] = nil
			}
		}
	}
	return runs, problems
}

// TestWatchSharedReloadOncePerBurst: in `herald watch`, each distinct reload command
// runs exactly once per burst, even when several resources share it, and never two
// runs of one command at once. r1, r2 and r3 share one reload command, r4 has its own;
// every burst changes all four, three times each, within the quiescence window (--wait
// 1s:10s). That the burst is over (no late extra run pending) is proven by a later
// positive event: a sentinel key every template reads is changed afterwards, and each
// command's run for it is seen; the runs between are counted.
//
// "transaction" writes each round of the burst in one etcd transaction; "key-by-key"
// writes the 12 changes one at a time, 25 ms apart (300 ms in all, as a deploy script
// would), all well inside the 1 s quiet window. Each resource's quiescence ends at its
// own last change, so r1 renders alone first: the burst must not count as over until r2
// and r3, still quiescing, have rendered too (before that fix: 2 runs of the shared
// command per key-by-key burst).
func TestWatchSharedReloadOncePerBurst(t *testing.T) {
	res := []string{"r1", "r2", "r3", "r4"}
	t.Run("transaction", func(t *testing.T) {
		burstReloadTest(t, func(cli *clientv3.Client, n int) error {
			for i := range 3 {
				var ops []clientv3.Op
				for _, r := range res {
					ops = append(ops, clientv3.OpPut("/burst/"+r, fmt.Sprintf("%d.%d", n, i)))
				}
				if _, err := cli.Txn(context.Background()).Then(ops...).Commit(); err != nil {
					return err
				}
			}
			return nil
		})
	})
	t.Run("key-by-key", func(t *testing.T) {
		burstReloadTest(t, func(cli *clientv3.Client, n int) error {
			for i := range 3 {
				for _, r := range res {
					if _, err := cli.Put(context.Background(), "/burst/"+r, fmt.Sprintf("%d.%d", n, i)); err != nil {
						return err
					}
					time.Sleep(25 * time.Millisecond) // the writer's pace, not a wait for herald
				}
			}
			return nil
		})
	})
}

// burstReloadTest runs the rounds of TestWatchSharedReloadOncePerBurst; burst writes
// round n's changes to r1..r4 (last value "n.2").
func burstReloadTest(t *testing.T, burst func(cli *clientv3.Client, n int) error) {
	e := harness.StartEtcd(t)
	cli := e.Client(t)
	ctx := context.Background()
	put := func(k, v string) {
		t.Helper()
		if _, err := cli.Put(ctx, "/burst/"+k, v); err != nil {
			t.Fatal(err)
		}
	}
	res := []string{"r1", "r2", "r3", "r4"}
	for _, r := range res {
		put(r, "0")
	}
	put("s", "0")
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	files := map[string]string{"reload.sh": burstReloadSh}
	for _, r := range res {
		cmd := fmt.Sprintf("sh %s shared %s", filepath.Join(dir, "reload.sh"), filepath.Join(out, "r1"))
		if r == "r4" {
			cmd = fmt.Sprintf("sh %s own %s", filepath.Join(dir, "reload.sh"), filepath.Join(out, "r4"))
		}
		files["conf.d/"+r+".toml"] = fmt.Sprintf("[template]\nsrc = %q\ndest = %q\nmake_dirs = true\nkeys = [\"/burst\"]\nreload_cmd = %q\n",
			r+".tmpl", filepath.Join(out, r), cmd)
		files["templates/"+r+".tmpl"] = fmt.Sprintf(`%s={{getv "/burst/%s"}} s={{getv "/burst/s"}}`, r, r)
	}
	writeTree(t, dir, files)
	listen := freeAddr(t)
	p := startHerald(t, nil, "watch", "--confdir", dir, "--backend", "etcd://"+strings.TrimPrefix(e.Endpoints[0], "http://"),
		"--listen", listen, "--wait", "1s:10s")
	for _, r := range res {
		waitFile(t, filepath.Join(out, r), r+"=0 s=0", 15*time.Second)
	}
	log := filepath.Join(dir, "reloads.log")
	// waitRun waits until cmd has a finished run whose file held want when it started.
	waitRun := func(cmd, want string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			runs, _ := burstRuns(t, log)
			for _, r := range runs[cmd] {
				if r.content == want {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no run of the %s reload command saw %q within 20s; runs %v\n%s", cmd, want, runs[cmd], tail(p.Output(), 30))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	sentinel := func(n int) {
		t.Helper()
		put("s", strconv.Itoa(n))
		waitRun("shared", fmt.Sprintf("r1=%s s=%d", burstVal(n), n))
		waitRun("own", fmt.Sprintf("r4=%s s=%d", burstVal(n), n))
	}
	// Start-up: its reloads are over once each command's run for the first sentinel is.
	sentinel(1)
	const rounds = 3
	for n := 2; n < 2+rounds; n++ {
		base, _ := burstRuns(t, log)
		renders := map[string]float64{}
		for _, r := range res {
			renders[r] = metric(t, listen, `herald_renders_total{resource="`+r+`.toml",result="changed"}`)
		}
		burstStart := time.Now()
		if err := burst(cli, n); err != nil {
			t.Fatal(err)
		}
		putDur := time.Since(burstStart)
		waitRun("shared", fmt.Sprintf("r1=%s s=%d", burstVal(n), n-1))
		waitRun("own", fmt.Sprintf("r4=%s s=%d", burstVal(n), n-1))
		for _, r := range res {
			waitFile(t, filepath.Join(out, r), fmt.Sprintf("%s=%s s=%d", r, burstVal(n), n-1), 5*time.Second)
		}
		var rendered []string
		for _, r := range res {
			rendered = append(rendered, fmt.Sprintf("%s %v", r, metric(t, listen, `herald_renders_total{resource="`+r+`.toml",result="changed"}`)-renders[r]))
		}
		// The later positive event: the sentinel's run of each command proves that any
		// extra run the burst caused has already happened (a run requested during one
		// runs right after it, before the sentinel's).
		sentinel(n)
		runs, problems := burstRuns(t, log)
		for _, pr := range problems {
			t.Errorf("round %d: %s", n, pr)
		}
		for _, cmd := range []string{"shared", "own"} {
			got := runs[cmd][len(base[cmd]):]
			if len(got) != 2 {
				t.Errorf("round %d: the %s reload command ran %d times for one burst and one sentinel change, want 2 (burst written in %v; changed renders %s): %v",
					n, cmd, len(got), putDur.Round(time.Millisecond), strings.Join(rendered, ", "), got)
			}
		}
	}
	runs, problems := burstRuns(t, log)
	for _, pr := range problems {
		t.Errorf("%s", pr)
	}
	t.Logf("reload runs: shared %d, own %d over start-up, %d bursts and %d sentinel changes", len(runs["shared"]), len(runs["own"]), rounds, rounds+1)
}

// burstVal is the last value a burst of round n writes (round 1 is the start-up's).
func burstVal(n int) string {
	if n < 2 {
		return "0"
	}
	return fmt.Sprintf("%d.2", n)
}
