package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/heraldhq/herald/resources"
)

// watchFiles calls reload on SIGHUP and whenever something changes below one of trees
// (recursively, directories created later included) or one of files changes, debounced,
// so an editor's write-rename-chmod is one reload. A file is watched through its
// directory, since editors replace it by renaming; other names there are ignored. The
// returned stop ends the watch and waits for a reload in progress.
//
// A tree removed and created again, renamed into place or reached through a swapped
// symlink (how deploy tools and Kubernetes ConfigMaps replace directories) is watched
// again by itself: its parent directory is watched for it, and every reload adds the
// trees' directories anew. hup is SIGHUP as main catches it from the start (nil: caught
// here).
func watchFiles(ctx context.Context, trees, files []string, hup <-chan os.Signal, log *slog.Logger, reload func(ctx context.Context, why string)) (func(), error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", slices.Concat(trees, files), err)
	}
	fw := &fileWatch{w: w, log: log, watched: map[string]bool{}}
	for _, t := range trees {
		t = filepath.Clean(t)
		fw.trees = append(fw.trees, t)
		fw.add(filepath.Dir(t)) // only the tree's own name matters there: see relevant
	}
	fw.addTrees()
	for _, f := range files {
		f = filepath.Clean(f)
		fw.watched[f] = true
		fw.add(filepath.Dir(f))
	}
	stopHup := func() {}
	if hup == nil { // run in-process (tests): no handler from main
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGHUP)
		hup, stopHup = c, func() { signal.Stop(c) }
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		fw.loop(ctx, hup, reload)
	}()
	return func() {
		cancel()
		stopHup()
		w.Close()
		<-done
	}, nil
}

// fileWatch follows the directories of herald's own configuration: the resource trees
// (recursively) and single files (through their directory).
type fileWatch struct {
	w       *fsnotify.Watcher
	log     *slog.Logger
	trees   []string        // cleaned
	watched map[string]bool // single files, cleaned
}

func (fw *fileWatch) add(dir string) {
	if err := fw.w.Add(dir); err != nil {
		fw.log.Warn("cannot watch directory; edits there need SIGHUP", "dir", dir, "err", err)
	}
}

// addTree watches root and every directory below it, symlinked ones too, each once, as
// resources.Load reads them.
func (fw *fileWatch) addTree(root string) {
	for _, p := range resources.Dirs(root) {
		fw.add(p)
	}
}

func (fw *fileWatch) addTrees() {
	for _, t := range fw.trees {
		fw.addTree(t)
	}
}

// relevant reports whether an event on name concerns herald's configuration (a
// directory watched for one file reports its neighbours too).
func (fw *fileWatch) relevant(name string) bool {
	if fw.watched[filepath.Clean(name)] {
		return true
	}
	for _, t := range fw.trees {
		if rel, err := filepath.Rel(t, name); err == nil && filepath.IsLocal(rel) {
			return true
		}
	}
	return false
}

// loop calls reload on SIGHUP, and 200 ms after the last of a burst of relevant file
// events (an editor's save is several), until ctx ends.
func (fw *fileWatch) loop(ctx context.Context, hup <-chan os.Signal, reload func(ctx context.Context, why string)) {
	var debounce <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			fw.addTrees()
			reload(ctx, "SIGHUP")
		case ev, ok := <-fw.w.Events:
			if !ok {
				return
			}
			if !fw.relevant(ev.Name) {
				continue
			}
			if ev.Has(fsnotify.Create) {
				if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() {
					fw.addTree(ev.Name)
				}
			}
			debounce = time.After(200 * time.Millisecond)
		case err, ok := <-fw.w.Errors:
			if !ok {
				return
			}
			fw.log.Warn("file watch error", "err", err)
		case <-debounce:
			debounce = nil
			fw.addTrees()
			reload(ctx, "file change")
		}
	}
}
