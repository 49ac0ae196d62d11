//go:build !unix

package resources

import (
	"errors"
	"io/fs"
	"os"
	"runtime"
)

// errNoAtomicReplace: herald's sync replaces a file with one rename over it, fsynced,
// with mode and owner set first; this platform does not offer those guarantees, so it
// refuses to write rather than write differently. get, services and check still work.
var errNoAtomicReplace = errors.New("writing files is not supported on " + runtime.GOOS + ": it needs an atomic rename over the destination")

// stageFile has the shape of the unix one; it is never made here.
type stageFile struct{ *os.File }

func (stageFile) Cleanup()                      {}
func (stageFile) CloseAtomicallyReplace() error { return errNoAtomicReplace }
func (stageFile) Unnamed() bool                 { return false }
func (stageFile) Name() (string, error)         { return "", errNoAtomicReplace }
func (stageFile) Replaced() *os.File            { return nil }

func maxHeldInodes() int { return 0 }

func newStage(string, string, bool) (*stageFile, error) { return nil, errNoAtomicReplace }
func newSpareStage(string) (*stageFile, error)          { return nil, errNoAtomicReplace }

func ownerMatches(fs.FileInfo, int, int) bool { return true }

func ownerOf(fs.FileInfo) (uid, gid int, ok bool) { return 0, 0, false }

// idOf: no inode numbers here, so the conf.d walk detects loops by path only.
func idOf(fs.FileInfo) (fileID, bool) { return fileID{}, false }

func (stageFile) Chown(int, int) error { return errNoAtomicReplace }

// WriteFileAtomic is refused here, as every write is (errNoAtomicReplace).
func WriteFileAtomic(path string, data []byte, perm fs.FileMode) error {
	return errNoAtomicReplace
}

// CheckOwnFile only checks that path is a regular file: this platform's modes and
// owners are not unix's.
func CheckOwnFile(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return errors.New(path + " is not a regular file")
	}
	return nil
}
