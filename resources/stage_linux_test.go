package resources

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dirEvents watches dir with inotify while fn runs and returns each event's name with
// its mask.
func dirEvents(t *testing.T, dir string, fn func()) []struct {
	name string
	mask uint32
} {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MODIFY|unix.IN_CLOSE_WRITE|unix.IN_MOVED_FROM|unix.IN_MOVED_TO|unix.IN_DELETE); err != nil {
		t.Fatal(err)
	}
	fn()
	var evs []struct {
		name string
		mask uint32
	}
	buf := make([]byte, 64<<10)
	n, err := unix.Read(fd, buf)
	if err != nil {
		t.Fatalf("no inotify event: %v", err)
	}
	for off := 0; off+unix.SizeofInotifyEvent <= n; {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
		name := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
		evs = append(evs, struct {
			name string
			mask uint32
		}{string(bytes.TrimRight(name, "\x00")), ev.Mask})
		off += unix.SizeofInotifyEvent + int(ev.Len)
	}
	return evs
}

// A program that lists or watches dest's directory (a conf.d loader, an inotify-based
// reloader) never finds a half-written file under any name: the stage gets its name
// only once its content is written and on disk, so the directory sees it created and
// renamed over dest, never written to.
func TestSyncStageIsNamedOnlyWhenComplete(t *testing.T) {
	for _, check := range []string{"", "grep -qx new {{.src}}"} {
		r := newRes(t)
		writeDest(t, r, "old\n", 0o644)
		r.CheckCmd = check
		dir := filepath.Dir(r.Dest)
		evs := dirEvents(t, dir, func() {
			if _, err := (&Syncer{}).Sync(context.Background(), r, []byte("new\n")); err != nil {
				t.Fatal(err)
			}
		})
		assertDest(t, r, "new\n")
		var stage string
		for _, ev := range evs {
			if ev.mask&unix.IN_MOVED_FROM != 0 {
				stage = ev.name
			}
		}
		if stage == "" {
			t.Fatalf("check %q: no rename over dest among %v", check, evs)
		}
		for _, ev := range evs {
			if ev.name == stage && ev.mask&(unix.IN_MODIFY|unix.IN_CLOSE_WRITE) != 0 {
				t.Fatalf("check %q: the stage %s was written under its name: %v", check, stage, evs)
			}
		}
		if names := dirEntries(t, dir); len(names) != 1 {
			t.Fatalf("stage file left behind: %v", names)
		}
		if _, err := os.Stat(filepath.Join(dir, stage)); !os.IsNotExist(err) {
			t.Fatalf("stage %s: %v", stage, err)
		}
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func syncSpare(t *testing.T, r *Resource, content string) {
	t.Helper()
	if _, err := (&Syncer{}).Sync(context.Background(), r, []byte(content)); err != nil {
		t.Fatal(err)
	}
	assertDest(t, r, content)
}

// With spare_file, a change swaps dest with its spare: the inode dest had becomes the
// spare and is the one rewritten at the next change; no other file appears.
func TestSyncSpareFileSwapsTwoInodes(t *testing.T) {
	r := newRes(t)
	r.SpareFile = true
	r.Mode, r.ModeSet = 0o640, true
	spare := spareName(r.Dest)
	syncSpare(t, r, "v1\n") // no dest yet: a plain rename
	first := inode(t, r.Dest)
	syncSpare(t, r, "v2\n")
	if got := inode(t, spare); got != first {
		t.Fatalf("spare is inode %d, want dest's previous %d", got, first)
	}
	second := inode(t, r.Dest)
	syncSpare(t, r, "v3\n")
	if got := inode(t, r.Dest); got != first {
		t.Fatalf("dest is inode %d, want the spare's %d rewritten", got, first)
	}
	if got := inode(t, spare); got != second {
		t.Fatalf("spare is inode %d, want %d", got, second)
	}
	if fi, _ := os.Stat(r.Dest); fi.Mode().Perm() != 0o640 {
		t.Fatalf("dest mode %v", fi.Mode())
	}
	if names := dirEntries(t, filepath.Dir(r.Dest)); len(names) != 2 {
		t.Fatalf("want dest and its spare, got %v", names)
	}
	// The spare is overwritten in place: a shorter content leaves nothing of the longer.
	syncSpare(t, r, "a much longer fourth version\n")
	syncSpare(t, r, "a much longer fifth version, longer still\n")
	syncSpare(t, r, "6\n")
	syncSpare(t, r, "7\n")
}

// A reader that opened dest before a change (or mapped it) still holds the inode that
// became the spare: herald must not rewrite it under them, nor a spare linked under
// another name.
func TestSyncSpareFileInUseIsNotRewritten(t *testing.T) {
	for _, hold := range []string{"open", "mmap", "link"} {
		t.Run(hold, func(t *testing.T) {
			r := newRes(t)
			r.SpareFile = true
			syncSpare(t, r, "v1\n")
			syncSpare(t, r, "v2\n") // the spare now holds v1's inode
			spare := spareName(r.Dest)
			read := func() string { b, _ := os.ReadFile(spare); return string(b) }
			switch hold {
			case "open":
				f, err := os.Open(spare)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				read = func() string {
					b := make([]byte, 64)
					n, _ := f.ReadAt(b, 0)
					return string(b[:n])
				}
			case "mmap":
				f, err := os.Open(spare)
				if err != nil {
					t.Fatal(err)
				}
				m, err := unix.Mmap(int(f.Fd()), 0, 3, unix.PROT_READ, unix.MAP_SHARED)
				f.Close() // the mapping keeps the file open
				if err != nil {
					t.Fatal(err)
				}
				defer unix.Munmap(m)
				read = func() string { return string(m) }
			case "link":
				other := filepath.Join(t.TempDir(), "other")
				if err := os.Link(spare, other); err != nil {
					t.Fatal(err)
				}
				read = func() string { b, _ := os.ReadFile(other); return string(b) }
			}
			syncSpare(t, r, "v3\n")
			if got := read(); got != "v1\n" {
				t.Fatalf("the held inode now reads %q, want v1 untouched", got)
			}
			syncSpare(t, r, "v4\n") // and the spare herald made instead works as one
			if got := read(); got != "v1\n" {
				t.Fatalf("the held inode now reads %q, want v1 untouched", got)
			}
		})
	}
}

// A failed check with spare_file leaves dest byte-identical and no spare holding the
// rejected content; the check saw the content at the spare's path.
func TestSyncSpareFileCheckFailure(t *testing.T) {
	r := newRes(t)
	r.SpareFile = true
	syncSpare(t, r, "v1\n")
	syncSpare(t, r, "v2\n")
	r.CheckCmd = `grep -qx bad {{.src}} && test {{.src}} = ` + spareName(r.Dest) + ` && exit 3`
	_, err := (&Syncer{}).Sync(context.Background(), r, []byte("bad\n"))
	if err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("err = %v, want the check's exit status 3", err)
	}
	assertDest(t, r, "v2\n")
	if names := dirEntries(t, filepath.Dir(r.Dest)); len(names) != 1 {
		t.Fatalf("want dest alone, got %v", names)
	}
	r.CheckCmd = ""
	syncSpare(t, r, "v3\n")
}

// Turning spare_file off: the next start removes the spare; a resource that keeps it
// keeps its spare.
func TestRemoveStaleStagesRemovesSpareOfResourceWithout(t *testing.T) {
	dir := t.TempDir()
	on := &Resource{Name: "on", Dest: filepath.Join(dir, "on"), UID: -1, GID: -1, SpareFile: true}
	off := &Resource{Name: "off", Dest: filepath.Join(dir, "off"), UID: -1, GID: -1, SpareFile: true}
	for _, r := range []*Resource{on, off} {
		syncSpare(t, r, "v1\n")
		syncSpare(t, r, "v2\n")
	}
	off.SpareFile = false
	RemoveStaleStages([]*Resource{on, off}, nil)
	if got := dirEntries(t, dir); !slices.Equal(got, []string{".on.herald-spare", "off", "on"}) {
		t.Fatalf("dir holds %v", got)
	}
}

// A spare swapped for a symlink (by someone who can write dest's directory) is replaced,
// never written through.
func TestSyncSpareFileSymlinkIsReplaced(t *testing.T) {
	r := newRes(t)
	r.SpareFile = true
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	syncSpare(t, r, "v1\n")
	if err := os.Symlink(victim, spareName(r.Dest)); err != nil {
		t.Fatal(err)
	}
	syncSpare(t, r, "v2\n")
	syncSpare(t, r, "v3\n")
	if b, _ := os.ReadFile(victim); string(b) != "mine\n" {
		t.Fatalf("victim now holds %q", b)
	}
	if fi, err := os.Lstat(spareName(r.Dest)); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("spare: %v %v", fi, err)
	}
}

