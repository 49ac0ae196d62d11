//go:build unix

package resources

// Issue 17's hardening of what Sync does to files: symlinked dests, backups, ids out of
// range, special mode bits, the owner of an existing dest.

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/template"
)

func TestLoadRefusesIDsOutOfRange(t *testing.T) {
	for _, c := range []struct{ line, want string }{
		{"uid = 4294967296", "uid: 4294967296 is out of range (0 to 4294967294)"},
		{"gid = 4294967295", "gid: 4294967295 is out of range"},
		{"uid = -2", "uid: -2 is out of range"},
		{`owner = "4294967296"`, `owner "4294967296": 4294967296 is out of range`},
		{`group = "-1"`, `group "-1": -1 is out of range`},
	} {
		dir := tree(t, map[string]string{
			"conf.d/a.toml":    "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x\"\n" + c.line + "\n",
			"templates/t.tmpl": "ok",
		})
		_, err := Load(LoadOptions{ConfDir: dir})
		if err == nil || !strings.Contains(err.Error(), "a.toml:4: "+c.want) {
			t.Errorf("%s: err = %v, want a.toml:4: %s", c.line, err, c.want)
		}
	}
}

func TestLoadModeSpecialBits(t *testing.T) {
	for in, want := range map[string]fs.FileMode{
		"0644": 0o644,
		"4755": fs.ModeSetuid | 0o755,
		"2750": fs.ModeSetgid | 0o750,
		"1777": fs.ModeSticky | 0o777,
		"6711": fs.ModeSetuid | fs.ModeSetgid | 0o711,
	} {
		got, err := ParseMode(in)
		if err != nil || got != want {
			t.Errorf("ParseMode(%q) = %v, %v; want %v", in, got, err, want)
		}
		if o := octal(got); strings.TrimLeft(o, "0") != strings.TrimLeft(in, "0") {
			t.Errorf("octal(ParseMode(%q)) = %s", in, o)
		}
	}
}

// mode = "4755" is applied exactly, and a dest that has it is in sync: no rewrite (and
// so no reload) on the next render.
func TestSyncSpecialModeBitsAppliedAndInSync(t *testing.T) {
	for _, mode := range []fs.FileMode{fs.ModeSetuid | 0o755, fs.ModeSetgid | 0o750, fs.ModeSticky | 0o644} {
		r := newRes(t)
		r.Mode, r.ModeSet = mode, true
		r.ReloadCmd = "true"
		if _, err := (&Syncer{}).Sync(context.Background(), r, []byte("x\n")); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(r.Dest)
		if err != nil || fileMode(fi) != mode {
			t.Fatalf("mode %s: dest has %v (%v)", octal(mode), fi.Mode(), err)
		}
		o, err := (&Syncer{}).Sync(context.Background(), r, []byte("x\n"))
		if err != nil || o.Changed || o.Reload != "" {
			t.Fatalf("mode %s: second sync = %+v, %v; want nothing to do", octal(mode), o, err)
		}
	}
}

// Owner and group (uid/gid, owner/group) are applied with the special bits intact: chown
// clears setuid, so it must come first.
func TestSyncSetuidSurvivesOwner(t *testing.T) {
	r := newRes(t)
	r.Mode, r.ModeSet = fs.ModeSetuid|0o755, true
	r.UID, r.GID = os.Geteuid(), os.Getegid()
	if os.Geteuid() == 0 {
		r.UID, r.GID = 65534, 65534
	}
	if _, err := (&Syncer{}).Sync(context.Background(), r, []byte("x\n")); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(r.Dest)
	if fileMode(fi) != r.Mode {
		t.Fatalf("dest has %v, want %v", fi.Mode(), r.Mode)
	}
}

