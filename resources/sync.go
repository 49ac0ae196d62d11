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
	"github.com/google/renameio/v2"
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
}

// Outcome says what a sync did.
type Outcome struct {
	Changed bool   // dest was (or, in a dry run, would be) replaced
	Reload  string // the expanded reload command to run, "" for none
	Dir     string // dest's directory, when its fsync was deferred
}

// Sync makes dest hold content with the resource's mode and owner. When dest already
// does, nothing happens. Otherwise content goes to a stage file next to dest (created
// 0600, so nobody reads a half-written file), which is given its mode and owner,
// checked with check_cmd and only then fsynced (data and metadata in one call, so a
// crash never leaves an empty dest; together with the other syncs in flight, see
// commitGroup) and renamed over dest. Any failure before the rename
// removes the stage file and leaves dest byte-identical. The reload command is returned,
// not run: the runner runs each distinct command once per burst.
func (s *Syncer) Sync(ctx context.Context, r *Resource, content []byte) (Outcome, error) {
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mode, uid, gid := r.Mode, r.UID, r.GID
	// Without a diff to show or a backup to write, a dest whose size differs from
	// content's need not be read.
	old, oldInfo, err := readDest(r.Dest, len(content), s.DryRun || r.Backup)
	if err != nil {
		return Outcome{}, err
	}
	if !r.ModeSet {
		// confd keeps an existing file's mode; new files get 0644.
		mode = 0o644
		if oldInfo != nil {
			mode = oldInfo.Mode().Perm()
		}
	}
	if oldInfo != nil && oldInfo.Size() == int64(len(content)) && bytes.Equal(old, content) && oldInfo.Mode().Perm() == mode && ownerMatches(oldInfo, uid, gid) {
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
	dir := filepath.Dir(r.Dest)
	if r.MakeDirs {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return Outcome{}, fmt.Errorf("%s: make dirs: %w", r.Dest, err)
		}
	}
	// Created 0600 (less if the umask says so) and given its mode below, after the
	// content: nobody can read a half-written file.
	stage, err := renameio.NewPendingFile(r.Dest, renameio.WithPermissions(0o600), renameio.WithTempDir(dir))
	if err != nil {
		return Outcome{}, fmt.Errorf("%s: create stage file: %w", r.Dest, err)
	}
	keep := false
	defer func() {
		if keep && s.KeepStageFile {
			stage.File.Close()
			return
		}
		stage.Cleanup() // no-op after a successful replace
	}()
	if _, err := stage.Write(content); err != nil {
		return Outcome{}, fmt.Errorf("%s: write stage file %s: %w", r.Dest, stage.Name(), err)
	}
	if err := stage.Chmod(mode); err != nil {
		return Outcome{}, fmt.Errorf("%s: chmod %o: %w", r.Dest, mode, err)
	}
	if uid >= 0 || gid >= 0 {
		if err := stage.Chown(uid, gid); err != nil {
			return Outcome{}, fmt.Errorf("%s: chown %d:%d: %w", r.Dest, uid, gid, err)
		}
	}
	startWriteback(stage.File)
	if r.CheckCmd != "" && !s.SyncOnly {
		cmd, err := expandCmd(r.CheckCmd, stage.Name(), r.Dest)
		if err != nil {
			return Outcome{}, fmt.Errorf("%s: check_cmd: %w", r.Dest, err)
		}
		m.leave()
		out, err := s.check(ctx, cmd, r.CheckTimeout)
		m.rejoin()
		if err != nil {
			keep = true
			if s.KeepStageFile {
				log.Warn("stage file kept", "resource", r.Name, "stage", stage.Name())
			}
			return Outcome{}, fmt.Errorf("%s: %w", r.Dest, err)
		}
		log.Debug("check_cmd passed", "resource", r.Name, "cmd", cmd, "output", out)
	}
	if r.Backup && oldInfo != nil {
		if err := renameio.WriteFile(r.Dest+".bak", old, oldInfo.Mode().Perm()); err != nil {
			return Outcome{}, fmt.Errorf("%s: backup: %w", r.Dest, err)
		}
	}
	m.arrive()
	if err := stage.CloseAtomicallyReplace(); err != nil {
		return Outcome{}, fmt.Errorf("%s: replace: %w", r.Dest, err)
	}
	o := Outcome{Changed: true}
	// The rename is durable only once the directory entry is on disk.
	if s.DeferDirSync {
		o.Dir = dir
	} else {
		syncDir(dir)
	}
	if r.ReloadCmd != "" && !s.SyncOnly {
		if o.Reload, err = expandCmd(r.ReloadCmd, r.Dest, r.Dest); err != nil {
			return o, fmt.Errorf("%s: reload_cmd: %w", r.Dest, err)
		}
	}
	return o, nil
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

// SyncDirs fsyncs each directory once: the renames of a burst are durable before its
// reload commands run.
func SyncDirs(dirs []string) {
	for _, d := range dirs {
		syncDir(d)
	}
}

// readDest returns dest's content and info, or nils when it does not exist yet. Unless
// all is set, the content is read only when dest has size bytes (else it differs).
func readDest(dest string, size int, all bool) ([]byte, fs.FileInfo, error) {
	fi, err := os.Stat(dest)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", dest, err)
	}
	if fi.IsDir() {
		return nil, nil, fmt.Errorf("%s: dest is a directory", dest)
	}
	if !fi.Mode().IsRegular() {
		// A FIFO would block the read, a device never end it; the rename would
		// replace either.
		return nil, nil, fmt.Errorf("%s: dest is not a regular file", dest)
	}
	if !all && fi.Size() != int64(size) {
		return nil, fi, nil
	}
	b, err := readFile(dest, fi.Size())
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", dest, err)
	}
	return b, fi, nil
}

func ownerMatches(fi fs.FileInfo, uid, gid int) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	return (uid < 0 || int(st.Uid) == uid) && (gid < 0 || int(st.Gid) == gid)
}

func diff(dest string, old, content []byte, oldInfo fs.FileInfo, mode fs.FileMode) string {
	from := dest
	if oldInfo == nil {
		from = "/dev/null"
	}
	d := udiff.Unified(from, dest, string(old), string(content))
	if d == "" && oldInfo != nil && oldInfo.Mode().Perm() != mode {
		return fmt.Sprintf("%s: mode %04o -> %04o\n", dest, oldInfo.Mode().Perm(), mode)
	}
	if d == "" {
		return fmt.Sprintf("%s: owner would change\n", dest)
	}
	return d
}