// heldDeleted counts this process's open files that are a deleted file of dir: the
// inodes a Syncer holds (holdInode).
func heldDeleted(t *testing.T, dir string) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range es {
		l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err == nil && strings.HasPrefix(l, dir+"/") && strings.HasSuffix(l, " (deleted)") {
			n++
		}
	}
	return n
}

// Within a burst the inodes the renames replace stay allocated, so that freeing them
// (a discard the device must finish, on a file system mounted with discard) is not in
// the way of the next file; once the burst's directories are fsynced, they are freed.
// Without a burst (no deferred directory fsync), a replaced inode is freed at once.
func TestSyncFreesReplacedInodesAfterTheBurst(t *testing.T) {
	dir := t.TempDir()
	s := &Syncer{DeferDirSync: true}
	rs := make([]*Resource, 5)
	for i := range rs {
		rs[i] = &Resource{Name: "t.toml", Dest: filepath.Join(dir, "f"+strconv.Itoa(i)), UID: -1, GID: -1}
		writeDest(t, rs[i], "old\n", 0o644)
	}
	for _, r := range rs {
		if _, err := s.Sync(context.Background(), r, []byte("new\n")); err != nil {
			t.Fatal(err)
		}
	}
	if n := heldDeleted(t, dir); n != len(rs) {
		t.Fatalf("within the burst %d replaced inodes are held, want %d", n, len(rs))
	}
	s.SyncDirs([]string{dir})
	for i := 0; heldDeleted(t, dir) > 0; i++ {
		if i == 500 {
			t.Fatalf("%d replaced inodes still held 5 s after the burst ended", heldDeleted(t, dir))
		}
		time.Sleep(10 * time.Millisecond)
	}

	now := &Syncer{}
	if _, err := now.Sync(context.Background(), rs[0], []byte("newer\n")); err != nil {
		t.Fatal(err)
	}
	if n := heldDeleted(t, dir); n != 0 {
		t.Fatalf("without a burst %d replaced inodes are held after Sync, want 0", n)
	}
}

