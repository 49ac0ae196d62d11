package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
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
	released := func() int { return strings.Count(p.Output(), "released the executable's start-up pages") }
	waitFor(t, p, "the start-up pages released", func() bool { return released() == 1 })
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
	if n := released(); n != 1 {
		t.Errorf("pages released %d times after start-up and 5 changes, want once", n)
	}
	// A reload parses resource files and templates again, then gives their pages back.
	writeTree(t, dir, map[string]string{"templates/static.tmpl": "{{range $i, $_ := until 4}}{{$i}}{{end}}\n"})
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFile(t, filepath.Join(dir, "out", "static.conf"), "0123\n", 20e9)
	waitFor(t, p, "the pages released after the reload", func() bool { return released() >= 2 })
	if resident, _ := exePages(t, p.cmd.Process.Pid); resident > size/2 {
		t.Errorf("%d of herald's %d KiB of executable pages resident after a reload: want at most half", resident>>10, size>>10)
	}
}

// herald exec gives the pages back once its child runs.
func TestExecReleasesStartupPages(t *testing.T) {
	t.Parallel()
	_, backend := fileTree(t, map[string]string{"data.yaml": "app:\n  value: one\n"})
	p := startHerald(t, nil, "exec", "--backend", backend, "--prefix", "/app", "--log-level", "debug", "--", "sh", "-c", "echo child $value; exec sleep 60")
	waitFor(t, p, "the child and the release", func() bool {
		out := p.Output()
		return strings.Contains(out, "child one") && strings.Contains(out, "released the executable's start-up pages")
	})
	if resident, size := exePages(t, p.cmd.Process.Pid); resident > size/2 {
		t.Errorf("%d of herald's %d KiB of executable pages resident while the child runs: want at most half", resident>>10, size>>10)
	}
}
