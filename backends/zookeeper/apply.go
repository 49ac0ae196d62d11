package zookeeper

import (
	"errors"
	"maps"
	"sort"

	"github.com/heraldhq/herald/backends"
)

// This file holds the tree's apply side: re-reading what a batch of notifications
// announced into the mirror, and turning the touched znodes into the key changes (and
// service lists) subscribers receive.

// apply re-reads what a batch of watch events announced into the mirror and adds what it
// touched to what flush will publish.
func (t *tree) apply(dirty map[string]uint8) error {
	touched := make(map[string]struct{})
	var rev uint64
	for p, bits := range dirty {
		if bits&dirtyGone != 0 {
			t.remove(p, touched)
		}
	}
	fs, loads := t.fetchesFor(dirty)
	if err := t.s.runAll(t.ctx, fs); err != nil {
		return err
	}
	for _, f := range fs {
		r, born := t.merge(f, touched)
		rev = max(rev, r)
		loads = append(loads, born...)
	}
	r, err := t.load(loads, touched)
	if err != nil {
		return err
	}
	rev = max(rev, r)
	if r, err = t.settleRoot(touched); err != nil {
		return err
	}
	rev = max(rev, r)
	if !t.pendingFull {
		if t.pending == nil {
			t.pending = touched
		} else {
			maps.Copy(t.pending, touched)
		}
	}
	t.pendingRev = max(t.pendingRev, rev)
	return nil
}

// fetchesFor returns the reads that dirty asks of znodes in the mirror, and the paths
// to load whole (the watched prefix, when it was missing).
func (t *tree) fetchesFor(dirty map[string]uint8) (fs []*fetch, loads []string) {
	for p, bits := range dirty {
		if t.nodes[p] == nil {
			if p == t.path {
				loads = append(loads, p)
			}
			continue
		}
		f := &fetch{path: p, data: bits&dirtyData != 0, kids: bits&dirtyChildren != 0, watch: true}
		if f.data || f.kids {
			fs = append(fs, f)
		}
	}
	return fs, loads
}

// merge puts one read into the mirror, noting the znodes whose value or children it
// changed in touched; it returns the read's revision and the new children to load.
func (t *tree) merge(f *fetch, touched map[string]struct{}) (rev uint64, born []string) {
	n := t.nodes[f.path]
	if n == nil {
		return 0, nil
	}
	if f.gone {
		t.remove(f.path, touched)
		return 0, nil
	}
	if f.data {
		rev = max(rev, maxZxid(f.dstat))
		if v := string(f.val); v != n.val {
			n.val = v
			touched[f.path] = struct{}{}
		}
	}
	if f.kids {
		rev = max(rev, maxZxid(f.cstat))
		now := make(map[string]struct{}, len(f.children))
		for _, c := range f.children {
			if t.s.hidden(f.path, c) {
				continue
			}
			now[c] = struct{}{}
			if _, had := n.children[c]; !had {
				born = append(born, join(f.path, c))
			}
		}
		for c := range n.children {
			if _, still := now[c]; !still {
				t.remove(join(f.path, c), touched)
			}
		}
	}
	return rev, born
}

// settleRoot handles a watched prefix that is missing after the reads: it arms an exist
// watch, or loads the prefix if it appeared meanwhile (a bounded number of times), and
// returns the revision that saw it gone or loaded.
func (t *tree) settleRoot(touched map[string]struct{}) (uint64, error) {
	s := t.s
	var rev uint64
	for i := 0; t.nodes[t.path] == nil; i++ {
		if i == maxRootRace {
			return 0, errors.New("watched prefix keeps appearing and vanishing")
		}
		appeared, err := s.watchExists(t.ctx, t.path)
		if err != nil {
			return 0, s.errAt("watch", t.path, err)
		}
		if !appeared {
			// The deletion moved the pzxid of an ancestor: that is its revision.
			_, st, err := s.nearestAncestor(t.ctx, t.path)
			if err != nil {
				return 0, err
			}
			return max(rev, maxZxid(st)), nil
		}
		r, err := t.load([]string{t.path}, touched)
		if err != nil {
			return 0, err
		}
		rev = max(rev, r)
	}
	return rev, nil
}

// publish computes which keys the touched znodes changed and hands them to subscribers.
func (t *tree) publish(touched map[string]struct{}, rev uint64) {
	s := t.s
	upserts := make(map[string]string)
	var deleted []string
	for p := range touched {
		k := s.keyOf(p)
		if n := t.nodes[p]; n != nil && s.isKey(n.val, len(n.children) > 0) {
			if old, ok := t.kv[k]; !ok || old != n.val {
				upserts[k] = n.val
			}
		} else if _, ok := t.kv[k]; ok {
			deleted = append(deleted, k)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rev = max(t.rev, rev)
	if len(upserts) == 0 && len(deleted) == 0 {
		return
	}
	sort.Strings(deleted)
	for k, v := range upserts {
		t.kv[k] = v
	}
	for _, k := range deleted {
		delete(t.kv, k)
	}
	if t.index != nil {
		for k, v := range upserts {
			t.indexLocked(k, v)
		}
		for _, k := range deleted {
			delete(t.index, k)
		}
	}
	for sb := range t.subs {
		sb.offer(t, upserts, deleted)
	}
}

// indexLocked parses the instance at k (when k is one) with the shared parsers; a
// malformed value, or a key at a level the layout does not have, is skipped with a
// warning naming its key, once per value.
func (t *tree) indexLocked(k, v string) {
	if old, ok := t.index[k]; ok && old.val == v {
		return
	}
	in := instance{val: v}
	if sv, ok := t.s.layout.ParseKey(t.s.cfg, t.s.log, k, v); ok {
		sv.Backend = "zookeeper"
		in.svc, in.ok = sv, true
	}
	t.index[k] = in
}

func (t *tree) rebuildIndexLocked() {
	old := t.index
	t.index = make(map[string]instance, len(t.kv))
	for k, v := range t.kv {
		if in, ok := old[k]; ok && in.val == v {
			t.index[k] = in
			continue
		}
		t.indexLocked(k, v)
	}
}

func (t *tree) servicesLocked(q backends.ServiceQuery) []backends.Service {
	out := []backends.Service{}
	for _, in := range t.index {
		if in.ok && t.s.layout.Selects(q, in.svc) {
			out = append(out, in.svc)
		}
	}
	backends.SortServices(out)
	return out
}

func (t *tree) namesLocked() []backends.ServiceSummary {
	byName := make(map[string][]backends.Service)
	for _, in := range t.index {
		if in.ok {
			byName[in.svc.Name] = append(byName[in.svc.Name], in.svc)
		}
	}
	return backends.ServiceSummaries(byName)
}
