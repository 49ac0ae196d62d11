package resources

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// fileID identifies a file or directory whatever the path it is reached by.
type fileID struct{ dev, ino uint64 }

// resourceFiles lists the *.toml files below dir in lexical order, each file once.
//
// How deploy tools lay conf.d out decides the rules:
//   - Hidden entries (".x") are skipped: a Kubernetes ConfigMap volume holds its files in
//     a hidden "..2026_01_02..." directory reached through the "..data" link, and each
//     visible x.toml is a link into it; reading both would load every resource twice.
//     Editors' swap and lock files are hidden too.
//   - Symlinks are followed, to files and to directories; a directory reached twice
//     (a loop, or two links to one place) is read once, and so is a file.
//   - A directory that cannot be read is reported as a *Error with Dir set and
//     affects only the files below it: the rest still load.
func resourceFiles(dir string) ([]string, []error) {
	w := walker{seenDirs: map[fileID]bool{}, seenFiles: map[fileID]bool{}}
	fi, err := os.Stat(dir)
	if err == nil && !fi.IsDir() {
		err = fmt.Errorf("not a directory")
	}
	if err != nil {
		return nil, []error{&Error{File: dir, Dir: true, Msg: "cannot read directory", Err: err}}
	}
	w.dir(dir, fi)
	return w.files, w.errs
}

type walker struct {
	seenDirs, seenFiles map[fileID]bool
	files               []string
	errs                []error
	dirsOnly            bool // list directories (into dirs), not files
	dirs                []string
}

func (w *walker) dir(dir string, fi os.FileInfo) {
	if id, ok := idOf(fi); ok {
		if w.seenDirs[id] {
			return
		}
		w.seenDirs[id] = true
	}
	w.dirs = append(w.dirs, dir)
	entries, err := os.ReadDir(dir) // sorted by name
	if err != nil {
		w.errs = append(w.errs, &Error{File: dir, Dir: true, Msg: "cannot read directory", Err: err})
		return
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		p := filepath.Join(dir, name)
		isTOML := strings.HasSuffix(name, ".toml")
		if !e.IsDir() && !isTOML && e.Type()&os.ModeSymlink == 0 {
			continue
		}
		fi, err := os.Stat(p) // follows links
		if err != nil {
			if isTOML {
				w.errs = append(w.errs, &Error{File: p, Msg: "cannot read", Err: err})
			}
			continue // a dangling link that is no resource is not ours to judge
		}
		if fi.IsDir() {
			w.dir(p, fi)
			continue
		}
		if !isTOML || w.dirsOnly {
			continue
		}
		if id, ok := idOf(fi); ok {
			if w.seenFiles[id] {
				continue
			}
			w.seenFiles[id] = true
		}
		w.files = append(w.files, p)
	}
}

// Dirs lists root and the directories below it by the rules of resourceFiles (links
// followed, each directory once, hidden ones skipped), for a watcher to add: inotify
// watches one directory, not a tree.
func Dirs(root string) []string {
	fi, err := os.Stat(root)
	if err != nil || !fi.IsDir() {
		return nil
	}
	w := walker{seenDirs: map[fileID]bool{}, seenFiles: map[fileID]bool{}, dirsOnly: true}
	w.dir(root, fi)
	return w.dirs
}
