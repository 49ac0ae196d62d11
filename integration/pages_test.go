package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/integration/harness"
)

// exePages is what process pid has resident of its read-only mappings of its executable
// (text, read-only data, the function tables), and their size.
func exePages(t *testing.T, pid int) (resident, size int64) {
	t.Helper()
	var exe syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/exe", pid), &exe); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	ours := false
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			ino, _ := strconv.ParseUint(f[4], 10, 64)
			ours = ino == exe.Ino && f[1][1] != 'w'
			if ours {
				lo, hi, _ := strings.Cut(f[0], "-")
				a, _ := strconv.ParseInt(lo, 16, 64)
				b, _ := strconv.ParseInt(hi, 16, 64)
				size += b - a
			}
			continue
		}
		if ours && len(f) == 3 && f[0] == "Rss:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			resident += kb << 10
		}
	}
	if size == 0 {
		t.Fatalf("no read-only mapping of herald's executable in /proc/%d/smaps", pid)
	}
	return resident, size
}

// released is herald's debug log line for a release of its executable's pages; after=
// says what it followed (start-up, reload, quiet).
const released = `msg="released the executable's pages"`

// Once a watch has rendered everything, and again after a reload, herald gives back the
// pages of its executable that start-up touched (start-up maps in some 85% of the text
// and read-only data; a daemon needs far fewer), and what it needs comes back on use:
// it still renders every change and reloads.
func TestWatchReleasesStartupPages(t *testing.T) {
	t.Parallel()
	dir, backend := fileTree(t, map[string]string{
		"data.yaml":             "app:\n  value: one\n",
		"out/.keep":             "",
		"conf.d/app.toml":       "[template]\nsrc = \"app.tmpl\"\ndest = \"out/app.conf\"\nkeys = [\"/app\"]\n",
		"templates/app.tmpl":    "value={{getv \"/app/value\"}}\n",
		"conf.d/static.toml":    "[template]\nsrc = \"static.tmpl\"\ndest = \"out/static.conf\"\n",
		"templates/static.tmpl": "{{range $i, $_ := until 3}}{{$i}}{{end}}\n",
	})
	p := startHerald(t, nil, "watch", "--confdir", dir, "--backend", backend, "--log-level", "debug")
	dest := filepath.Join(dir, "out", "app.conf")
	waitFile(t, dest, "value=one\n", 20e9)
	releases := func() int {
		return strings.Count(p.Output(), released+" after=start-up") + strings.Count(p.Output(), released+" after=reload")
	}
	waitFor(t, p, "the start-up pages released", func() bool { return releases() == 1 })
	resident, size := exePages(t, p.cmd.Process.Pid)
	t.Logf("after start-up: %d of %d KiB resident", resident>>10, size>>10)
	if resident > size/2 {
		t.Errorf("%d of herald's %d KiB of executable pages resident after start-up: want at most half", resident>>10, size>>10)
	}

	// The code a change needs maps back in: changes keep reaching the file.
	for i := range 5 {
		want := fmt.Sprintf("two-%d", i)
		if err := os.WriteFile(filepath.Join(dir, "data.yaml"), []byte("app:\n  value: "+want+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		waitFile(t, dest, "value="+want+"\n", 20e9)
	}
	// Only start-up's pages: each burst's end (a heartbeat) does not release again, which
	// would make every change map its code back.
	if n := releases(); n != 1 {
		t.Errorf("pages released %d times after start-up and 5 changes, want once", n)
	}
	// A reload parses resource files and templates again, then gives their pages back.
	writeTree(t, dir, map[string]string{"templates/static.tmpl": "{{range $i, $_ := until 4}}{{$i}}{{end}}\n"})
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFile(t, filepath.Join(dir, "out", "static.conf"), "0123\n", 20e9)
	waitFor(t, p, "the pages released after the reload", func() bool { return releases() >= 2 })
	if resident, _ := exePages(t, p.cmd.Process.Pid); resident > size/2 {
		t.Errorf("%d of herald's %d KiB of executable pages resident after a reload: want at most half", resident>>10, size>>10)
	}
}

// A watch that has rendered nothing for 6 beats gives back the pages its renders mapped
// in again, once per quiet spell: it releases again only after something rendered.
func TestWatchReleasesPagesWhenQuiet(t *testing.T) {
	t.Parallel()
	dir, backend := fileTree(t, map[string]string{
		"data.yaml":          "app:\n  value: one\n",
		"out/.keep":          "",
		"conf.d/app.toml":    "[template]\nsrc = \"app.tmpl\"\ndest = \"out/app.conf\"\nkeys = [\"/app\"]\n",
		"templates/app.tmpl": "value={{getv \"/app/value\"}} {{upper (getv \"/app/value\")}} {{toJson (getvs \"/app/*\")}}\n",
	})
	sock, msgs := notifySocket(t)
	// A beat every 500 ms (half the watchdog interval): quiet after 3 s, far longer than
	// a change takes, so the changes below run as one busy spell.
	p := startHerald(t, []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=1000000"},
		"watch", "--confdir", dir, "--backend", backend, "--log-level", "debug")
	quiet := func() int { return strings.Count(p.Output(), released+" after=quiet") }
	waitFor(t, p, "the start-up pages released", func() bool { return strings.Contains(p.Output(), released+" after=start-up") })
	dest := filepath.Join(dir, "out", "app.conf")
	change := func(v string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "data.yaml"), []byte("app:\n  value: "+v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		waitFile(t, dest, "value="+v+" "+strings.ToUpper(v)+" [\""+v+"\"]\n", 20e9)
	}
	for i := range 5 {
		change(fmt.Sprintf("two-%d", i))
	}
	busy, size := exePages(t, p.cmd.Process.Pid)
	before := quiet()
	waitFor(t, p, "the release once quiet", func() bool { return quiet() > before })
	after, _ := exePages(t, p.cmd.Process.Pid)
	t.Logf("executable pages resident: %d KiB after the changes, %d KiB once quiet (of %d KiB)", busy>>10, after>>10, size>>10)
	if after > busy/2 {
		t.Errorf("%d KiB of herald's executable resident once quiet, %d KiB before: want at most half", after>>10, busy>>10)
	}

	// Quiet on: 14 more beats (well past 6) and no second release, for nothing rendered.
	n := quiet()
	for drained := false; !drained; {
		select {
		case <-msgs:
		default:
			drained = true
		}
	}
	for range 14 {
		nextWith(t, msgs, "WATCHDOG=1", 5*time.Second)
	}
	if got := quiet(); got != n {
		t.Errorf("%d releases while quiet after the first, want none: nothing rendered", got-n)
	}
	// A change maps back what it needs, and the next quiet spell gives it back again.
	change("three")
	waitFor(t, p, "the release once quiet again", func() bool { return quiet() > n })
}

// A watch goes on starting after it is ready: its backend opens its watches (etcd's
// gRPC stream), mapping back much of what the start-up release gave back. The first
// quiet spell releases again even when no key ever changes, so a sidecar whose keys stay
// put does not hold those pages for life; and it still follows the next change.
func TestWatchReleasesPagesWhenQuietWithoutAChange(t *testing.T) {
	t.Parallel()
	e := harness.StartEtcd(t)
	cli := e.Client(t)
	if _, err := cli.Put(context.Background(), "/app/value", "one"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	dest := filepath.Join(dir, "out", "app.conf")
	writeTree(t, dir, map[string]string{
		"conf.d/app.toml":    "[template]\nsrc = \"app.tmpl\"\ndest = \"" + dest + "\"\nkeys = [\"/app\"]\nmake_dirs = true\n",
		"templates/app.tmpl": "value={{getv \"/app/value\"}}\n",
	})
	sock, _ := notifySocket(t)
	// A beat every 500 ms (half the watchdog interval): quiet after 3 s.
	p := startHerald(t, []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=1000000"},
		"watch", "--confdir", dir, "--backend", "etcd://"+strings.Join(etcdHosts(e.Endpoints), ","), "--log-level", "debug")
	waitFile(t, dest, "value=one\n", 20e9)
	waitFor(t, p, "the start-up pages released", func() bool { return strings.Contains(p.Output(), released+" after=start-up") })
	waitFor(t, p, "a release once quiet, with no change since start-up", func() bool { return strings.Contains(p.Output(), released+" after=quiet") })
	resident, size := exePages(t, p.cmd.Process.Pid)
	t.Logf("executable pages resident once quiet, no change since start-up: %d of %d KiB", resident>>10, size>>10)
	// Measured: ~4.5 of 20 MiB once quiet; ~10.7 MiB when only start-up released.
	if resident > size/3 {
		t.Errorf("%d of herald's %d KiB of executable pages resident once quiet: want at most a third", resident>>10, size>>10)
	}
	if _, err := cli.Put(context.Background(), "/app/value", "two"); err != nil {
		t.Fatal(err)
	}
	waitFile(t, dest, "value=two\n", 20e9)
}

// herald exec gives the pages back once its child runs.
func TestExecReleasesStartupPages(t *testing.T) {
	t.Parallel()
	_, backend := fileTree(t, map[string]string{"data.yaml": "app:\n  value: one\n"})
	p := startHerald(t, nil, "exec", "--backend", backend, "--prefix", "/app", "--log-level", "debug", "--", "sh", "-c", "echo child $value; exec sleep 60")
	waitFor(t, p, "the child and the release", func() bool {
		out := p.Output()
		return strings.Contains(out, "child one") && strings.Contains(out, released+" after=start-up")
	})
	if resident, size := exePages(t, p.cmd.Process.Pid); resident > size/2 {
		t.Errorf("%d of herald's %d KiB of executable pages resident while the child runs: want at most half", resident>>10, size>>10)
	}
}
