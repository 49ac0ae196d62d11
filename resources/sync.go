package resources

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/aymanbagabas/go-udiff"
)

// Syncer writes rendered content to a resource's dest safely.
type Syncer struct {
	DryRun        bool // print a diff, write nothing, run nothing
	SyncOnly      bool // write files, run no check or reload command
	KeepStageFile bool // leave the stage file in place (for debugging a check_cmd)
	// DeferDirSync leaves the directory fsync after the rename to the caller, who syncs
	// each directory once per burst (SyncDirs) instead of once per file.
	DeferDirSync bool
	Diff         io.Writer // where DryRun diffs go
	Log          *slog.Logger
	// Checks bounds the check commands running at once (default GOMAXPROCS): many
	// resources sync in parallel, and a check such as haproxy -c is a whole process.
	Checks int

	once   sync.Once
	checks chan struct{}
	group  commitGroup

	// swapped holds the dests whose spare exchange awaits its directory's fsync: their
	// spare may still be dest on disk, so it is not rewritten before that fsync.
	mu      sync.Mutex
	swapped map[string]bool
	// held are the inodes the burst's renames replaced, up to heldCap: freed once its
	// directories are fsynced, away from the renames (see holdInode).
	held    []*os.File
	heldCap int
}

// hold keeps old, the inode a deferred rename replaced, until SyncDirs.
func (s *Syncer) hold(old *os.File) {
	if old == nil {
		return
	}
	s.mu.Lock()
	if len(s.held) == 0 {
		s.heldCap = maxHeldInodes()
	}
	if len(s.held) < s.heldCap {
		s.held = append(s.held, old)
		old = nil
	}
	s.mu.Unlock()
	if old != nil {
		old.Close()
	}
}

// settleSwap fsyncs dest's directory if dest's last exchange is not durable yet (a
// second change to dest within one burst), before its spare is rewritten.
func (s *Syncer) settleSwap(dest, dir string) {
	s.mu.Lock()
	pending := s.swapped[dest]
	delete(s.swapped, dest)
	s.mu.Unlock()
	if pending {
		syncDir(dir)
	}
}

func (s *Syncer) swappedIn(dest string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.swapped == nil {
		s.swapped = map[string]bool{}
	}
	s.swapped[dest] = true
}

// SyncDirs fsyncs each directory once: the renames of a burst are durable before its
// reload commands run, and before a later change rewrites a spare.
func (s *Syncer) SyncDirs(dirs []string) {
	syncDirs(dirs)
	s.mu.Lock()
	clear(s.swapped) // the burst's directories are all of those it wrote
	held := s.held
	s.held = nil
	s.mu.Unlock()
	if len(held) > 0 {
		// Freed behind the reload commands: the next burst's files need not wait.
		go func() {
			for _, f := range held {
				f.Close()
			}
		}()
	}
}

// writeError is a failure to put the file in place (a full disk, a read-only file
// system, a directory not writable yet): worth retrying by itself, unlike a template or
// check failure, which waits for a change.
type writeError struct{ error }

func (e writeError) Unwrap() error { return e.error }

// IsWriteError reports whether err is a failure to put the file in place, which passes
// by itself (a full disk) and is worth retrying, unlike a template or check failure.
func IsWriteError(err error) bool {
	var we writeError
	return errors.As(err, &we)
}

// Outcome says what a sync did.
type Outcome struct {
	Changed bool   // dest was (or, in a dry run, would be) replaced
	Reload  string // the expanded reload command to run, "" for none
	Dir     string // dest's directory, when its fsync was deferred
}

// maxRead bounds what herald reads of an existing dest beyond a file of content's size,
// to back it up or diff it: a dest swapped for a huge file must not exhaust memory.
const maxRead = 64 << 20

// errSymlinkHint says why a symlinked dest is refused and what to do about it.
const errSymlinkHint = "herald would replace the link, not the file it points to; remove the link, point dest at the real file, or set follow_symlink = true"

// specialBits are the mode bits beyond the permissions that a resource may ask for.
const specialBits = fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky

// fileMode is the part of a mode that Sync sets and compares.
func fileMode(fi fs.FileInfo) fs.FileMode { return fi.Mode() & (fs.ModePerm | specialBits) }

// octal spells a mode as chmod(1) does, special bits included: 4755.
func octal(m fs.FileMode) string {
	n := uint32(m.Perm())
	for flag, bit := range map[fs.FileMode]uint32{fs.ModeSetuid: 0o4000, fs.ModeSetgid: 0o2000, fs.ModeSticky: 0o1000} {
		if m&flag != 0 {
			n |= bit
		}
	}
	return fmt.Sprintf("%04o", n)
}

