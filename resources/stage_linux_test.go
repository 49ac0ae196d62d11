package resources

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
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
