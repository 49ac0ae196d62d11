//go:build unix

package resources

import (
	"io/fs"
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
// small files (a fan-out resource's record).
func WriteFileAtomic(path string, data []byte, perm fs.FileMode) error {
	return renameio.WriteFile(path, data, perm)
}
