package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/heraldhq/herald/backends"
)

// maxReadAttempts bounds how often Get re-reads znodes that change while it reads them,
// and how often it retries after losing the connection.
const maxReadAttempts = 12

// snode is one znode read by Get.
type snode struct {
	val      string
	children []string
	dstat    zk.Stat
	cstat    zk.Stat
	seq      int64 // when it was read, in r.seq's order
}

// region is what one read of a prefix found.
type region struct {
	root  string            // znode path of the prefix
	nodes map[string]*snode // znode path -> node
	// When root is missing: its nearest existing ancestor and that one's stat, whose
	// pzxid moves when anything on the way down is created.
	anc     string
	ancStat zk.Stat
	seq     *atomic.Int64 // read counter, shared by the regions of one read
}

func maxZxid(st *zk.Stat) uint64 {
	return uint64(max(st.Czxid, st.Mzxid, st.Pzxid, 0))
}

func (r *region) rev() uint64 {
	var rev uint64
	for _, n := range r.nodes {
		rev = max(rev, maxZxid(&n.dstat), maxZxid(&n.cstat))
	}
	if len(r.nodes) == 0 {
		rev = max(rev, maxZxid(&r.ancStat))
	}
	return rev
}

// readRegion reads every znode under root.
func (s *Store) readRegion(ctx context.Context, root string, seq *atomic.Int64) (*region, error) {
	r := &region{root: root, nodes: make(map[string]*snode), seq: seq}
	if err := s.readInto(ctx, r, []string{root}); err != nil {
		return nil, err
	}
	if len(r.nodes) == 0 {
		if err := s.readAncestor(ctx, r); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// readInto reads the znodes at paths and everything below them into r, breadth first,
// many at a time. A znode that vanishes while being read is left out; its parent's
// pzxid has moved, so the check pass notices.
func (s *Store) readInto(ctx context.Context, r *region, paths []string) error {
	frontier := paths
	for len(frontier) > 0 {
		fs := make([]*fetch, len(frontier))
		for i, p := range frontier {
			fs[i] = &fetch{path: p, data: true, kids: true}
		}
		if err := s.runAll(ctx, fs); err != nil {
			return err
		}
		frontier = nil
		for _, f := range fs {
			if f.gone {
				continue
			}
			n := &snode{val: string(f.val), dstat: *f.dstat, cstat: *f.cstat, seq: r.seq.Add(1)}
			for _, c := range f.children {
				if s.hidden(f.path, c) {
					continue
				}
				n.children = append(n.children, c)
				frontier = append(frontier, join(f.path, c))
			}
			r.nodes[f.path] = n
		}
	}
	return nil
}

func (s *Store) readAncestor(ctx context.Context, r *region) error {
	anc, st, err := s.nearestAncestor(ctx, r.root)
	if err != nil {
		return err
	}
	r.anc, r.ancStat = anc, *st
	return nil
}

// nearestAncestor returns the closest existing ancestor of the missing znode p.
func (s *Store) nearestAncestor(ctx context.Context, p string) (string, *zk.Stat, error) {
	for a := parentOf(p); ; a = parentOf(a) {
		ok, st, err := s.exists(ctx, a)
		if err != nil {
			return "", nil, s.errAt("stat", a, err)
		}
		if ok || a == "/" {
			return a, st, nil
		}
	}
}

// changed stats every znode of the regions again and returns, per region, those that
// were created, changed, deleted or had their children changed since they were read. For
// a missing root it returns the root when anything on the way down to it moved.
func (s *Store) changed(ctx context.Context, regions []*region) ([][]string, error) {
	moved := make([][]string, len(regions))
	type item struct {
		r int
		f *statFetch
	}
	var items []item
	for i, r := range regions {
		if len(r.nodes) > 0 {
			for p := range r.nodes {
				items = append(items, item{i, &statFetch{path: p}})
			}
			continue
		}
		ok, _, err := s.exists(ctx, r.root)
		if err != nil {
			return nil, s.errAt("stat", r.root, err)
		}
		if !ok {
			ok, st, err := s.exists(ctx, r.anc)
			if err != nil {
				return nil, s.errAt("stat", r.anc, err)
			}
			ok = (!ok && r.anc != "/") || !sameStat(st, &r.ancStat)
		}
		if ok {
			moved[i] = []string{r.root}
		}
	}
	// Each znode must not move between its read and its check. The server answers one
	// session's requests in order, so checking the latest read first keeps the windows
	// of the last-read znodes (leaves; after a repair, the ones that just moved: the hot
	// ones) as short as a round trip.
	sort.Slice(items, func(a, b int) bool {
		return regions[items[a].r].nodes[items[a].f.path].seq > regions[items[b].r].nodes[items[b].f.path].seq
	})
	fs := make([]*statFetch, len(items))
	for i, it := range items {
		fs[i] = it.f
	}
	if err := s.statAll(ctx, fs); err != nil {
		return nil, err
	}
	for _, it := range items {
		n := regions[it.r].nodes[it.f.path]
		if !it.f.ok || !sameStat(it.f.stat, &n.dstat) || !sameStat(it.f.stat, &n.cstat) {
			moved[it.r] = append(moved[it.r], it.f.path)
		}
	}
	return moved, nil
}

type statFetch struct {
	path string
	ok   bool
	stat *zk.Stat
	err  error
}

func (s *Store) statAll(ctx context.Context, fs []*statFetch) error {
	sem := make(chan struct{}, readParallelism)
	var wg sync.WaitGroup
	for _, f := range fs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f.ok, f.stat, f.err = s.exists(ctx, f.path)
		}()
	}
	wg.Wait()
	for _, f := range fs {
		if f.err != nil {
			return s.errAt("stat", f.path, f.err)
		}
	}
	return nil
}

