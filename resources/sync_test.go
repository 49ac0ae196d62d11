//go:build unix

package resources

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func newRes(t *testing.T) *Resource {
	t.Helper()
	dir := t.TempDir()
	return &Resource{Name: "t.toml", Dest: filepath.Join(dir, "out.cfg"), UID: -1, GID: -1}
}

// dirEntries lists a directory, so tests can prove no stage file is left behind.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func writeDest(t *testing.T, r *Resource, content string, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(r.Dest, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(r.Dest, mode); err != nil {
		t.Fatal(err)
	}
}

func assertDest(t *testing.T, r *Resource, want string) {
	t.Helper()
	got, err := os.ReadFile(r.Dest)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("dest = %q, want %q", got, want)
	}
}

func TestSyncWritesNewFileWithDefaultMode(t *testing.T) {
	r := newRes(t)
	s := &Syncer{}
	o, err := s.Sync(context.Background(), r, []byte("hello\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !o.Changed {
		t.Fatal("Changed = false for a new file")
	}
	assertDest(t, r, "hello\n")
	fi, _ := os.Stat(r.Dest)
	if fi.Mode().Perm() != 0o644 {
		t.Fatalf("mode = %o, want 644", fi.Mode().Perm())
	}
	if names := dirEntries(t, filepath.Dir(r.Dest)); len(names) != 1 {
		t.Fatalf("directory holds %v, want only the dest", names)
	}
}

func TestSyncUnchangedDoesNothing(t *testing.T) {
	r := newRes(t)
	r.ReloadCmd = "echo reload"
	r.CheckCmd = "false" // would fail if it ran
	writeDest(t, r, "same\n", 0o640)
	old := time.Now().Add(-time.Hour)
	os.Chtimes(r.Dest, old, old)
	o, err := (&Syncer{}).Sync(context.Background(), r, []byte("same\n"))
	if err != nil {
		t.Fatal(err)
	}
	if o.Changed || o.Reload != "" {
		t.Fatalf("outcome = %+v, want nothing to do", o)
	}
	fi, _ := os.Stat(r.Dest)
	if !fi.ModTime().Equal(old) {
		t.Fatal("dest was rewritten although nothing changed")
	}
	if fi.Mode().Perm() != 0o640 {
		t.Fatalf("existing mode not kept: %o", fi.Mode().Perm())
	}
}

// Sync reads dest only when its size matches the new content's: these are the cases
// that comparison must still get right.
func TestSyncComparesSizeThenContent(t *testing.T) {
	for _, c := range []struct {
		name, old, new string
		changed        bool
	}{
		{"same", "abc\n", "abc\n", false},
		{"same size, other bytes", "abc\n", "abd\n", true},
		{"empty over content", "abc\n", "", true},
		{"content over empty", "", "abc\n", true},
		{"empty over empty", "", "", false},
		{"longer", "abc\n", "abcd\n", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRes(t)
			writeDest(t, r, c.old, 0o644)
			o, err := (&Syncer{}).Sync(context.Background(), r, []byte(c.new))
			if err != nil {
				t.Fatal(err)
			}
			if o.Changed != c.changed {
				t.Fatalf("Changed = %v, want %v", o.Changed, c.changed)
			}
			assertDest(t, r, c.new)
		})
	}
}

func TestSyncModeChangeAlone(t *testing.T) {
	r := newRes(t)
	writeDest(t, r, "x", 0o644)
	r.Mode, r.ModeSet = 0o600, true
	o, err := (&Syncer{}).Sync(context.Background(), r, []byte("x"))
	if err != nil || !o.Changed {
		t.Fatalf("Sync = %+v, %v; want a change", o, err)
	}
	fi, _ := os.Stat(r.Dest)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %o, want 600", fi.Mode().Perm())
	}
}

func TestSyncCheckSeesStagedContent(t *testing.T) {
	r := newRes(t)
	r.Mode, r.ModeSet = 0o640, true
	// The check sees the new content at the stage path, already with its final mode,
	// next to dest (so a relative include in the config resolves the same).
	r.CheckCmd = `grep -qx new {{.src}} && test "$(stat -c %a {{.src}})" = 640 && test "$(dirname {{.src}})" = "$(dirname {{.dest}})"`
	r.ReloadCmd = "echo {{.dest}}"
	o, err := (&Syncer{}).Sync(context.Background(), r, []byte("new\n"))
	if err != nil {
		t.Fatal(err)
	}
	assertDest(t, r, "new\n")
	if o.Reload != "echo "+r.Dest {
		t.Fatalf("reload = %q", o.Reload)
	}
}

