package render

// Fan-out resources (`each`): one file per item of a list the registry gives. The
// resource itself writes nothing: its render lists the items, and each item becomes a
// resource of its own (its file, its reads, its quiescence) that the daemon renders and
// reloads like any other. Files herald made are kept in a record next to them, so that
// when an item goes, its file goes, and nothing else ever does, across restarts too.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/heraldhq/herald/resources"
	"github.com/heraldhq/herald/resources/engine"
	"github.com/heraldhq/herald/template"
	"github.com/heraldhq/herald/template/regfile"
)

// fanout is a fan-out resource's state in the daemon.
type fanout struct {
	children map[string]*state // the live files' resources, by name
	leaving  []*state          // files whose item went while they rendered
	rec      *record
	listed   bool // the first list is in: the record may be swept
}

// record lists the files a fan-out resource made, with the SHA-256 of what it wrote: a
// file changed since by someone else is not herald's to delete any more.
type record struct {
	path string
	// dirty: files were added or removed, saved at the burst's end. stale: only the sums
	// of files changed, saved at most every recordEvery: a sum lost in a crash makes its
	// file look changed by someone else, so it is kept, never deleted by mistake.
	dirty, stale bool
	savedAt      time.Time
	Resource     string                  `json:"resource"`
	Each         string                  `json:"each"`
	Files        map[string]recordedFile `json:"files"` // by dest
}

// recordedFile is one file herald made: the SHA-256 of what it wrote, and for which item.
type recordedFile struct {
	Sum  string `json:"sha256"`
	Item string `json:"item"`
}

// maxRecord bounds a record file: 100,000 files of long paths fit.
const maxRecord = 64 << 20

// recordPath is where r's record lives: in the directory all its files lie under.
func recordPath(r *resources.Resource) string {
	name := strings.NewReplacer("/", "_", "#", "_").Replace(r.Name)
	return filepath.Join(filepath.Clean(r.DestField.StaticDir()), ".herald-"+name+".json")
}

// loadRecord reads r's record; a missing one is empty. One that cannot be read is
// reported and treated as empty: herald then deletes nothing it cannot prove it made.
func loadRecord(r *resources.Resource) (*record, error) {
	rec := &record{path: recordPath(r), Resource: r.Name, Each: r.Each.Spec, Files: map[string]recordedFile{}}
	err := resources.CheckOwnFile(rec.path)
	if errors.Is(err, fs.ErrNotExist) {
		return rec, nil
	}
	var raw []byte
	if err == nil {
		raw, err = regfile.Read(rec.path, maxRecord)
	}
	if err == nil {
		var disk record
		if err = json.Unmarshal(raw, &disk); err == nil {
			for dest, f := range disk.Files {
				if within(r, dest) == nil {
					rec.Files[dest] = f
				}
			}
			return rec, nil
		}
	}
	return rec, fmt.Errorf("record %s: %w (herald deletes none of the files it lists)", rec.path, err)
}

// recordEvery bounds how often a record is saved for changed sums alone.
const recordEvery = 30 * time.Second

// save writes the record atomically, or removes it when it lists nothing.
func (rec *record) save() error {
	rec.dirty, rec.stale, rec.savedAt = false, false, time.Now()
	if len(rec.Files) == 0 {
		if err := os.Remove(rec.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("record %s: %w", rec.path, err)
		}
		return nil
	}
	raw, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("record %s: %w", rec.path, err)
	}
	if err := resources.WriteFileAtomic(rec.path, append(raw, '\n'), 0o644); err != nil {
		return fmt.Errorf("record %s: %w", rec.path, err)
	}
	return nil
}

