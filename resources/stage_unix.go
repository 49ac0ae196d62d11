//go:build unix

package resources

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"github.com/google/renameio/v2"
)

// newStage creates the stage file of dest in dir, mode 0600 until its content is written.
func newStage(dest, dir string) (*renameio.PendingFile, error) {
	return renameio.NewPendingFile(dest, renameio.WithPermissions(0o600), renameio.WithTempDir(dir))
}

func ownerMatches(fi fs.FileInfo, uid, gid int) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	return (uid < 0 || int(st.Uid) == uid) && (gid < 0 || int(st.Gid) == gid)
}

// ownerOf is the uid and gid of a file herald stat'ed.
func ownerOf(fi fs.FileInfo) (uid, gid int, ok bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return int(st.Uid), int(st.Gid), true
}

func idOf(fi fs.FileInfo) (fileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{uint64(st.Dev), uint64(st.Ino)}, true
}

// WriteFileAtomic replaces path with data in one rename, fsynced: for herald's own
// small files (a fan-out resource's record). The mode is perm exactly, whatever the
// file it replaces had (renameio's WriteFile would keep that one's).
func WriteFileAtomic(path string, data []byte, perm fs.FileMode) error {
	f, err := renameio.NewPendingFile(path, renameio.WithPermissions(perm), renameio.WithStaticPermissions(perm))
	if err != nil {
		return err
	}
	defer f.Cleanup()
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.CloseAtomicallyReplace()
}

// CheckOwnFile refuses a file herald is to trust (a fan-out resource's record, which
// says what herald may delete) unless it is a regular file owned by herald's user or
// root and writable by no one else: in a shared directory (a sticky /tmp), another
// user could otherwise plant one naming files herald would then remove.
func CheckOwnFile(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	uid, _, ok := ownerOf(fi)
	switch {
	case !fi.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file", path)
	case ok && uid != os.Geteuid() && uid != 0:
		return fmt.Errorf("%s belongs to uid %d, not to herald's user", path, uid)
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("%s is writable by others (mode %04o)", path, fi.Mode().Perm())
	}
	return nil
}