// A burst holds no more replaced inodes than an eighth of the open file limit: a
// burst of many files never makes herald run out of file descriptors.
func TestSyncHeldInodesBoundedByFileLimit(t *testing.T) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	open, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	low := rl
	low.Cur = uint64(len(open) + 64) // room for the test's own files
	want := int(low.Cur / 8)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	defer unix.Setrlimit(unix.RLIMIT_NOFILE, &rl)
	dir := t.TempDir()
	s := &Syncer{DeferDirSync: true}
	for i := range want + 5 {
		r := &Resource{Name: "t.toml", Dest: filepath.Join(dir, "f"+strconv.Itoa(i)), UID: -1, GID: -1}
		writeDest(t, r, "old\n", 0o644)
		if _, err := s.Sync(context.Background(), r, []byte("new\n")); err != nil {
			t.Fatal(err)
		}
	}
	if n := heldDeleted(t, dir); n != want {
		t.Fatalf("a burst of %d replacements under a limit of %d files holds %d inodes, want %d", want+5, low.Cur, n, want)
	}
	s.SyncDirs([]string{dir})
}

// On network file systems and FUSE herald does not hold the replaced file: the freeing
// is the server's (or the FUSE daemon's) anyway, and an NFS client would rename the
// held file to a hidden .nfsXXXX name in dest's directory, a rename and a removal
// more per file. Local file systems are held.
func TestHoldableFileSystems(t *testing.T) {
	for _, c := range []struct {
		name string
		typ  uint32
		want bool
	}{
		{"ext4", unix.EXT4_SUPER_MAGIC, true},
		{"xfs", unix.XFS_SUPER_MAGIC, true},
		{"tmpfs", unix.TMPFS_MAGIC, true},
		{"nfs", unix.NFS_SUPER_MAGIC, false},
		{"fuse (sshfs)", unix.FUSE_SUPER_MAGIC, false},
		{"cifs", unix.CIFS_SUPER_MAGIC, false},
		{"smb2", unix.SMB2_SUPER_MAGIC, false},
		{"9p", unix.V9FS_MAGIC, false},
	} {
		if got := holdable(c.typ); got != c.want {
			t.Errorf("holdable(%s) = %v, want %v", c.name, got, c.want)
		}
	}
}