func TestSyncCheckFailureLeavesDestAndRemovesStage(t *testing.T) {
	r := newRes(t)
	writeDest(t, r, "good\n", 0o644)
	r.CheckCmd = "echo 'line 3: bad directive' >&2; exit 3"
	r.ReloadCmd = "echo reload"
	o, err := (&Syncer{}).Sync(context.Background(), r, []byte("bad\n"))
	var ce *CommandError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want a CommandError", err)
	}
	for _, want := range []string{r.Dest, "check_cmd", "exit status 3", "line 3: bad directive"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if o.Reload != "" {
		t.Fatal("a failed check asked for a reload")
	}
	assertDest(t, r, "good\n")
	if names := dirEntries(t, filepath.Dir(r.Dest)); len(names) != 1 {
		t.Fatalf("stage file left behind: %v", names)
	}
}

func TestSyncKeepStageFileOnCheckFailure(t *testing.T) {
	r := newRes(t)
	r.CheckCmd = "false"
	_, err := (&Syncer{KeepStageFile: true}).Sync(context.Background(), r, []byte("bad\n"))
	if err == nil {
		t.Fatal("want error")
	}
	names := dirEntries(t, filepath.Dir(r.Dest))
	if len(names) != 1 || !strings.HasPrefix(names[0], ".out.cfg") {
		t.Fatalf("want exactly the kept stage file, got %v", names)
	}
	b, _ := os.ReadFile(filepath.Join(filepath.Dir(r.Dest), names[0]))
	if string(b) != "bad\n" {
		t.Fatalf("stage holds %q", b)
	}
}

func TestSyncCheckTimeoutKillsTheProcessGroup(t *testing.T) {
	r := newRes(t)
	writeDest(t, r, "good\n", 0o644)
	r.CheckCmd = "sleep 30; true"
	r.CheckTimeout = 300 * time.Millisecond
	start := time.Now()
	_, err := (&Syncer{}).Sync(context.Background(), r, []byte("new\n"))
	if err == nil || !strings.Contains(err.Error(), "timed out after 300ms") {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("timeout took %v: the child sleep was not killed", d)
	}
	assertDest(t, r, "good\n")
	if names := dirEntries(t, filepath.Dir(r.Dest)); len(names) != 1 {
		t.Fatalf("stage file left behind: %v", names)
	}
}

func TestSyncMissingCheckCommand(t *testing.T) {
	r := newRes(t)
	writeDest(t, r, "good\n", 0o644)
	r.CheckCmd = "/nonexistent/haproxy -c -f {{.src}}"
	_, err := (&Syncer{}).Sync(context.Background(), r, []byte("new\n"))
	if err == nil || !strings.Contains(err.Error(), "exit status 127") || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("err = %v, want exit 127 and the shell's 'not found'", err)
	}
	assertDest(t, r, "good\n")
}

func TestSyncDryRunPrintsDiffAndWritesNothing(t *testing.T) {
	r := newRes(t)
	writeDest(t, r, "a\nb\n", 0o644)
	r.CheckCmd = "false"
	var out bytes.Buffer
	o, err := (&Syncer{DryRun: true, Diff: &out}).Sync(context.Background(), r, []byte("a\nc\n"))
	if err != nil || !o.Changed {
		t.Fatalf("Sync = %+v, %v", o, err)
	}
	assertDest(t, r, "a\nb\n")
	for _, want := range []string{"--- " + r.Dest, "+++ " + r.Dest, "-b", "+c"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("diff lacks %q:\n%s", want, out.String())
		}
	}
	if names := dirEntries(t, filepath.Dir(r.Dest)); len(names) != 1 {
		t.Fatalf("dry run created files: %v", names)
	}
}

func TestSyncDryRunNewFile(t *testing.T) {
	r := newRes(t)
	var out bytes.Buffer
	if _, err := (&Syncer{DryRun: true, Diff: &out}).Sync(context.Background(), r, []byte("x\n")); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "--- /dev/null") {
		t.Fatalf("diff of a new file: %s", out.String())
	}
	if _, err := os.Stat(r.Dest); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("dry run wrote dest")
	}
}

func TestSyncOnlySkipsCommands(t *testing.T) {
	r := newRes(t)
	r.CheckCmd = "false"
	r.ReloadCmd = "echo reload"
	o, err := (&Syncer{SyncOnly: true}).Sync(context.Background(), r, []byte("x\n"))
	if err != nil || o.Reload != "" {
		t.Fatalf("Sync = %+v, %v", o, err)
	}
	assertDest(t, r, "x\n")
}

