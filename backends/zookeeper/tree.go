package zookeeper

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/heraldhq/herald/backends"
)

// This file holds the tree's read side: the mirror of one watched prefix, the goroutine
// that follows its notifications, and the reads that (re)load it. apply.go turns what
// was read into key changes; watch.go hands them to each Watch call.

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
	rs := &runState{log: t.s.log.With("prefix", t.key), bo: newBackoff(), timer: time.NewTimer(time.Hour)}
	rs.timer.Stop()
	defer rs.timer.Stop()
	// One-shot watches mean the mirror is read znode by znode, not at one revision. It is
	// published only when a round of reads ends with no notification pending: every
	// znode in it has a watch armed since it was read, and the server sends a watch's
	// notification before the reply to any later read, so no znode changed between its
	// read and the last one, and the mirror is the state the registry had then.
	// Otherwise a batch that read a child list before some creations and a value after
	// them would render a mix the registry never held; the notifications pending are
	// read first.
	resync := true
	for {
		var next step
		if resync {
			next = t.resyncStep(rs)
			resync = next != stepPublish
		} else {
			next, resync = t.changeStep(rs)
		}
		switch next {
		case stepStop:
			return
		case stepAgain:
			continue
		}
		t.publishIfQuiet(rs)
	}
}

// runState is what run keeps between rounds.
type runState struct {
	log        *slog.Logger
	bo         backends.Backoff
	timer      *time.Timer
	deferSince time.Time // when the first publish was held back, zero when none is
}

// step says how run goes on after a round of reads.
type step int

const (
	stepStop    step = iota // the tree is stopping
	stepAgain               // read again before publishing anything
	stepPublish             // the reads succeeded: publish once quiet
)

// resyncStep reads the whole prefix again.
func (t *tree) resyncStep(rs *runState) step {
	err := t.resync()
	if t.ctx.Err() != nil {
		return stepStop
	}
	if err != nil {
		if !t.retryWait(rs, err) {
			return stepStop
		}
		return stepAgain
	}
	rs.bo.Reset()
	return stepPublish
}

// changeStep waits for notifications and re-reads what they announce; resync says the
// next round must read everything again.
func (t *tree) changeStep(rs *runState) (next step, resync bool) {
	select {
	case <-t.ctx.Done():
		return stepStop, false
	case <-t.kick:
	}
	dirty, resync := dirtyOf(t.takeQueue())
	if resync {
		return stepAgain, true
	}
	if len(dirty) > 0 {
		if err := t.apply(dirty); err != nil {
			if t.ctx.Err() != nil || !t.retryWait(rs, err) {
				return stepStop, true
			}
			return stepAgain, true
		}
	}
	return stepPublish, false
}

// dirtyOf sorts notifications into what each znode needs read again; resync when the
// session changed or the server dropped watches, which only a full read repairs.
func dirtyOf(evs []zk.Event) (dirty map[string]uint8, resync bool) {
	dirty = make(map[string]uint8)
	for _, ev := range evs {
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
	return dirty, resync
}

// retryWait logs a failed read and waits out the backoff; false when the tree stops.
func (t *tree) retryWait(rs *runState, err error) bool {
	// A failed read restarts the deferral: the reads after it start a fresh round.
	rs.deferSince = time.Time{}
	d := rs.bo.Next()
	level := slog.LevelWarn
	if transient(err) {
		// The connection state change is logged already.
		level = slog.LevelDebug
	}
	rs.log.Log(t.ctx, level, "zookeeper watch: read failed; retrying", "err", err, "in", d.Round(time.Millisecond))
	rs.timer.Reset(d)
	select {
	case <-t.ctx.Done():
		return false
	case <-rs.timer.C:
		return true
	}
}

// publishIfQuiet publishes what was read unless notifications are waiting (read them
// first), for at most maxDefer under a write storm.
func (t *tree) publishIfQuiet(rs *runState) {
	if t.queued() {
		if rs.deferSince.IsZero() {
			rs.deferSince = time.Now()
		}
		if time.Since(rs.deferSince) < maxDefer {
			return // the kick is waiting: read what changed first
		}
		rs.log.Debug("zookeeper watch: changes keep arriving; publishing what was read", "held", time.Since(rs.deferSince).Round(time.Millisecond))
	}
	rs.deferSince = time.Time{}
	t.flush()
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
