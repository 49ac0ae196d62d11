package file

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/heraldhq/herald/backends"
)

// One fsnotify watcher serves every Watch of a Store: inotify instances are a scarce
// per-user resource (128 by default), and herald runs one Watch per distinct target. The
// watcher goroutine re-reads the files after each burst of events and kicks every
// subscriber, which compares its target with what it last sent.

const (
	retryMin = 100 * time.Millisecond
	retryMax = 30 * time.Second
)

func (s *Store) subscribe() (chan struct{}, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	kick := make(chan struct{}, 1)
	s.subs[kick] = struct{}{}
	if s.stopW == nil {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopW, s.wDone = cancel, make(chan struct{})
		go s.watchFiles(ctx, s.wDone)
	}
	return kick, nil
}

// unsubscribe stops the watcher with the last subscriber, and waits for it, so that no
// goroutine outlives the Watch calls.
func (s *Store) unsubscribe(kick chan struct{}) {
	s.wmu.Lock()
	delete(s.subs, kick)
	var stop context.CancelFunc
	var done chan struct{}
	if len(s.subs) == 0 && s.stopW != nil {
		stop, done = s.stopW, s.wDone
		s.stopW = nil
	}
	s.wmu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

func (s *Store) notify() {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for kick := range s.subs {
		select {
		case kick <- struct{}{}:
		default: // already pending; the subscriber reads the latest data anyway
		}
	}
}

// reload re-reads the files, logs a new failure once, and kicks the subscribers.
func (s *Store) reload() {
	s.loadLogged()
	s.notify()
}

// loadLogged re-reads the files and logs a failure the first time it is seen.
func (s *Store) loadLogged() {
	if _, fresh, err := s.load(); err != nil && fresh {
		if s.current() != nil {
			s.log.Error("file backend: cannot use the changed data; keeping the last good data", "path", s.path, "err", err)
		} else {
			s.log.Error("file backend: cannot read the data", "path", s.path, "err", err)
		}
	}
}

// watchDirs are the directories whose changes can change the data: the directory
// itself, or the one holding the file and, when the file is a symlink, the one holding
// its target.
func (s *Store) watchDirs() []string {
	var dirs []string
	add := func(d string) {
		if !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	for _, p := range s.paths {
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			if s.filter == "" {
				add(p)
				continue
			}
			for _, d := range subdirs(p) {
				add(d)
			}
			continue
		}
		add(filepath.Dir(p))
		if real, err := filepath.EvalSymlinks(p); err == nil {
			add(filepath.Dir(real))
		}
	}
	return dirs
}

// syncWatches adds the directories that should be watched and drops the others.
func (s *Store) syncWatches(w *fsnotify.Watcher) error {
	want := s.watchDirs()
	have := make(map[string]bool)
	for _, d := range w.WatchList() {
		have[d] = true
	}
	var firstErr error
	keep := make(map[string]bool, len(want))
	for _, d := range want {
		keep[d] = true
		if have[d] {
			continue
		}
		if err := w.Add(d); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	for d := range have {
		if !keep[d] {
			_ = w.Remove(d) // fails when the directory is already gone, which is the point
		}
	}
	return firstErr
}

func (s *Store) watchFiles(ctx context.Context, done chan struct{}) {
	defer close(done)
	w, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Error("file backend: cannot watch for changes; the data will not be re-read", "path", s.path, "err", err)
		return
	}
	defer w.Close()

	// A directory that cannot be watched yet (it does not exist) is retried with
	// backoff. Every timer expiry (at start, after a burst of events, on retry) re-syncs
	// the watched directories and re-reads the files, so whatever happened before a
	// watch was in place is caught too.
	bo := backends.Backoff{Min: retryMin, Max: retryMax}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if ev.Op == fsnotify.Chmod {
				continue // touch, chmod: only content matters
			}
			timer.Reset(s.debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			// An overflow lost events: re-read to be sure.
			s.log.Warn("file backend: watch error; re-reading", "path", s.path, "err", err)
			timer.Reset(s.debounce)
		case <-timer.C:
			if err := s.syncWatches(w); err != nil {
				if !bo.Retrying() {
					s.log.Warn("file backend: cannot watch for changes yet; retrying", "path", s.path, "err", err)
				}
				timer.Reset(bo.Next())
				continue
			}
			bo.Reset()
			s.reload()
		}
	}
}