// With no owner configured, a rewrite keeps the owner of the dest it replaces, as it
// keeps its mode.
func TestSyncKeepsExistingOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: only root gives files away (CI runs as root)")
	}
	r := newRes(t)
	writeDest(t, r, "old\n", 0o640)
	if err := os.Chown(r.Dest, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := (&Syncer{}).Sync(context.Background(), r, []byte("new\n")); err != nil {
		t.Fatal(err)
	}
	assertDest(t, r, "new\n")
	fi, _ := os.Stat(r.Dest)
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 65534 || st.Gid != 65534 || fi.Mode() != 0o640 {
		t.Fatalf("dest is %v %d:%d, want -rw-r----- 65534:65534 (kept)", fi.Mode(), st.Uid, st.Gid)
	}
	// Only the group configured: the user is kept.
	r.GID = 0
	if _, err := (&Syncer{}).Sync(context.Background(), r, []byte("newer\n")); err != nil {
		t.Fatal(err)
	}
	fi, _ = os.Stat(r.Dest)
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 || st.Gid != 0 {
		t.Fatalf("dest is owned by %d:%d, want 65534:0", st.Uid, st.Gid)
	}
}

// symlinkAttack lays out what a user who can write dest's directory does to read a
// root-only file through herald's backup: dest is a link to the secret and dest.bak a
// world-readable file of theirs.
func symlinkAttack(t *testing.T, r *Resource) (secret string) {
	t.Helper()
	secret = filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("root-only-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, r.Dest); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.Dest+".bak", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return secret
}

func TestSyncRefusesSymlinkedDest(t *testing.T) {
	r := newRes(t)
	r.File, r.Backup = "/etc/herald/conf.d/t.toml", true
	secret := symlinkAttack(t, r)
	_, err := (&Syncer{}).Sync(context.Background(), r, []byte("new\n"))
	if err == nil || !strings.Contains(err.Error(), r.File+": dest "+r.Dest+" is a symlink") || !strings.Contains(err.Error(), "follow_symlink = true") {
		t.Fatalf("err = %v, want a refusal naming %s and %s", err, r.File, r.Dest)
	}
	if b, _ := os.ReadFile(r.Dest + ".bak"); len(b) != 0 {
		t.Fatalf("dest.bak = %q: the link's target was copied", b)
	}
	if b, _ := os.ReadFile(secret); string(b) != "root-only-secret\n" {
		t.Fatalf("the link's target changed: %q", b)
	}
	if fi, err := os.Lstat(r.Dest); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v %v", fi, err)
	}
	// A dry run says the same, and shows nothing of the target.
	var d bytes.Buffer
	if _, err := (&Syncer{DryRun: true, Diff: &d}).Sync(context.Background(), r, []byte("new\n")); err == nil || strings.Contains(d.String(), "secret") {
		t.Fatalf("dry run: %v, diff %q", err, d.String())
	}
}

func TestLoadRefusesSymlinkedDest(t *testing.T) {
	dir := tree(t, map[string]string{"templates/t.tmpl": "ok", "real": "x"})
	if err := os.Symlink(filepath.Join(dir, "real"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ extra, want string }{
		{"", "a.toml:3: dest " + filepath.Join(dir, "link") + " is a symlink"},
		{"follow_symlink = true\n", ""},
	} {
		os.MkdirAll(filepath.Join(dir, "conf.d"), 0o755)
		os.WriteFile(filepath.Join(dir, "conf.d", "a.toml"), []byte("[template]\nsrc = \"t.tmpl\"\ndest = \"link\"\n"+c.extra), 0o644)
		rs, err := Load(LoadOptions{ConfDir: dir})
		if c.want == "" && (err != nil || len(rs) != 1 || !rs[0].FollowSymlink) {
			t.Errorf("follow_symlink: %v, %v", rs, err)
		}
		if c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("err = %v, want %q", err, c.want)
		}
	}
}

