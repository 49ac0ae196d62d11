package zookeeper

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/heraldhq/herald/backends"
)

// What an event asks a tree to look at again, as bits.
const (
	dirtyData uint8 = 1 << iota
	dirtyChildren
	dirtyGone
	dirtyCreated
)

// maxDefer bounds how long a tree holds back reads while new notifications keep
// arriving (see run): under a write storm with no quiet moment, what was read is
// published after this long rather than never.
const maxDefer = 2 * time.Second

// maxRootRace bounds how often a load retries when the watched root appears or vanishes
// while it is being read.
const maxRootRace = 8

// tree mirrors one watched prefix: every znode under it, with a data and a child watch
// on each, and an exist watch on the prefix itself while it is missing. One goroutine
// (run) owns it; all Watch calls on the prefix subscribe to it.
type tree struct {
	s      *Store
	key    string // herald prefix
	path   string // znode path of the prefix
	refs   int    // guarded by s.tmu
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	qmu   sync.Mutex
	queue []zk.Event
	kick  chan struct{}

	nodes map[string]*znode // owned by run

	// Read but not yet published, owned by run: a full state after a resync, or the
	// znodes an apply touched, held back while notifications keep arriving.
	pendingFull bool
	pending     map[string]struct{}
	pendingRev  uint64

	mu     sync.Mutex
	kv     map[string]string // the keys as last published
	rev    uint64
	loaded bool
	index  map[string]instance // parsed instances by key; nil until a service watch needs it
	subs   map[*sub]struct{}
}

type znode struct {
	val      string
	children map[string]struct{}
}

// instance is one parsed service instance, with the value it was parsed from so that an
// unchanged value is not parsed (nor warned about) again.
type instance struct {
	val string
	svc backends.Service
	ok  bool
}

func (s *Store) acquire(key string) (*tree, error) {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	if s.ctx.Err() != nil {
		return nil, ErrClosed
	}
	p := s.serverPath(key)
	t := s.trees[p]
	if t == nil {
		t = &tree{
			s: s, key: key, path: p,
			done:  make(chan struct{}),
			kick:  make(chan struct{}, 1),
			nodes: make(map[string]*znode),
			kv:    make(map[string]string),
			subs:  make(map[*sub]struct{}),
		}
		t.ctx, t.cancel = context.WithCancel(s.ctx)
		s.trees[p] = t
		s.wg.Add(1)
		go t.run()
	}
	t.refs++
	return t, nil
}

// release drops one subscriber; the last one stops the tree and waits for it. The
// watches it set stay with the library until they fire once; the store-wide table keeps
// them counted, so watching the prefix again does not set them twice.
func (s *Store) release(t *tree, sb *sub) {
	t.mu.Lock()
	delete(t.subs, sb)
	t.mu.Unlock()
	s.tmu.Lock()
	t.refs--
	last := t.refs == 0
	if last {
		delete(s.trees, t.path)
		t.cancel()
	}
	s.tmu.Unlock()
	if last {
		<-t.done
	}
}