// Sync makes dest hold content with the resource's mode and owner. When dest already
// does, nothing happens. Otherwise content goes to a stage file in dest's directory
// (see stageFile: unnamed until complete, or created 0600, so nobody reads a
// half-written file), which is given its owner and mode, fsynced (data and metadata in
// one call, so a crash never leaves an empty dest; together with the other syncs in
// flight, see commitGroup), checked with check_cmd and renamed over dest; a named stage
// is checked before its fsync. Any failure before the rename removes the stage file and
// leaves dest byte-identical. The reload command is returned,
// not run: the runner runs each distinct command once per burst.
//
// A dest that is a symlink is refused unless the resource sets follow_symlink: the
// rename would replace the link, and reading through it (for a diff or a backup) would
// hand whatever it points to to whoever can write dest's directory.
func (s *Syncer) Sync(ctx context.Context, r *Resource, content []byte) (Outcome, error) {
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dest, old, oldInfo, err := readDest(r, len(content), s.DryRun || r.Backup)
	if err != nil {
		return Outcome{}, err
	}
	mode, uid, gid := wanted(r, oldInfo)
	if oldInfo != nil && oldInfo.Size() == int64(len(content)) && bytes.Equal(old, content) && fileMode(oldInfo) == mode && ownerMatches(oldInfo, uid, gid) {
		return Outcome{}, nil
	}
	if s.DryRun {
		if s.Diff != nil {
			fmt.Fprint(s.Diff, diff(r.Dest, old, content, oldInfo, mode))
		}
		return Outcome{Changed: true}, nil
	}

	m := s.group.join()
	defer m.leave()
	dir := filepath.Dir(dest)
	stage, err := s.openStage(r, dest, dir)
	if err != nil {
		return Outcome{}, err
	}
	keep := false
	defer func() {
		if keep && s.KeepStageFile {
			stage.Close()
			return
		}
		stage.Cleanup() // no-op after a successful replace
	}()
	if err := fillStage(stage, r, content, uid, gid, mode, m, log); err != nil {
		return Outcome{}, err
	}
	if r.CheckCmd != "" && !s.SyncOnly {
		if keep, err = s.checkStage(ctx, r, stage, m, log); err != nil {
			return Outcome{}, err
		}
	}
	if r.Backup && oldInfo != nil {
		if err := backup(dest, old, oldInfo, log, r.Name); err != nil {
			return Outcome{}, fmt.Errorf("%s: backup: %w", r.Dest, err)
		}
	}
	m.arrive()
	if err := stage.CloseAtomicallyReplace(); err != nil {
		return Outcome{}, writeError{fmt.Errorf("%s: replace: %w", r.Dest, err)}
	}
	o := Outcome{Changed: true}
	// The rename is durable only once the directory entry is on disk.
	if s.DeferDirSync {
		o.Dir = dir
		if r.SpareFile {
			s.swappedIn(dest)
		}
		s.hold(stage.Replaced())
	} else {
		syncDir(dir)
		if old := stage.Replaced(); old != nil {
			old.Close()
		}
	}
	if r.ReloadCmd != "" && !s.SyncOnly {
		if o.Reload, err = expandVars(r.ReloadCmd, r.cmdVars(r.Dest)); err != nil {
			return o, fmt.Errorf("%s: reload_cmd: %w", r.Dest, err)
		}
	}
	return o, nil
}

// openStage makes dest's stage file in dir (see stageFile; newSpareStage with
// spare_file), making dir first with make_dirs.
func (s *Syncer) openStage(r *Resource, dest, dir string) (*stageFile, error) {
	if r.MakeDirs {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, writeError{fmt.Errorf("%s: make dirs: %w", r.Dest, err)}
		}
	}
	var stage *stageFile
	var err error
	if r.SpareFile {
		s.settleSwap(dest, dir)
		stage, err = newSpareStage(dest)
	} else {
		stage, err = newStage(dest, dir, true)
	}
	if err != nil {
		return nil, writeError{fmt.Errorf("%s: create stage file: %w", r.Dest, err)}
	}
	return stage, nil
}