func TestSyncBackup(t *testing.T) {
	r := newRes(t)
	r.Backup = true
	writeDest(t, r, "v1\n", 0o600)
	if _, err := (&Syncer{}).Sync(context.Background(), r, []byte("v2\n")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(r.Dest + ".bak")
	if err != nil || string(b) != "v1\n" {
		t.Fatalf("backup = %q, %v", b, err)
	}
	assertDest(t, r, "v2\n")
}

func TestSyncMissingDirAndMakeDirs(t *testing.T) {
	r := newRes(t)
	r.Dest = filepath.Join(filepath.Dir(r.Dest), "sub", "dir", "out.cfg")
	if _, err := (&Syncer{}).Sync(context.Background(), r, []byte("x")); err == nil || !strings.Contains(err.Error(), r.Dest) {
		t.Fatalf("err = %v, want one naming dest", err)
	}
	r.MakeDirs = true
	if _, err := (&Syncer{}).Sync(context.Background(), r, []byte("x")); err != nil {
		t.Fatal(err)
	}
	assertDest(t, r, "x")
}

func TestSyncDestIsDirectory(t *testing.T) {
	r := newRes(t)
	os.Mkdir(r.Dest, 0o755)
	_, err := (&Syncer{}).Sync(context.Background(), r, []byte("x"))
	if err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Fatalf("err = %v", err)
	}
}

func TestSyncUnwritableDirLeavesDest(t *testing.T) {
	if os.Geteuid() == 0 {
		// root ignores directory permissions: a file size limit makes the write itself
		// fail instead. The limit is the whole process's, so the write happens in a
		// child test binary: here every other test, and the test log itself, would hit
		// it too.
		if dest := os.Getenv("HERALD_TEST_FSIZE_DEST"); dest != "" {
			r := &Resource{Name: "t.toml", Dest: dest, UID: -1, GID: -1}
			ignoreSIGXFSZ(t)
			var old syscall.Rlimit
			syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old)
			syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: 4, Max: old.Max})
			_, err := (&Syncer{}).Sync(context.Background(), r, []byte("a much longer config than four bytes\n"))
			syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old)
			if err == nil || !strings.Contains(err.Error(), "write stage file") {
				t.Fatalf("err = %v, want a failed stage write", err)
			}
			return
		}
		r := newRes(t)
		writeDest(t, r, "good\n", 0o644)
		c := exec.Command(os.Args[0], "-test.run=^TestSyncUnwritableDirLeavesDest$", "-test.count=1", "-test.v")
		c.Env = append(os.Environ(), "HERALD_TEST_FSIZE_DEST="+r.Dest)
		if out, err := c.CombinedOutput(); err != nil || !strings.Contains(string(out), "--- PASS: TestSyncUnwritableDirLeavesDest") {
			t.Fatalf("child: %v\n%s", err, out)
		}
		assertDest(t, r, "good\n")
		if names := dirEntries(t, filepath.Dir(r.Dest)); len(names) != 1 {
			t.Fatalf("stage file left behind: %v", names)
		}
		return
	}
	r := newRes(t)
	writeDest(t, r, "good\n", 0o644)
	os.Chmod(filepath.Dir(r.Dest), 0o555)
	defer os.Chmod(filepath.Dir(r.Dest), 0o755)
	_, err := (&Syncer{}).Sync(context.Background(), r, []byte("new\n"))
	if err == nil || !strings.Contains(err.Error(), "stage file") {
		t.Fatalf("err = %v", err)
	}
	assertDest(t, r, "good\n")
}

func TestSyncOwner(t *testing.T) {
	r := newRes(t)
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		uid, gid = 65534, 65534 // nobody/nogroup: only root may give files away
	}
	r.UID, r.GID = uid, gid
	if _, err := (&Syncer{}).Sync(context.Background(), r, []byte("x")); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(r.Dest)
	st := fi.Sys().(*syscall.Stat_t)
	if int(st.Uid) != uid || int(st.Gid) != gid {
		t.Fatalf("owner = %d:%d, want %d:%d", st.Uid, st.Gid, uid, gid)
	}
	// Same content and owner: nothing to do.
	o, err := (&Syncer{}).Sync(context.Background(), r, []byte("x"))
	if err != nil || o.Changed {
		t.Fatalf("second sync = %+v, %v", o, err)
	}
}

func ignoreSIGXFSZ(t *testing.T) {
	signal.Ignore(syscall.SIGXFSZ)
	t.Cleanup(func() { signal.Reset(syscall.SIGXFSZ) })
}