// follow_symlink = true writes the file the link names, atomically (the link stays),
// and backs that file up next to it.
func TestSyncFollowSymlink(t *testing.T) {
	r := newRes(t)
	r.FollowSymlink, r.Backup = true, true
	target := filepath.Join(t.TempDir(), "real.cfg")
	if err := os.WriteFile(target, []byte("v1\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	os.Chmod(target, 0o640)
	if err := os.Symlink(target, r.Dest); err != nil {
		t.Fatal(err)
	}
	if _, err := (&Syncer{}).Sync(context.Background(), r, []byte("v2\n")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "v2\n" {
		t.Fatalf("target = %q", b)
	}
	if fi, err := os.Lstat(r.Dest); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v %v", fi, err)
	}
	fi, err := os.Stat(target + ".bak")
	if b, _ := os.ReadFile(target + ".bak"); err != nil || string(b) != "v1\n" || fi.Mode() != 0o640 {
		t.Fatalf("backup = %q %v %v", b, fi, err)
	}
	o, err := (&Syncer{}).Sync(context.Background(), r, []byte("v2\n"))
	if err != nil || o.Changed {
		t.Fatalf("second sync = %+v, %v", o, err)
	}
}

// dest.bak is a new file with dest's mode and owner, whatever dest.bak was before
// (another user's, world-readable, a link elsewhere).
func TestSyncBackupIsFreshWithDestModeAndOwner(t *testing.T) {
	r := newRes(t)
	r.Backup = true
	writeDest(t, r, "v1-secret\n", 0o600)
	uid, gid := os.Geteuid(), os.Getegid()
	if uid == 0 {
		uid, gid = 65534, 65534
		os.Chown(r.Dest, uid, gid)
	}
	elsewhere := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.WriteFile(elsewhere, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, prepare := range map[string]func(bak string) error{
		"world-readable": func(bak string) error { return os.WriteFile(bak, nil, 0o644) },
		"link elsewhere": func(bak string) error { return os.Symlink(elsewhere, bak) },
	} {
		os.Remove(r.Dest + ".bak")
		if err := prepare(r.Dest + ".bak"); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(r.Dest+".bak", 0o644); err != nil && name == "world-readable" {
			t.Fatal(err)
		}
		var before syscall.Stat_t
		syscall.Lstat(r.Dest+".bak", &before)
		if _, err := (&Syncer{}).Sync(context.Background(), r, []byte(name+"\n")); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(r.Dest + ".bak")
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Ino == before.Ino || fi.Mode() != 0o600 || int(st.Uid) != uid || int(st.Gid) != gid {
			t.Errorf("%s: dest.bak is %v %d:%d inode %d (was %d); want a new -rw------- %d:%d", name, fi.Mode(), st.Uid, st.Gid, st.Ino, before.Ino, uid, gid)
		}
		if b, _ := os.ReadFile(elsewhere); len(b) != 0 {
			t.Errorf("%s: the backup went through the link: %q", name, b)
		}
		writeDest(t, r, "v1-secret\n", 0o600)
		os.Chown(r.Dest, uid, gid)
	}
	// Staged next to dest, not in $TMPDIR: nothing but dest and dest.bak is left.
	if names := dirEntries(t, filepath.Dir(r.Dest)); len(names) != 2 {
		t.Fatalf("left in dest's directory: %v", names)
	}
}

// A dest too large to back up is replaced without reading it whole: a sparse 256 MiB
// dest costs far less than 256 MiB of memory, and its replacement logs a warning.
func TestSyncBackupOfHugeDestIsBounded(t *testing.T) {
	r := newRes(t)
	r.Backup = true
	if err := os.WriteFile(r.Dest, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(r.Dest, 256<<20); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := (&Syncer{Log: slog.New(slog.NewTextHandler(&logs, nil))}).Sync(context.Background(), r, []byte("small\n"))
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	assertDest(t, r, "small\n")
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
		t.Errorf("sync allocated %d MiB for a 256 MiB dest", alloc>>20)
	}
	if _, err := os.Stat(r.Dest + ".bak"); !os.IsNotExist(err) || !strings.Contains(logs.String(), "no backup: dest is too large") {
		t.Errorf("backup: %v; log %q", err, logs.String())
	}
}

// {{.src}} and {{.dest}} reach /bin/sh as one word each, whatever they hold and whether
// the command quotes them or not: nothing is split, nothing runs.
func TestExpandCmdQuotesForTheShell(t *testing.T) {
	dir := t.TempDir()
	injected := filepath.Join(dir, "INJECTED")
	for _, name := range []string{
		"plain.cfg", "a b.cfg", "x; touch " + injected, "q'uote", `d"q`, "$(touch " + injected + ")",
		"`touch " + injected + "`", `back\slash`, "new\nline", "$HOME", "*", "\xff\xfe",
	} {
		dest := filepath.Join(dir, name)
		for _, cmd := range []string{
			`printf %s {{.dest}}`, `printf %s "{{.dest}}"`, `printf %s '{{.dest}}'`,
			`printf '%s' "{{.dest}}"`, `printf "%s" {{.dest}}`, `printf \"%s {{.dest}}`,
		} {
			line, err := expandCmd(cmd, "/src", dest)
			if err != nil {
				t.Fatalf("%q: %v", cmd, err)
			}
			out, err := runCommand(context.Background(), "check_cmd", line, 0)
			want := dest
			if strings.HasPrefix(cmd, `printf \"`) {
				want = `"` + dest
			}
			if err != nil || out != want {
				t.Errorf("%q with dest %q: ran %q, printed %q (%v); want %q", cmd, name, line, out, err, want)
			}
		}
	}
	if _, err := os.Stat(injected); err == nil {
		t.Fatal("a dest name ran a command")
	}
	// confd's usual commands read as before.
	if line, _ := expandCmd("haproxy -c -f {{.src}}", "/etc/haproxy/.haproxy.cfg123", ""); line != "haproxy -c -f /etc/haproxy/.haproxy.cfg123" {
		t.Errorf("haproxy -c -f {{.src}} = %q", line)
	}
	for _, bad := range []string{"x {{.nope}}", "x {{.src | printf}}", "{{if .src}}x{{end}}", "{{$x := .src}}"} {
		if _, err := expandCmd(bad, "a", "b"); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// What /healthz shows of a failed render: the class, the key or position, never a value
// or a command's output.
func TestSummaryHidesValuesAndOutput(t *testing.T) {
	const secret = "Rendered-Secret-9"
	_, cmdErr := runCommand(context.Background(), "check_cmd", "echo "+secret+"; exit 3", 0)
	_, timeoutErr := runCommand(context.Background(), "reload_cmd", "echo "+secret+"; sleep 5", 50*time.Millisecond)
	execErr := func(text string) error {
		tm, err := template.Parse("t.tmpl", text)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = tm.Execute(template.MapSource{KV: map[string]string{"/pw": secret}}, template.Options{})
		return err
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("/etc/x: %w", cmdErr), "check_cmd failed: exit status 3"},
		{fmt.Errorf("/etc/x: %w", timeoutErr), "reload_cmd timed out after 50ms"},
		{execErr("a\n{{atoi (getv \"/pw\")}}"), "template error at t.tmpl:2:"},
		{execErr("{{json (getv \"/pw\")}}"), "template error at t.tmpl:1:"},
		{execErr("{{getv \"/nope\"}}"), "template: key does not exist: /nope"},
	} {
		if !strings.Contains(c.err.Error(), secret) && !strings.Contains(c.want, "key does not exist") {
			t.Fatalf("the error itself holds no secret, the case proves nothing: %v", c.err)
		}
		got := Summary(c.err)
		if strings.Contains(got, secret) || !strings.HasPrefix(got, c.want) {
			t.Errorf("Summary(%v) = %q, want %q... without the value", c.err, got, c.want)
		}
	}
}
