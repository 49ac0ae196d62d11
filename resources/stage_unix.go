//go:build unix

package resources

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"

	"github.com/google/renameio/v2"
)

// stageFile is dest's new content until it replaces dest. Where the file system allows
// (Linux: ext4, XFS, btrfs, tmpfs), it is an O_TMPFILE inode, which has no name until
// Name gives it one: nobody listing or globbing the directory meets a half-written
// file, and a crash leaves no partial file behind. Elsewhere it is renameio's named
// stage file, created 0600.
type stageFile struct {
	*os.File
	dest, path string // path is "" while the inode has no name
	named      *renameio.PendingFile
	spare      bool     // dest's spare (spare_file), swapped with dest
	leased     bool     // a spare under openSpare's write lease
	done       bool     // renamed over dest
	old        *os.File // the inode the rename replaced, held (holdInode) or nil
}

// Replaced is the inode dest had before the rename, held open so that freeing it is
// left to its Close (see holdInode), or nil.
func (s *stageFile) Replaced() *os.File { return s.old }

// rename runs the rename of the stage over dest, holding dest's inode across it.
func (s *stageFile) rename(rename func() error) error {
	s.old = holdInode(s.dest)
	if err := rename(); err != nil {
		if s.old != nil {
			s.old.Close()
			s.old = nil
		}
		return err
	}
	s.done = true
	return nil
}

// newStage opens the stage file of dest in dir, mode 0600 until its content is written.
// unnamed allows an O_TMPFILE inode.
func newStage(dest, dir string, unnamed bool) (*stageFile, error) {
	if unnamed {
		f, err := openUnnamed(dir, "."+filepath.Base(dest))
		if err == nil {
			return &stageFile{File: f, dest: dest}, nil
		}
		if !errors.Is(err, errors.ErrUnsupported) {
			return nil, err
		}
	}
	p, err := renameio.NewPendingFile(dest, renameio.WithPermissions(0o600), renameio.WithTempDir(dir))
	if err != nil {
		return nil, err
	}
	return &stageFile{File: p.File, dest: dest, path: p.Name(), named: p}, nil
}

// newSpareStage stages dest's content in dest's spare (spare_file): the inode dest had
// before its last change, kept beside it and swapped with dest by each replace
// (renameat2 RENAME_EXCHANGE), so that a change creates and frees no inode. On ext4
// without a journal mounted discard that is what a replacement costs most: each new
// file's fsync writes its directory too, and each freed file waits for the device to
// discard its blocks (200 files replaced in such an image, BenchmarkReplace200: 29 ms
// p50 against 55 ms with unnamed stages and the replaced inodes freed after the burst,
// 119 ms freed in the rename; without discard 24 against 27 ms). A spare someone
// else may still read (open, mapped, or linked under another name; see openSpare) is
// never rewritten: it is unlinked, its readers keep what they have, and a new one is
// made. The burst's directory fsync makes each swap durable before the next change
// rewrites the inode it moved out of dest.
func newSpareStage(dest string) (*stageFile, error) {
	sp := spareName(dest)
	f, ok, err := openSpare(sp)
	if ok {
		return &stageFile{File: f, dest: dest, path: sp, spare: true, leased: true}, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		// There, but not to be rewritten, or not a file herald opens (a symlink, a
		// directory): replaced, never written through.
		if err := os.Remove(sp); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	f, err = os.OpenFile(sp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	return &stageFile{File: f, dest: dest, path: sp, spare: true}, nil
}

// release cuts a rewritten spare to what was written and ends its write lease: before
// anyone (the check command) opens it.
func (s *stageFile) release() error {
	if !s.leased {
		return nil
	}
	s.leased = false
	defer releaseLease(s.File)
	n, err := s.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	return s.Truncate(n)
}

// Unnamed says the stage has no name yet: Name fsyncs it, then gives it one.
func (s *stageFile) Unnamed() bool { return s.path == "" }

// Name returns the stage's path, first giving an unnamed stage one next to dest once
// its content, owner and mode are on disk: on ext4 without a journal the fsync of a
// file that has a new name writes its directory too, once per file, serialized on the
// directory's lock; fsynced before it is linked, it leaves that to the one directory
// fsync of the burst (200 files replaced on this VM's disk, BenchmarkReplace200: 42-54
// ms p50 against 55-69 ms with named stages; on a journaled ext4 it costs a little, the
// orphan-list work of O_TMPFILE: 38-40 against 34-38 ms). The name has the pattern of
// renameio's (see stageNameRe), so a stale one is found and removed as theirs are.
func (s *stageFile) Name() (string, error) {
	if err := s.release(); err != nil {
		return "", err
	}
	if s.path != "" {
		return s.path, nil
	}
	if err := s.Sync(); err != nil {
		return "", err
	}
	dir, base := filepath.Split(s.dest)
	for range 10 {
		p := filepath.Join(dir, fmt.Sprintf(".%s%019d", base, rand.Int64()))
		err := linkUnnamed(s.File, p)
		if err == nil {
			s.path = p
			return p, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("name stage file %s: %w", p, err)
		}
	}
	return "", fmt.Errorf("name stage file in %s: every name tried exists", dir)
}

// CloseAtomicallyReplace makes the stage durable, closes it and renames it over dest.
func (s *stageFile) CloseAtomicallyReplace() error {
	if s.named != nil {
		return s.rename(s.named.CloseAtomicallyReplace)
	}
	if s.spare {
		if err := s.release(); err != nil {
			return err
		}
		if err := s.Sync(); err != nil {
			return err
		}
		if err := s.Close(); err != nil {
			return err
		}
		if exchange(s.path, s.dest) == nil {
			s.done = true
			return nil
		}
		// No dest yet (its first write), or no RENAME_EXCHANGE on this file system:
		// a plain rename, and the next change makes a new spare.
		return s.rename(func() error { return os.Rename(s.path, s.dest) })
	}
	p, err := s.Name() // fsyncs when unnamed; an O_TMPFILE stage is fsynced once named
	if err != nil {
		return err
	}
	if err := s.Close(); err != nil {
		return err
	}
	return s.rename(func() error { return os.Rename(p, s.dest) })
}

// Cleanup closes the stage and removes its name, unless it replaced dest.
func (s *stageFile) Cleanup() {
	if s.named != nil {
		s.named.Cleanup()
		return
	}
	s.release()
	s.Close()
	if s.path != "" && !s.done {
		os.Remove(s.path)
	}
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