// within checks that dest is a file below the directory r's dest template names: an item
// from the registry ("../../etc/cron.d/x") must not choose where herald writes.
func within(r *resources.Resource, dest string) error {
	base := filepath.Clean(r.DestField.StaticDir())
	rel, err := filepath.Rel(base, dest)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") || filepath.Clean(dest) != dest {
		return fmt.Errorf("dest %q is not a file below %s", dest, base)
	}
	if strings.ContainsAny(dest, "\x00\n\r") || filepath.Base(dest) == filepath.Base(recordPath(r)) {
		return fmt.Errorf("dest %q is not a file herald may write", dest)
	}
	return nil
}

// children makes the resources of a list's items. Two items rendering to one dest are
// an error naming both, and nothing changes; an item whose dest leaves the directory is
// left out, with an error in the log.
func (rn *Runner) children(p *resources.Resource, items []template.Item) ([]*resources.Resource, error) {
	out := make([]*resources.Resource, 0, len(items))
	byDest := make(map[string]string, len(items))
	for _, it := range items {
		dest, err := p.DestField.Execute(it.Value)
		if err == nil {
			err = within(p, dest)
		}
		if err != nil {
			rn.log().Error("fan-out item left out: its dest is not usable", "resource", p.Name, "item", it.Key, "err", err)
			continue
		}
		if other, dup := byDest[dest]; dup {
			return nil, fmt.Errorf("each %q: items %q and %q both render to %s; make dest tell them apart", p.Each.Spec, other, it.Key, dest)
		}
		byDest[dest] = it.Key
		c := *p
		c.Name, c.Dest, c.Item, c.ItemKey, c.Parent = p.Name+"#"+it.Key, dest, it.Value, it.Key, p.Name
		c.Each, c.DestField, c.Warnings = nil, nil, nil
		out = append(out, &c)
	}
	return out, nil
}

// eachCountKey is the list's entry among a render's service counts: the guard holds a
// list that shrinks the way a registry glitch shrinks it, as it does a service list.
func eachCountKey(r *resources.Resource) string { return "each " + r.Each.Spec }

// newFanout sets up a fan-out resource's state from its record; the record's size is the
// guard's baseline, so an empty answer right after a restart deletes nothing either. At
// the start, stage files a crash left next to the recorded files are removed.
func (rn *Runner) newFanout(st *state, starting bool) {
	rec, err := loadRecord(st.r)
	if err != nil {
		rn.log().Error("cannot read the record of files herald made", "resource", st.r.Name, "err", err)
	}
	if starting {
		resources.RemoveStaleStagesOf(slices.Collect(maps.Keys(rec.Files)), rn.Log)
	}
	st.fan = &fanout{children: map[string]*state{}, rec: rec}
	if len(rec.Files) > 0 {
		st.written = map[string]int{eachCountKey(st.r): len(rec.Files)}
	}
}

// fanout applies a new list: new items start rendering, changed ones render again, gone
// ones are dropped and their files removed.
func (d *daemon) fanout(p *state, next []*resources.Resource) {
	f := p.fan
	if len(next) == 0 && (!f.listed || len(f.children) > 0) {
		d.rn.log().Warn("the list of a fan-out resource is empty: no file", "resource", p.r.Name, "each", p.r.Each.Spec)
	}
	f.listed = true
	keep := make(map[string]bool, len(next))
	for _, c := range next {
		keep[c.Name] = true
		old := f.children[c.Name]
		if old != nil && old.r.Dest == c.Dest && reflect.DeepEqual(old.r.Item, c.Item) {
			continue
		}
		if old != nil {
			d.drop(p, old)
		}
		st := &state{r: c, why: "new item", parent: p, retry: engine.RetryBackoff()}
		if old != nil {
			st.why = "item changed"
		}
		f.children[c.Name] = st
		d.rn.mu.Lock()
		d.rn.states[c.Name] = st
		d.rn.mu.Unlock()
		d.dispatch(st)
	}
	for name, old := range f.children {
		if !keep[name] {
			delete(f.children, name)
			d.drop(p, old)
		}
	}
	d.sweep(p)
}

