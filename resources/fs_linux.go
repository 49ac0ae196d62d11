package resources

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing f's data without waiting for it, so
// that the blocks of every file of a batch are allocated before the batch's first fsync.
// It is only a hint: the fsync that follows is what makes the data durable.
func startWriteback(f *os.File) {
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			_ = unix.SyncFileRange(int(fd), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
		})
	}
}

// readNoFollow opens path without following a symlink (the error is then ELOOP) and
// without blocking on a FIFO, and returns what fstat says of the file it opened. When
// read approves of that info and the file is regular, it also returns the file's content,
// at most limit+1 bytes of it (more means the file is over limit). Stat and read concern
// one inode: a file swapped in between cannot be read in its place.
//
// It does what os.Open, Stat and ReadFile do in 4 system calls instead of 10: os.Open
// tries to register every file with the network poller (fcntl, epoll_ctl, fcntl), which
// a change to 200 files pays 200 times. O_NOATIME, where allowed (herald owns the file
// or runs as root), spares the file system an inode update for reading a file herald
// just wrote.
func readNoFollow(path string, limit int64, read func(fs.FileInfo) bool) ([]byte, fs.FileInfo, error) {
	const flags = unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NONBLOCK
	fd, err := openRetry(path, flags|unix.O_NOATIME)
	if errors.Is(err, syscall.EPERM) {
		fd, err = openRetry(path, flags)
	}
	if err != nil {
		return nil, nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	fi := &statInfo{name: filepath.Base(path)}
	if err := syscall.Fstat(fd, &fi.st); err != nil {
		return nil, nil, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	if !fi.Mode().IsRegular() || !read(fi) {
		return nil, fi, nil
	}
	// Ask one byte more than the size: a regular file returns what it has, so fewer
	// bytes mean its end (a short read anyway would only make herald rewrite an
	// unchanged file). A file that grew since the fstat is read on, up to limit+1.
	size := min(fi.st.Size, limit)
	b := make([]byte, size+1)
	n := 0
	for {
		m, err := readRetry(fd, b[n:])
		if err != nil {
			return nil, nil, &fs.PathError{Op: "read", Path: path, Err: err}
		}
		n += m
		if m == 0 || n < len(b) || int64(n) > limit {
			return b[:n], fi, nil
		}
		b = append(b, make([]byte, min(int64(len(b)), limit+1-int64(len(b))))...)
	}
}

// statInfo is fs.FileInfo from an fstat, as os.Stat would build it.
type statInfo struct {
	name string
	st   syscall.Stat_t
}

func (s *statInfo) Name() string       { return s.name }
func (s *statInfo) Size() int64        { return s.st.Size }
func (s *statInfo) ModTime() time.Time { return time.Unix(s.st.Mtim.Unix()) }
func (s *statInfo) IsDir() bool        { return s.Mode().IsDir() }
func (s *statInfo) Sys() any           { return &s.st }

func (s *statInfo) Mode() fs.FileMode {
	m := fs.FileMode(s.st.Mode & 0o777)
	switch s.st.Mode & syscall.S_IFMT {
	case syscall.S_IFBLK:
		m |= fs.ModeDevice
	case syscall.S_IFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case syscall.S_IFDIR:
		m |= fs.ModeDir
	case syscall.S_IFIFO:
		m |= fs.ModeNamedPipe
	case syscall.S_IFLNK:
		m |= fs.ModeSymlink
	case syscall.S_IFSOCK:
		m |= fs.ModeSocket
	}
	if s.st.Mode&syscall.S_ISUID != 0 {
		m |= fs.ModeSetuid
	}
	if s.st.Mode&syscall.S_ISGID != 0 {
		m |= fs.ModeSetgid
	}
	if s.st.Mode&syscall.S_ISVTX != 0 {
		m |= fs.ModeSticky
	}
	return m
}

func openRetry(path string, flags int) (int, error) {
	for {
		fd, err := unix.Open(path, flags, 0)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

func readRetry(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Read(fd, b)
		if err != unix.EINTR {
			return n, err
		}
	}
}
