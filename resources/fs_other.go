//go:build unix && !linux

package resources

import (
	"io"
	"io/fs"
	"os"
	"syscall"
)

func startWriteback(*os.File) {}

func readNoFollow(path string, limit int64, read func(fs.FileInfo) bool) ([]byte, fs.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
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