// drop stops a file's resource; one still rendering is swept when its render ends.
func (d *daemon) drop(p *state, st *state) {
	if st.timer != nil {
		st.timer.Stop()
	}
	d.rn.mu.Lock()
	if d.rn.states[st.r.Name] == st {
		delete(d.rn.states, st.r.Name)
	}
	d.rn.targetsMoved = true
	d.rn.mu.Unlock()
	if st.rendering {
		p.fan.leaving = append(p.fan.leaving, st)
	}
}

// childDone records what a file's render wrote, and sweeps once a dropped one is done.
func (d *daemon) childDone(st *state, o outcome) {
	p := st.parent // a fan-out resource: its fan is set when it is added
	if prev, ok := p.fan.rec.Files[st.r.Dest]; o.sum != "" && prev != (recordedFile{o.sum, st.r.ItemKey}) {
		p.fan.rec.Files[st.r.Dest] = recordedFile{o.sum, st.r.ItemKey}
		if ok && prev.Item == st.r.ItemKey {
			p.fan.rec.stale = true
		} else {
			p.fan.rec.dirty = true
		}
	}
	if i := slices.Index(p.fan.leaving, st); i >= 0 {
		p.fan.leaving = slices.Delete(p.fan.leaving, i, i+1)
		d.sweep(p)
	}
}

// sweep removes the recorded files no live item renders to.
func (d *daemon) sweep(p *state) {
	f := p.fan
	if !f.listed {
		return
	}
	live := make(map[string]bool, len(f.children))
	for _, c := range f.children {
		live[c.r.Dest] = true
	}
	for _, c := range f.leaving {
		live[c.r.Dest] = true // its render may still write it: swept when it ends
	}
	for _, dest := range slices.Sorted(maps.Keys(f.rec.Files)) {
		if !live[dest] {
			d.collect(d.rn.removeFile(p.r, f.rec, dest))
		}
	}
}

// removeFile deletes a file herald made for an item that is gone, if it still holds
// what herald wrote; the outcome owes the burst a reload and the directory's fsync.
func (rn *Runner) removeFile(r *resources.Resource, rec *record, dest string) outcome {
	log := rn.log().With("resource", r.Name, "dest", dest)
	if rn.Syncer.DryRun {
		log.Info("would remove the file of an item that is gone (dry run)")
		return outcome{}
	}
	sum, err := fileSum(dest)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		delete(rec.Files, dest)
		rec.dirty = true
		return outcome{}
	case err != nil:
		log.Error("cannot read the file of an item that is gone; left in place, tried again later", "err", err)
		return outcome{}
	case sum != rec.Files[dest].Sum:
		log.Warn("the file of an item that is gone was changed by someone else since herald wrote it; left in place")
		delete(rec.Files, dest)
		rec.dirty = true
		return outcome{}
	}
	if err := os.Remove(dest); err != nil {
		log.Error("cannot remove the file of an item that is gone; tried again later", "err", err)
		return outcome{}
	}
	resources.RemoveSpare(dest)
	item := rec.Files[dest].Item
	delete(rec.Files, dest)
	rec.dirty = true
	log.Info("removed the file of an item that is gone", "item", item)
	o := outcome{}
	o.Dir = filepath.Dir(dest)
	if r.ReloadCmd != "" && !rn.Syncer.SyncOnly {
		o.Reload, _ = resources.ExpandReload(r, dest, item) // checked at load
	}
	rn.Metrics.removed(r.Name)
	return o
}