// fillStage writes content to the stage, then gives it its owner and mode: without a
// name, or created 0600 (less if the umask says so), it cannot be read half-written.
// An unnamed stage then arrives in the commit group: it is fsynced before it gets a
// name (see stageFile.Name), which the check needs, so a failed check costs an fsync.
func fillStage(stage *stageFile, r *Resource, content []byte, uid, gid int, mode fs.FileMode, m *member, log *slog.Logger) error {
	if _, err := stage.Write(content); err != nil {
		return writeError{fmt.Errorf("%s: write stage file: %w", r.Dest, err)}
	}
	if err := setOwnerMode(stage.File, r, uid, gid, mode, log); err != nil {
		return fmt.Errorf("%s: %w", r.Dest, err)
	}
	startWriteback(stage.File)
	if stage.Unnamed() {
		m.arrive()
	}
	return nil
}

// checkStage runs the check command on the stage file, away from the commit group (a
// slow check holds only its own file). keep says the stage file is worth keeping: the
// check failed on it.
func (s *Syncer) checkStage(ctx context.Context, r *Resource, stage *stageFile, m *member, log *slog.Logger) (keep bool, err error) {
	path, err := stage.Name()
	if err != nil {
		return false, writeError{fmt.Errorf("%s: %w", r.Dest, err)}
	}
	cmd, err := expandVars(r.CheckCmd, r.cmdVars(path))
	if err != nil {
		return false, fmt.Errorf("%s: check_cmd: %w", r.Dest, err)
	}
	m.leave()
	out, err := s.check(ctx, cmd, r.CheckTimeout)
	m.rejoin()
	if err != nil {
		if s.KeepStageFile {
			log.Warn("stage file kept", "resource", r.Name, "stage", path)
		}
		return true, fmt.Errorf("%s: %w", r.Dest, err)
	}
	log.Debug("check_cmd passed", "resource", r.Name, "cmd", cmd, "output", out)
	return false, nil
}

// wanted returns the mode and owner dest must have: those configured, else those of
// the existing dest (confd keeps its mode; herald its owner too), else 0644 and -1
// (herald's own).
func wanted(r *Resource, oldInfo fs.FileInfo) (mode fs.FileMode, uid, gid int) {
	mode, uid, gid = r.Mode, r.UID, r.GID
	if oldInfo == nil {
		if !r.ModeSet {
			mode = 0o644
		}
		return mode, uid, gid
	}
	if !r.ModeSet {
		mode = fileMode(oldInfo)
	}
	if ouid, ogid, ok := ownerOf(oldInfo); ok {
		if uid < 0 {
			uid = ouid
		}
		if gid < 0 {
			gid = ogid
		}
	}
	return mode, uid, gid
}

// setOwnerMode gives the stage file its owner, then its mode: chown clears the setuid
// and setgid bits. An owner only kept from the old dest (none configured) that herald
// may not give (it is not root) is left as created, with a warning. Special bits the
// kernel silently drops (setgid for a group herald is not in) are an error rather than
// a file that never matches and is rewritten on every render.
func setOwnerMode(f *os.File, r *Resource, uid, gid int, mode fs.FileMode, log *slog.Logger) error {
	if uid >= 0 || gid >= 0 {
		err := f.Chown(uid, gid)
		if errors.Is(err, fs.ErrPermission) && (r.UID >= 0 || r.GID >= 0) && (uid != r.UID || gid != r.GID) {
			err = f.Chown(r.UID, r.GID) // keep only what was configured
		}
		switch {
		case errors.Is(err, fs.ErrPermission) && r.UID < 0 && r.GID < 0:
			log.Warn("cannot keep dest's owner (herald is not root): the new file is herald's", "resource", r.Name, "dest", r.Dest, "owner", fmt.Sprintf("%d:%d", uid, gid))
		case err != nil:
			return fmt.Errorf("chown %d:%d: %w", uid, gid, err)
		}
	}
	if err := f.Chmod(mode); err != nil {
		return fmt.Errorf("chmod %s: %w", octal(mode), err)
	}
	if mode&specialBits != 0 {
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("chmod %s: %w", octal(mode), err)
		}
		if got := fileMode(fi); got != mode {
			return fmt.Errorf("chmod %s: the file got %s: herald may not set these bits here (setgid needs membership of the file's group)", octal(mode), octal(got))
		}
	}
	return nil
}

