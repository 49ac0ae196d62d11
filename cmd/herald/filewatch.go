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
	add := func(dir string) {
		if err := w.Add(dir); err != nil {
			log.Warn("cannot watch directory; edits there need SIGHUP", "dir", dir, "err", err)
		}
	}
	addTree := func(root string) {
		// Symlinked directories too, each once, as resources.Load reads them.
		for _, p := range resources.Dirs(root) {
			add(p)
		}
	}
	addTrees := func() {
		for _, t := range trees {
			addTree(t)
		}
	}
	for i, t := range trees {
		trees[i] = filepath.Clean(t)
		add(filepath.Dir(trees[i])) // only the tree's own name matters there: see relevant
	}
	addTrees()
	watched := map[string]bool{}
	for _, f := range files {
		f = filepath.Clean(f)
		watched[f] = true
		add(filepath.Dir(f))
	}
	relevant := func(name string) bool {
		if watched[filepath.Clean(name)] {
			return true
		}
		for _, t := range trees {
			if rel, err := filepath.Rel(t, name); err == nil && filepath.IsLocal(rel) {
				return true
			}
		}
		return false
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
		var debounce <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				addTrees()
				reload(ctx, "SIGHUP")
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if !relevant(ev.Name) {
					continue
				}
				if ev.Has(fsnotify.Create) {
					if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() {
						addTree(ev.Name)
					}
				}
				debounce = time.After(200 * time.Millisecond)
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				log.Warn("file watch error", "err", err)
			case <-debounce:
				debounce = nil
				addTrees()
				reload(ctx, "file change")
			}
		}
	}()
	return func() {
		cancel()
		stopHup()
		w.Close()
		<-done
	}, nil
}
