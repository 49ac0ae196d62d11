//go:build !unix

package resources

import (
	"io"
	"io/fs"
	"os"
	"syscall"
)

func startWriteback(*os.File) {}

// readNoFollow without O_NOFOLLOW: a link is refused by Lstat first. The window between
// Lstat and Open does not matter here, since this platform never writes dest (see
// errNoAtomicReplace): the read only serves --dry-run diffs and the in-sync test.
func readNoFollow(path string, limit int64, read func(fs.FileInfo) bool) ([]byte, fs.FileInfo, error) {
	if li, err := os.Lstat(path); err != nil {
		return nil, nil, err
	} else if li.Mode()&fs.ModeSymlink != 0 {
		return nil, li, &fs.PathError{Op: "open", Path: path, Err: syscall.ELOOP} // as O_NOFOLLOW says it
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || !read(fi) {
		return nil, fi, err
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	return b, fi, err
}
