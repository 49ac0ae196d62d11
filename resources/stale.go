package resources

import (
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
)

// stageNameRe matches the names of herald's own stage files for a dest base name b:
// renameio names them "." + b + a random non-negative int64 in decimal (almost always
// 18 or 19 digits; 10 at least is required so that a user's ".b1" is never taken for
// one), and the backup "b.bak" is staged the same way.
func stageNameRe(base string) *regexp.Regexp {
	q := regexp.QuoteMeta(base)
	return regexp.MustCompile(`^\.` + q + `(\.bak)?[0-9]{10,19}$`)
}

// spareName is the name of dest's spare (spare_file).
func spareName(dest string) string {
	dir, base := filepath.Split(dest)
	return filepath.Join(dir, "."+base+".herald-spare")
}

// spareNameRe matches the name of dest's spare (spare_file) for a dest base name b.
func spareNameRe(base string) *regexp.Regexp {
	return regexp.MustCompile(`^\.` + regexp.QuoteMeta(base) + `\.herald-spare$`)
}

// RemoveStaleStages removes the stage files a crashed herald left next to the
// resources' dests: only regular files whose names herald's own pattern produces, in
// the dest directories configured; and the spare of a dest whose resource no longer
// sets spare_file. Call it before any render of this process starts. A fan-out
// resource's files are not known here: the runner passes those its record lists to
// RemoveStaleStagesOf.
func RemoveStaleStages(rs []*Resource, log *slog.Logger) {
	byDir := map[string][]*regexp.Regexp{}
	for _, r := range rs {
		if r.Each != nil {
			continue
		}
		dir, base := filepath.Dir(r.Dest), filepath.Base(r.Dest)
		byDir[dir] = append(byDir[dir], stageNameRe(base))
		if !r.SpareFile {
			byDir[dir] = append(byDir[dir], spareNameRe(base))
		}
	}
	removeStale(byDir, log)
}

// RemoveStaleStagesOf removes the stage files a crashed herald left next to dests.
func RemoveStaleStagesOf(dests []string, log *slog.Logger) {
	byDir := map[string][]*regexp.Regexp{}
	for _, d := range dests {
		dir := filepath.Dir(d)
		byDir[dir] = append(byDir[dir], stageNameRe(filepath.Base(d)))
	}
	removeStale(byDir, log)
}

// RemoveSpare removes dest's spare, if it has one: its dest is gone.
func RemoveSpare(dest string) {
	sp := spareName(dest)
	if fi, err := os.Lstat(sp); err == nil && fi.Mode().IsRegular() {
		os.Remove(sp)
	}
}

// removeStale removes the regular files of each directory whose names match one of its
// patterns.
func removeStale(byDir map[string][]*regexp.Regexp, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for dir, res := range byDir {
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue // no directory yet (make_dirs), nothing left in it
		}
		for _, e := range entries {
			if !e.Type().IsRegular() || !matchAny(res, e.Name()) {
				continue
			}
			p := filepath.Join(dir, e.Name())
			if err := os.Remove(p); err != nil {
				log.Warn("cannot remove a stale stage file", "file", p, "err", err)
				continue
			}
			log.Info("removed a stale stage file left by an earlier run", "file", p)
		}
	}
}

func matchAny(res []*regexp.Regexp, name string) bool {
	for _, re := range res {
		if re.MatchString(name) {
			return true
		}
	}
	return false
}