// backup writes old, dest's content before this sync, to dest.bak: a new file (never
// one opened as it is, whoever made it), staged next to dest and renamed into place,
// with the owner and mode dest had. A dest over maxRead is not backed up (a warning says
// so) rather than read whole into memory.
func backup(dest string, old []byte, oldInfo fs.FileInfo, log *slog.Logger, name string) error {
	if old == nil || int64(len(old)) > maxRead {
		log.Warn("no backup: dest is too large", "resource", name, "dest", dest, "size", oldInfo.Size(), "limit", maxRead)
		return nil
	}
	bak, err := newStage(dest+".bak", filepath.Dir(dest), false)
	if err != nil {
		return err
	}
	defer bak.Cleanup()
	if _, err := bak.Write(old); err != nil {
		return err
	}
	if uid, gid, ok := ownerOf(oldInfo); ok {
		if err := bak.Chown(uid, gid); err != nil {
			// Not root: the backup stays herald's own and 0600.
			log.Warn("backup keeps mode 0600: cannot give it dest's owner", "resource", name, "dest", dest, "err", err)
			return bak.CloseAtomicallyReplace()
		}
	}
	if err := bak.Chmod(fileMode(oldInfo)); err != nil {
		return err
	}
	return bak.CloseAtomicallyReplace()
}

func (s *Syncer) check(ctx context.Context, cmd string, timeout time.Duration) (string, error) {
	s.once.Do(func() {
		n := s.Checks
		if n <= 0 {
			n = runtime.GOMAXPROCS(0)
		}
		s.checks = make(chan struct{}, n)
	})
	select {
	case s.checks <- struct{}{}:
	case <-ctx.Done():
		return "", fmt.Errorf("check_cmd: %w", ctx.Err())
	}
	defer func() { <-s.checks }()
	return runCommand(ctx, "check_cmd", cmd, timeout)
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// syncDirs fsyncs each directory once.
func syncDirs(dirs []string) {
	for _, d := range dirs {
		syncDir(d)
	}
}

// readDest finds the file r writes (dest, or with follow_symlink what its link points
// to) and returns its path, content and info, or no content or info when it does not
// exist yet. Unless all is set, the content is read only when the file has size bytes
// (else it differs). Content over maxRead (and over size) is not returned.
func readDest(r *Resource, size int, all bool) (string, []byte, fs.FileInfo, error) {
	dest := r.Dest
	limit := max(maxRead, int64(size))
	want := func(fi fs.FileInfo) bool { return (all || fi.Size() == int64(size)) && fi.Size() <= limit }
	b, fi, err := readNoFollow(dest, limit, want)
	if errors.Is(err, syscall.ELOOP) {
		if !r.FollowSymlink {
			return "", nil, nil, fmt.Errorf("%s: dest %s is a symlink: %s", resourceFile(r), r.Dest, errSymlinkHint)
		}
		if dest, err = filepath.EvalSymlinks(r.Dest); err != nil {
			return "", nil, nil, fmt.Errorf("%s: follow_symlink: %w", r.Dest, err)
		}
		b, fi, err = readNoFollow(dest, limit, want)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return dest, nil, nil, nil
	}
	if err != nil {
		return "", nil, nil, fmt.Errorf("%s: %w", r.Dest, err)
	}
	if fi.IsDir() {
		return "", nil, nil, fmt.Errorf("%s: dest is a directory", r.Dest)
	}
	if !fi.Mode().IsRegular() {
		// A FIFO would block the read, a device never end it; the rename would
		// replace either.
		return "", nil, nil, fmt.Errorf("%s: dest is not a regular file", r.Dest)
	}
	if int64(len(b)) > limit {
		b = nil // grew past the limit since the fstat
	}
	return dest, b, fi, nil
}

// resourceFile names r's resource file in errors (its name when it has no file).
func resourceFile(r *Resource) string {
	if r.File != "" {
		return r.File
	}
	return r.Name
}

func diff(dest string, old, content []byte, oldInfo fs.FileInfo, mode fs.FileMode) string {
	from := dest
	if oldInfo == nil {
		from = "/dev/null"
	}
	if oldInfo != nil && old == nil && oldInfo.Size() > 0 {
		return fmt.Sprintf("%s: %d bytes, over the %d-byte diff limit: would be replaced\n", dest, oldInfo.Size(), maxRead)
	}
	d := udiff.Unified(from, dest, string(old), string(content))
	if d == "" && oldInfo != nil && fileMode(oldInfo) != mode {
		return fmt.Sprintf("%s: mode %s -> %s\n", dest, octal(fileMode(oldInfo)), octal(mode))
	}
	if d == "" {
		return fmt.Sprintf("%s: owner would change\n", dest)
	}
	return d
}