// enqueue is called from the connection's event callback: it must never block.
func (t *tree) enqueue(ev zk.Event) {
	t.qmu.Lock()
	t.queue = append(t.queue, ev)
	t.qmu.Unlock()
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// queued reports whether notifications arrived that run has not taken yet.
func (t *tree) queued() bool {
	t.qmu.Lock()
	defer t.qmu.Unlock()
	return len(t.queue) > 0
}

func (t *tree) takeQueue() []zk.Event {
	t.qmu.Lock()
	defer t.qmu.Unlock()
	q := t.queue
	t.queue = nil
	return q
}

func (t *tree) run() {
	defer t.s.wg.Done()
	defer close(t.done)
	log := t.s.log.With("prefix", t.key)
	resync := true
	bo := newBackoff()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var deferSince time.Time // when the first publish was held back, zero when none is
	wait := func(err error) bool {
		// A failed read restarts the deferral: the reads after it start a fresh round.
		deferSince = time.Time{}
		d := bo.Next()
		level := slog.LevelWarn
		if transient(err) {
			// The connection state change is logged already.
			level = slog.LevelDebug
		}
		log.Log(t.ctx, level, "zookeeper watch: read failed; retrying", "err", err, "in", d.Round(time.Millisecond))
		timer.Reset(d)
		select {
		case <-t.ctx.Done():
			return false
		case <-timer.C:
			return true
		}
	}
	// One-shot watches mean the mirror is read znode by znode, not at one revision. It is
	// published only when a round of reads ends with no notification pending: every
	// znode in it has a watch armed since it was read, and the server sends a watch's
	// notification before the reply to any later read, so no znode changed between its
	// read and the last one, and the mirror is the state the registry had then.
	// Otherwise a batch that read a child list before some creations and a value after
	// them would render a mix the registry never held; the notifications pending are
	// read first.
	for {
		if resync {
			err := t.resync()
			if t.ctx.Err() != nil {
				return
			}
			if err != nil {
				if !wait(err) {
					return
				}
				continue
			}
			resync = false
			bo.Reset()
		} else {
			select {
			case <-t.ctx.Done():
				return
			case <-t.kick:
			}
			dirty := make(map[string]uint8)
			for _, ev := range t.takeQueue() {
				switch ev.Type {
				case zk.EventSession:
					// A reconnect (the library re-registered the watches) or a new session
					// (every watch is gone): read everything again either way.
					if ev.State == zk.StateHasSession {
						resync = true
					}
				case zk.EventNotWatching:
					resync = true
				case zk.EventNodeCreated:
					dirty[ev.Path] |= dirtyCreated
				case zk.EventNodeDataChanged:
					dirty[ev.Path] |= dirtyData
				case zk.EventNodeChildrenChanged:
					dirty[ev.Path] |= dirtyChildren
				case zk.EventNodeDeleted:
					dirty[ev.Path] |= dirtyGone
				}
			}
			if resync {
				continue
			}
			if len(dirty) > 0 {
				if err := t.apply(dirty); err != nil {
					if t.ctx.Err() != nil {
						return
					}
					resync = true
					if !wait(err) {
						return
					}
					continue
				}
			}
		}
		if t.queued() {
			if deferSince.IsZero() {
				deferSince = time.Now()
			}
			if time.Since(deferSince) < maxDefer {
				continue // the kick is waiting: read what changed first
			}
			log.Debug("zookeeper watch: changes keep arriving; publishing what was read", "held", time.Since(deferSince).Round(time.Millisecond))
		}
		deferSince = time.Time{}
		t.flush()
	}
}

// flush publishes what was read since the last publish.
func (t *tree) flush() {
	switch {
	case t.pendingFull:
		t.publishFull(t.pendingRev)
	case len(t.pending) > 0 || t.pendingRev > 0:
		t.publish(t.pending, t.pendingRev)
	}
	t.pendingFull, t.pending, t.pendingRev = false, nil, 0
}

// resync reads the whole prefix again, arming every watch that is not armed, and leaves
// it for flush to publish as a Full event.
func (t *tree) resync() error {
	s := t.s
	if err := s.waitReady(t.ctx); err != nil {
		return err
	}
	// The full read below sees everything these events announced, the reconnect that
	// made the store ready included.
	t.takeQueue()
	var rev uint64
	for range maxRootRace {
		t.nodes = make(map[string]*znode)
		touched := make(map[string]struct{})
		r, err := t.load([]string{t.path}, touched)
		if err != nil {
			return err
		}
		rev = max(rev, r)
		if t.nodes[t.path] != nil {
			break
		}
		// Arm the exist watch before reading the ancestor, so that a creation in
		// between fires it.
		appeared, err := s.watchExists(t.ctx, t.path)
		if err != nil {
			return s.errAt("watch", t.path, err)
		}
		if appeared {
			continue
		}
		_, st, err := s.nearestAncestor(t.ctx, t.path)
		if err != nil {
			return err
		}
		rev = max(rev, maxZxid(st))
		break
	}
	// The mirror is whole again: it is published in full (flush), superseding any
	// change held back.
	t.pendingFull, t.pending, t.pendingRev = true, nil, rev
	return nil
}

// publishFull hands the whole mirror to subscribers.
func (t *tree) publishFull(rev uint64) {
	s := t.s
	kv := make(map[string]string, len(t.nodes))
	for p, n := range t.nodes {
		if s.isKey(n.val, len(n.children) > 0) {
			kv[s.keyOf(p)] = n.val
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.kv, t.loaded = kv, true
	t.rev = max(t.rev, rev)
	if t.index != nil {
		t.rebuildIndexLocked()
	}
	for sb := range t.subs {
		sb.offerFull(t)
	}
}

// load reads the znodes at paths and everything below them into the mirror, arming
// their watches, and returns the highest zxid seen.
func (t *tree) load(paths []string, touched map[string]struct{}) (uint64, error) {
	s := t.s
	var rev uint64
	frontier := paths
	for len(frontier) > 0 {
		fs := make([]*fetch, 0, len(frontier))
		for _, p := range frontier {
			if t.nodes[p] == nil {
				fs = append(fs, &fetch{path: p, data: true, kids: true, watch: true})
			}
		}
		if err := s.runAll(t.ctx, fs); err != nil {
			return rev, err
		}
		frontier = nil
		for _, f := range fs {
			if f.gone {
				// Deleted before we got to it: its parent's child watch reports that.
				if f.path != t.path {
					if par := t.nodes[parentOf(f.path)]; par != nil {
						delete(par.children, baseName(f.path))
						touched[parentOf(f.path)] = struct{}{}
					}
				}
				continue
			}
			rev = max(rev, maxZxid(f.dstat), maxZxid(f.cstat))
			n := &znode{val: string(f.val)}
			for _, c := range f.children {
				if s.hidden(f.path, c) {
					continue
				}
				if n.children == nil {
					n.children = make(map[string]struct{}, len(f.children))
				}
				n.children[c] = struct{}{}
				frontier = append(frontier, join(f.path, c))
			}
			t.nodes[f.path] = n
			touched[f.path] = struct{}{}
			if f.path != t.path {
				if par := t.nodes[parentOf(f.path)]; par != nil {
					if par.children == nil {
						par.children = make(map[string]struct{})
					}
					par.children[baseName(f.path)] = struct{}{}
					touched[parentOf(f.path)] = struct{}{}
				}
			}
		}
	}
	return rev, nil
}

// remove drops p and everything below it from the mirror.
func (t *tree) remove(p string, touched map[string]struct{}) {
	if t.nodes[p] == nil {
		return
	}
	if p != t.path {
		if par := t.nodes[parentOf(p)]; par != nil {
			delete(par.children, baseName(p))
			touched[parentOf(p)] = struct{}{}
		}
	}
	stack := []string{p}
	for len(stack) > 0 {
		q := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		n := t.nodes[q]
		if n == nil {
			continue
		}
		for c := range n.children {
			stack = append(stack, join(q, c))
		}
		delete(t.nodes, q)
		touched[q] = struct{}{}
	}
}

// apply re-reads what a batch of watch events announced into the mirror and adds what it
// touched to what flush will publish.
func (t *tree) apply(dirty map[string]uint8) error {
	s := t.s
	touched := make(map[string]struct{})
	var rev uint64
	for p, bits := range dirty {
		if bits&dirtyGone != 0 {
			t.remove(p, touched)
		}
	}
	var fs []*fetch
	var loads []string
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
	if err := s.runAll(t.ctx, fs); err != nil {
		return err
	}
	for _, f := range fs {
		n := t.nodes[f.path]
		if n == nil {
			continue
		}
		if f.gone {
			t.remove(f.path, touched)
			continue
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
				if s.hidden(f.path, c) {
					continue
				}
				now[c] = struct{}{}
				if _, had := n.children[c]; !had {
					loads = append(loads, join(f.path, c))
				}
			}
			for c := range n.children {
				if _, still := now[c]; !still {
					t.remove(join(f.path, c), touched)
				}
			}
		}
	}
	r, err := t.load(loads, touched)
	if err != nil {
		return err
	}
	rev = max(rev, r)
	for i := 0; t.nodes[t.path] == nil; i++ {
		if i == maxRootRace {
			return errors.New("watched prefix keeps appearing and vanishing")
		}
		appeared, err := s.watchExists(t.ctx, t.path)
		if err != nil {
			return s.errAt("watch", t.path, err)
		}
		if !appeared {
			// The deletion moved the pzxid of an ancestor: that is its revision.
			_, st, err := s.nearestAncestor(t.ctx, t.path)
			if err != nil {
				return err
			}
			rev = max(rev, maxZxid(st))
			break
		}
		r, err := t.load([]string{t.path}, touched)
		if err != nil {
			return err
		}
		rev = max(rev, r)
	}
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

// attach subscribes sb; a tree already loaded offers its state at once.
func (t *tree) attach(sb *sub) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.subs[sb] = struct{}{}
	if sb.target.Kind() != backends.KindPrefix && t.index == nil {
		t.index = make(map[string]instance)
		t.rebuildIndexLocked()
	}
	if t.loaded {
		sb.offerFull(t)
	}
}

// sub is one Watch call's view of a tree: what it still has to send. Changes that pile
// up while the receiver is slow are merged (backends.Pending), never queued without
// bound. Service lists are recomputed from the tree when sent: their pending event only
// says that something changed, and whether the whole state was offered (Full).
type sub struct {
	target backends.Target
	from   uint64
	kick   chan struct{}

	mu      sync.Mutex
	offered bool // the initial state was offered (or found unnecessary)
	pending backends.Pending

	last []backends.Service // service lists: what was sent last
	sent bool
}

func (sb *sub) wake() {
	select {
	case sb.kick <- struct{}{}:
	default:
	}
}

// offerFull hands over the whole state; t.mu is held. The very first state is not sent
// when nothing under the prefix changed after from (the caller read it at from): any
// later change arrives through the watches armed when the tree was read.
func (sb *sub) offerFull(t *tree) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if !sb.offered {
		sb.offered = true
		if sb.from != 0 && t.rev <= sb.from {
			return
		}
	}
	ev := backends.Event{Target: sb.target, Revision: t.rev, Full: true}
	if sb.target.Kind() == backends.KindPrefix {
		ev.KVs = maps.Clone(t.kv)
	}
	sb.pending.Add(ev)
	sb.wake()
}

// offer merges an incremental change; t.mu is held. upserts and deleted are shared by
// every sub of the tree and only read.
func (sb *sub) offer(t *tree, upserts map[string]string, deleted []string) {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if !sb.offered {
		// The subscriber still waits for its first state; the next Full carries this.
		return
	}
	ev := backends.Event{Target: sb.target, Revision: t.rev}
	if sb.target.Kind() == backends.KindPrefix {
		ev.KVs, ev.Deleted = upserts, deleted
	}
	sb.pending.Add(ev)
	sb.wake()
}

// take builds the next event to send, if any.
func (sb *sub) take(t *tree) (backends.Event, bool) {
	sb.mu.Lock()
	ev, ok := sb.pending.Take()
	sb.mu.Unlock()
	if !ok {
		return backends.Event{}, false
	}
	kind := sb.target.Kind()
	if kind == backends.KindPrefix {
		if ev.KVs == nil {
			ev.KVs = map[string]string{}
		}
		return ev, true
	}

	full := ev.Full
	t.mu.Lock()
	ev.Revision = t.rev
	var list []backends.Service
	if kind == backends.KindService {
		list = t.servicesLocked(*sb.target.Service)
		ev.Services = list
	} else {
		ev.Names = t.namesLocked()
	}
	t.mu.Unlock()
	ev.Full = true
	if kind == backends.KindService && !full && sb.sent && reflect.DeepEqual(list, sb.last) {
		// A change under the service that leaves the filtered list as it was.
		return backends.Event{}, false
	}
	sb.last, sb.sent = list, true
	return ev, true
}

// Watch sends the changes of target to out until ctx ends (see backends.Store). Each
// prefix is watched once per Store whatever the number of Watch calls on it; a service
// is the prefix <root>/<name>, the catalog the prefix <root>.
func (s *Store) Watch(ctx context.Context, target backends.Target, from uint64, out chan<- backends.Event) error {
	sb := &sub{target: target, from: from, kick: make(chan struct{}, 1)}
	var key string
	switch target.Kind() {
	case backends.KindService:
		if err := s.checkQuery(*target.Service); err != nil {
			return err
		}
		dir, err := s.serviceKey(target.Service.Name)
		if err != nil {
			return err
		}
		key = dir
	case backends.KindServiceNames:
		key = s.layout.Root()
	default:
		key = backends.CleanKey(target.Prefix)
	}
	t, err := s.acquire(key)
	if err != nil {
		return err
	}
	defer s.release(t, sb)
	t.attach(sb)

	var gap *time.Timer
	defer func() {
		if gap != nil {
			gap.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.ctx.Done():
			return ErrClosed
		case <-sb.kick:
		}
		ev, ok := sb.take(t)
		if !ok {
			continue
		}
		select {
		case out <- ev:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.ctx.Done():
			return ErrClosed
		}
		if s.cfg.MinGap > 0 {
			if gap == nil {
				gap = time.NewTimer(s.cfg.MinGap)
			} else {
				gap.Reset(s.cfg.MinGap)
			}
			select {
			case <-gap.C:
			case <-ctx.Done():
				return ctx.Err()
			case <-s.ctx.Done():
				return ErrClosed
			}
		}
	}
}

func baseName(p string) string {
	return p[strings.LastIndexByte(p, '/')+1:]
}