func sameStat(a, b *zk.Stat) bool {
	return a.Czxid == b.Czxid && a.Mzxid == b.Mzxid && a.Pzxid == b.Pzxid
}

// repair reads the moved znodes of r again: their data and children, the subtrees of
// new children, and drops what vanished. Znodes that did not move keep their first read;
// the next check pass covers them all again.
func (s *Store) repair(ctx context.Context, r *region, moved []string) error {
	if len(r.nodes) == 0 || r.nodes[r.root] == nil && slices.Contains(moved, r.root) {
		// The root appeared, vanished or was replaced: read the region anew.
		fresh, err := s.readRegion(ctx, r.root, r.seq)
		if err != nil {
			return err
		}
		*r = *fresh
		return nil
	}
	fs := make([]*fetch, 0, len(moved))
	for _, p := range moved {
		if r.nodes[p] != nil {
			fs = append(fs, &fetch{path: p, data: true, kids: true})
		}
	}
	if err := s.runAll(ctx, fs); err != nil {
		return err
	}
	var added []string
	for _, f := range fs {
		old := r.nodes[f.path]
		if old == nil {
			continue // dropped with an ancestor above
		}
		if f.gone {
			r.drop(f.path)
			continue
		}
		n := &snode{val: string(f.val), dstat: *f.dstat, cstat: *f.cstat, seq: r.seq.Add(1)}
		for _, c := range f.children {
			if s.hidden(f.path, c) {
				continue
			}
			n.children = append(n.children, c)
			if !slices.Contains(old.children, c) {
				added = append(added, join(f.path, c))
			}
		}
		for _, c := range old.children {
			if !slices.Contains(n.children, c) {
				r.drop(join(f.path, c))
			}
		}
		r.nodes[f.path] = n
	}
	if err := s.readInto(ctx, r, added); err != nil {
		return err
	}
	if len(r.nodes) == 0 {
		return s.readAncestor(ctx, r)
	}
	return nil
}

// drop removes p and everything below it from r.
func (r *region) drop(p string) {
	stack := []string{p}
	for len(stack) > 0 {
		q := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if n := r.nodes[q]; n != nil {
			for _, c := range n.children {
				stack = append(stack, join(q, c))
			}
			delete(r.nodes, q)
		}
	}
}

// isKey decides which znodes are keys: leaves always (as confd), intermediate znodes
// when they hold data, unless keys=leaves asks for confd's rule.
func (s *Store) isKey(val string, hasChildren bool) bool {
	if !hasChildren {
		return true
	}
	return !s.leaves && val != ""
}

// read returns the regions of prefixes (server paths) as they all were at one moment.
// Connection losses are waited out (the client reconnects by itself) until ctx ends;
// znodes that keep changing are read again at most maxReadAttempts times.
func (s *Store) read(ctx context.Context, roots []string) ([]*region, error) {
	var lastErr error
	bo := newBackoff()
	for drops := 0; ; drops++ {
		if drops > 0 {
			select {
			case <-ctx.Done():
				return nil, s.readErr(roots, lastErr, ctx.Err())
			case <-time.After(bo.Next()):
			}
		}
		if err := s.waitReady(ctx); err != nil {
			if lastErr != nil && !errors.Is(err, ErrClosed) {
				return nil, s.readErr(roots, lastErr, err)
			}
			return nil, err
		}
		regions, err := s.readOnce(ctx, roots)
		switch {
		case err == nil:
			return regions, nil
		case ctx.Err() != nil:
			return nil, s.readErr(roots, err, ctx.Err())
		case transient(err) && drops < maxReadAttempts:
			lastErr = err
		default:
			return nil, err
		}
	}
}

func (s *Store) readErr(roots []string, last, err error) error {
	if last == nil {
		return err
	}
	return fmt.Errorf("zookeeper %s: read %s: %v: %w", s.server(), strings.Join(roots, ", "), last, err)
}