// fileSum is the SHA-256 of a regular file's content.
func fileSum(path string) (string, error) {
	// A link or a FIFO planted where herald's file was is not herald's file: reading a
	// FIFO would block the daemon.
	if fi, err := os.Lstat(path); err != nil {
		return "", err
	} else if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func contentSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// flushRecords writes the records whose files changed in this burst, and those whose
// sums alone changed every recordEvery (always, when all is true: at the end).
func (d *daemon) flushRecords(all bool) {
	for _, st := range d.rn.snapshotStates() {
		if st.fan == nil {
			continue
		}
		rec := st.fan.rec
		if rec.dirty || rec.stale && (all || time.Since(rec.savedAt) >= recordEvery) {
			if err := rec.save(); err != nil {
				d.rn.log().Error("cannot write the record of files herald made", "resource", st.r.Name, "err", err)
			}
		}
	}
}

// fanOnce is a fan-out resource in a one-off render: its record and its files.
type fanOnce struct {
	parent   *resources.Resource
	rec      *record
	recErr   error
	children []*resources.Resource
}

// expandOnce lists each fan-out resource's items for `herald render` and puts their
// files in its place. A resource whose list fails is an error; the others go on.
func (rn *Runner) expandOnce(ctx, readCtx context.Context, rs []*resources.Resource) ([]*resources.Resource, []fanOnce, []error) {
	var (
		out  = make([]*resources.Resource, 0, len(rs))
		fans []fanOnce
		errs []error
	)
	for _, r := range rs {
		if r.Each == nil {
			out = append(out, r)
			continue
		}
		st := rn.states[r.Name]
		_, items, reads, err := rn.settle(ctx, readCtx, st, false)
		if err == nil {
			err = rn.absent(st, reads, false)
		}
		var children []*resources.Resource
		if err == nil {
			children, err = rn.children(r, items)
		}
		if err == nil && len(children) == 0 {
			rn.log().Warn("the list of a fan-out resource is empty: no file", "resource", r.Name, "each", r.Each.Spec)
		}
		if err != nil {
			rn.fail(st, err)
			errs = append(errs, fmt.Errorf("%s: %w", r.Name, err))
			continue
		}
		rec, recErr := loadRecord(r)
		resources.RemoveStaleStagesOf(slices.Collect(maps.Keys(rec.Files)), rn.Log)
		fans = append(fans, fanOnce{parent: r, rec: rec, recErr: recErr, children: children})
		rn.mu.Lock()
		for _, c := range children {
			rn.states[c.Name] = &state{r: c, retry: engine.RetryBackoff()}
		}
		rn.mu.Unlock()
		out = append(out, children...)
	}
	return out, fans, errs
}

// sweepOnce records what a one-off render wrote and removes the files of items that are
// gone, unless the list shrank as the guard would hold it in watch mode: a one-off
// render cannot wait for it to persist, so it deletes nothing and says why.
func (rn *Runner) sweepOnce(f fanOnce, sums map[string]string) ([]outcome, error) {
	before := len(f.rec.Files)
	live := make(map[string]bool, len(f.children))
	for _, c := range f.children {
		live[c.Dest] = true
		if sum := sums[c.Name]; sum != "" {
			f.rec.Files[c.Dest] = recordedFile{sum, c.ItemKey}
			f.rec.dirty = true
		}
	}
	var (
		outs []outcome
		err  error
	)
	g := resources.DefaultGuard
	if rn.Guard != nil {
		g = *rn.Guard
	}
	key := eachCountKey(f.parent)
	if f.recErr != nil {
		// What it lists is not deleted; herald's own record, of what it wrote now,
		// replaces it.
		err = f.recErr
	} else if why := g.With(f.parent.Guard).Check(map[string]int{key: before}, map[string]int{key: len(f.children)}); why != "" {
		err = fmt.Errorf("%s: the files of the items that are gone stay; run herald watch, which removes them once the smaller list persists for drop_hold, or set min_instances = 0 and max_drop = \"100%%\" on the resource", why)
	} else {
		for _, dest := range slices.Sorted(maps.Keys(f.rec.Files)) {
			if !live[dest] {
				outs = append(outs, rn.removeFile(f.parent, f.rec, dest))
			}
		}
	}
	if f.rec.dirty && !rn.Syncer.DryRun {
		if serr := f.rec.save(); serr != nil {
			err = errors.Join(err, serr)
		}
	}
	return outs, err
}
