package zookeeper

import (
	"context"
	"maps"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/backends"
)

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