// ErrKeptChanging is returned by Get (wrapped, naming the server and prefixes) when the
// prefixes changed during every one of its bounded re-reads: there was no moment at
// which it could see them all unchanged.
var ErrKeptChanging = errors.New("znodes kept changing while being read")

func (s *Store) readOnce(ctx context.Context, roots []string) ([]*region, error) {
	// Bring the server we read from up to date with the leader, so that the read sees
	// every write acknowledged before it began.
	syncPath := s.serverPath("/")
	if _, err := call(ctx, func() (string, error) { return s.conn.Sync(syncPath) }); err != nil && !errors.Is(err, zk.ErrNoNode) {
		return nil, s.errAt("sync", syncPath, err)
	}
	regions := make([]*region, len(roots))
	seq := new(atomic.Int64)
	for i, root := range roots {
		r, err := s.readRegion(ctx, root, seq)
		if err != nil {
			return nil, err
		}
		regions[i] = r
	}
	// Let a burst of writes pass, briefly: the znodes are being written right now.
	bo := backends.Backoff{Min: time.Millisecond, Max: 50 * time.Millisecond}
	for attempt := 0; ; attempt++ {
		moved, err := s.changed(ctx, regions)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(moved, func(m []string) bool { return len(m) > 0 }) {
			return regions, nil
		}
		s.log.Debug("zookeeper read: znodes moved while being read; reading them again", "moved", moved, "attempt", attempt)
		if attempt == maxReadAttempts {
			return nil, fmt.Errorf("zookeeper %s: read %s: %w (%d attempts)", s.server(), strings.Join(roots, ", "), ErrKeptChanging, maxReadAttempts)
		}
		if attempt >= 2 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(bo.Next()):
			}
		}
		// Re-read every moved znode at once, so that they are all read close together
		// just before the next check.
		errs := make([]error, len(regions))
		var wg sync.WaitGroup
		for i, r := range regions {
			if len(moved[i]) > 0 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[i] = s.repair(ctx, r, moved[i])
				}()
			}
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
	}
}

// Get returns every key under the prefixes as they all were at one moment (see the
// package documentation), and the highest zxid seen.
func (s *Store) Get(ctx context.Context, prefixes []string) (map[string]string, uint64, error) {
	keys := backends.MinimalPrefixes(prefixes)
	roots := make([]string, len(keys))
	for i, k := range keys {
		roots[i] = s.serverPath(k)
	}
	regions, err := s.read(ctx, roots)
	if err != nil {
		return nil, 0, err
	}
	out := make(map[string]string)
	var rev uint64
	for _, r := range regions {
		rev = max(rev, r.rev())
		for p, n := range r.nodes {
			if s.isKey(n.val, len(n.children) > 0) {
				out[s.keyOf(p)] = n.val
			}
		}
	}
	return out, rev, nil
}

// serviceKey checks a service name and returns the narrowest key holding its instances.
func (s *Store) serviceKey(name string) (string, error) {
	p, err := s.layout.ServicePrefix(name)
	if err != nil {
		return "", fmt.Errorf("zookeeper: %w", err)
	}
	return p, nil
}

// checkQuery refuses a datacenter the layout has no {dc} level for.
func (s *Store) checkQuery(q backends.ServiceQuery) error {
	if err := s.layout.CheckQuery(q); err != nil {
		return fmt.Errorf("zookeeper: %w", err)
	}
	return nil
}

// Services returns the instances of q.Name at the services layout, parsed by the shared
// instance parsers, filtered by q and sorted. A service with no znode has no instances.
func (s *Store) Services(ctx context.Context, q backends.ServiceQuery) ([]backends.Service, uint64, error) {
	if err := s.checkQuery(q); err != nil {
		return nil, 0, err
	}
	dir, err := s.serviceKey(q.Name)
	if err != nil {
		return nil, 0, err
	}
	kvs, rev, err := s.Get(ctx, []string{dir})
	if err != nil {
		return nil, 0, err
	}
	all := s.layout.ServicesUnder(s.cfg, kvs, s.log)[q.Name]
	out := make([]backends.Service, 0, len(all))
	for _, sv := range all {
		sv.Backend = "zookeeper"
		if s.layout.Selects(q, sv) {
			out = append(out, sv)
		}
	}
	backends.SortServices(out)
	return out, rev, nil
}

// ServiceNames lists the services that have at least one readable instance under the
// services root, with the union of their tags.
func (s *Store) ServiceNames(ctx context.Context) ([]backends.ServiceSummary, uint64, error) {
	kvs, rev, err := s.Get(ctx, []string{s.layout.Root()})
	if err != nil {
		return nil, 0, err
	}
	return backends.ServiceSummaries(s.layout.ServicesUnder(s.cfg, kvs, s.log)), rev, nil
}
