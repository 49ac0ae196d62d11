package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/heraldhq/herald/backends"
)

var (
	// errResync: the watch cannot resume exactly (history compacted); re-read.
	errResync = errors.New("resync")
	// errRetryNow: the watch changed its range and can retry at once.
	errRetryNow = errors.New("retry")
)

// Watch sends the changes of t after revision from to out until ctx ends, and returns
// ctx.Err(). With from == 0 it first reads the target and sends it as a Full event.
//
// Prefix targets get incremental events, one per batch of revisions etcd delivers
// (several revisions merge into one event only while out is not ready or MinGap has
// not passed, so the cache only ever holds states that existed). Service and
// service-name targets always get Full events, sent only when the list changes.
// After any interruption the watch resumes at the revision after the last one it
// saw; when etcd has compacted that history away, it re-reads and sends Full.
func (s *Store) Watch(ctx context.Context, t backends.Target, from uint64, out chan<- backends.Event) error {
	f, err := s.newFollower(t)
	if err != nil {
		return err
	}
	w := &watcher{s: s, f: f, ob: newOutbox(out, s.cfg.MinGap), bo: newBackoff()}
	if from > 0 {
		w.next = int64(from) + 1
	}
	return w.run(ctx)
}

// follower turns what etcd sends into events for one target.
type follower struct {
	s      *Store
	target backends.Target
	prefix string
	q      backends.ServiceQuery
	log    *slog.Logger // for the parsers: warns once per malformed instance

	// Service lists and names are recomputed whole on each change from the keys
	// under the prefix, kept here, and sent only when they differ from the last.
	kvs       map[string]string
	known     bool // lastSvcs/lastNames hold what the receiver has
	lastSvcs  []backends.Service
	lastNames []backends.ServiceSummary

	// parsed holds the catalog's usable instances by key, each value parsed once when it
	// arrives rather than all of them on every change (1,000 services: most of a
	// change's CPU otherwise).
	parsed map[string]backends.Service
	// namesMoved: a change since the last list touched a name or tags, so the catalog
	// must be computed again (an instance's new address leaves it as it was).
	namesMoved bool
}

// parse records what key k (value v, ok false for a delete) now holds, for the catalog.
func (f *follower) parse(k, v string, ok bool) {
	old, had := f.parsed[k]
	delete(f.parsed, k)
	if ok {
		for _, list := range f.s.layout.ServicesUnder(f.s.cfg, map[string]string{k: v}, f.log) {
			f.parsed[k] = list[0]
		}
	}
	now, has := f.parsed[k]
	if had != has || old.Name != now.Name || !slices.Equal(old.Tags, now.Tags) {
		f.namesMoved = true
	}
}

func (s *Store) newFollower(t backends.Target) (*follower, error) {
	f := &follower{s: s, target: t, log: slog.New(newQuietRepeats(s.log.Handler()))}
	switch t.Kind() {
	case backends.KindService:
		if err := s.layout.CheckQuery(*t.Service); err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		sp, err := s.serviceSpan(t.Service.Name)
		if err != nil {
			return nil, err
		}
		f.prefix, f.q = sp.prefix, *t.Service
	case backends.KindServiceNames:
		f.prefix = s.layout.Root()
	default:
		if t.Prefix == "" {
			return nil, fmt.Errorf("%s: watch: empty target", s.name)
		}
		f.prefix = backends.CleanKey(t.Prefix)
	}
	return f, nil
}

// span is recomputed on each attempt: a denied watch may have narrowed it.
func (f *follower) span() span {
	if f.target.Kind() != backends.KindPrefix {
		return span{prefix: f.prefix}
	}
	return span{prefix: f.prefix, self: f.prefix != "/" && !f.s.isSubtreeOnly(f.prefix)}
}

// needsBase reports whether the follower must read the target as of the revision the
// receiver already has before it can turn changes into whole lists.
func (f *follower) needsBase() bool { return f.target.Kind() != backends.KindPrefix && f.kvs == nil }

// base sets what the receiver already has, without sending it.
func (f *follower) base(kvs map[string]string) {
	f.kvs, f.parsed = kvs, nil
	f.lastSvcs, f.lastNames = f.compute()
	f.known = true
}

func (f *follower) compute() ([]backends.Service, []backends.ServiceSummary) {
	switch f.target.Kind() {
	case backends.KindService:
		return f.s.filterServices(f.q, f.kvs, f.log), nil
	case backends.KindServiceNames:
		if f.parsed == nil {
			f.parsed = make(map[string]backends.Service, len(f.kvs))
			for k, v := range f.kvs {
				f.parse(k, v, true)
			}
		}
		byName := make(map[string][]backends.Service)
		for _, s := range f.parsed {
			byName[s.Name] = append(byName[s.Name], s)
		}
		return nil, summariesOf(byName)
	}
	return nil, nil
}

// full turns a complete read into an event; false when nothing the receiver has
// would change.
func (f *follower) full(kvs map[string]string, rev int64) (backends.Event, bool) {
	if f.target.Kind() == backends.KindPrefix {
		return backends.Event{Target: f.target, Revision: uint64(rev), Full: true, KVs: kvs}, true
	}
	f.kvs, f.parsed = kvs, nil
	return f.list(rev)
}

func (f *follower) list(rev int64) (backends.Event, bool) {
	if f.target.Kind() == backends.KindServiceNames && f.parsed != nil && !f.namesMoved && f.known {
		return backends.Event{}, false
	}
	f.namesMoved = false
	svcs, names := f.compute()
	if f.known && reflect.DeepEqual(svcs, f.lastSvcs) && reflect.DeepEqual(names, f.lastNames) {
		return backends.Event{}, false
	}
	f.lastSvcs, f.lastNames, f.known = svcs, names, true
	return backends.Event{Target: f.target, Revision: uint64(rev), Full: true, Services: svcs, Names: names}, true
}

// apply turns the events of one watch response (whole revisions, in order) into one
// event; false when none concerns the target.
func (f *follower) apply(sp span, evs []*clientv3.Event, rev int64) (backends.Event, bool) {
	if f.target.Kind() != backends.KindPrefix {
		changed := false
		for _, e := range evs {
			k := string(e.Kv.Key)
			if !sp.contains(k) {
				continue
			}
			changed = true
			if e.Type == mvccpb.DELETE {
				delete(f.kvs, k)
			} else {
				f.kvs[k] = string(e.Kv.Value)
			}
			if f.parsed != nil {
				f.parse(k, string(e.Kv.Value), e.Type != mvccpb.DELETE)
			}
		}
		if !changed {
			return backends.Event{}, false
		}
		return f.list(rev)
	}
	ev := backends.Event{Target: f.target, Revision: uint64(rev), KVs: map[string]string{}}
	var deleted map[string]struct{}
	for _, e := range evs {
		k := string(e.Kv.Key)
		if !sp.contains(k) {
			continue
		}
		if e.Type == mvccpb.DELETE {
			delete(ev.KVs, k)
			if deleted == nil {
				deleted = map[string]struct{}{}
			}
			deleted[k] = struct{}{}
		} else {
			ev.KVs[k] = string(e.Kv.Value)
			delete(deleted, k)
		}
	}
	ev.Deleted = sortedKeys(deleted)
	return ev, len(ev.KVs)+len(ev.Deleted) > 0
}

func sortedKeys(m map[string]struct{}) []string {
	if len(m) == 0 {
		return nil
	}
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// outbox holds the event waiting for the receiver. While the receiver is busy (or
// MinGap has not passed) later events merge into it (see backends.Pending), so a slow
// receiver sees fewer, larger steps, each one a state that existed, and never blocks
// the watch.
type outbox struct {
	out      chan<- backends.Event
	gap      time.Duration
	pending  backends.Pending
	lastSent time.Time
	timer    *time.Timer
	armed    bool
}

func newOutbox(out chan<- backends.Event, gap time.Duration) *outbox {
	return &outbox{out: out, gap: gap}
}

func (o *outbox) add(ev backends.Event) { o.pending.Add(ev) }

// ev is the event to offer on ch().
func (o *outbox) ev() backends.Event { return o.pending.Event() }

// ch is the channel to offer o.ev() on in a select: nil (never ready) when there is
// nothing to send or MinGap has not passed yet.
func (o *outbox) ch() chan<- backends.Event {
	if !o.pending.Has() {
		return nil
	}
	if o.gap > 0 && !o.lastSent.IsZero() {
		if wait := o.gap - time.Since(o.lastSent); wait > 0 {
			if !o.armed {
				if o.timer == nil {
					o.timer = time.NewTimer(wait)
				} else {
					o.timer.Reset(wait)
				}
				o.armed = true
			}
			return nil
		}
	}
	return o.out
}

// wake fires when MinGap has passed; nil when no wait is armed.
func (o *outbox) wake() <-chan time.Time {
	if !o.armed {
		return nil
	}
	return o.timer.C
}

func (o *outbox) woke() { o.armed = false }

func (o *outbox) sent() {
	o.pending.Clear()
	o.lastSent = time.Now()
}

func (o *outbox) stop() {
	if o.timer != nil {
		o.timer.Stop()
	}
}

// watcher is one Watch call's loop.
type watcher struct {
	s  *Store
	f  *follower
	ob *outbox

	next     int64 // first revision not yet seen; 0: unknown, read the target first
	failures int   // consecutive failed attempts
	bo       backends.Backoff
	lastErr  string
}

func (w *watcher) run(ctx context.Context) error {
	defer w.ob.stop()
	for {
		err := w.attempt(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case errors.Is(err, errClosed):
			return fmt.Errorf("%s: watch %s: %w", w.s.name, w.f.target, errClosed)
		case errors.Is(err, errResync), errors.Is(err, errRetryNow):
			continue
		}
		d := w.bo.Next()
		w.failures++
		w.logFailure(err, d)
		if err := w.wait(ctx, d); err != nil {
			return err
		}
	}
}

func (w *watcher) logFailure(err error, retry time.Duration) {
	op := fmt.Sprintf("watch %s", w.f.target)
	if w.next > 0 {
		op += fmt.Sprintf(" from revision %d", w.next)
	}
	err = w.s.fail(op, err)
	msg := err.Error()
	level := w.s.log.Debug
	if w.failures == 1 || msg != w.lastErr || w.failures%12 == 0 {
		level = w.s.log.Warn
	}
	w.lastErr = msg
	level("etcd watch interrupted; retrying", "target", w.f.target.String(), "error", msg, "attempt", w.failures, "retry_in", retry.Round(time.Millisecond))
}

// readTimeout bounds one read inside a watch, so that a watch waiting for etcd keeps
// saying why.
func (w *watcher) readTimeout() time.Duration { return 3 * w.s.cfg.DialTimeout }

// attempt brings the receiver up to date if needed and follows the watch stream until
// it breaks.
func (w *watcher) attempt(ctx context.Context) error {
	sp := w.f.span()
	switch {
	case w.next == 0:
		rctx, cancel := context.WithTimeout(ctx, w.readTimeout())
		kvs, rev, err := w.s.read(rctx, []span{sp}, 0)
		cancel()
		if err != nil {
			return err
		}
		if ev, ok := w.f.full(kvs, rev); ok {
			w.ob.add(ev)
		}
		w.next = rev + 1
	case w.f.needsBase():
		rctx, cancel := context.WithTimeout(ctx, w.readTimeout())
		kvs, _, err := w.s.read(rctx, []span{sp}, w.next-1)
		cancel()
		if errors.Is(err, rpctypes.ErrCompacted) || errors.Is(err, rpctypes.ErrFutureRev) {
			w.next = 0
			return errResync
		}
		if err != nil {
			return err
		}
		w.f.base(kvs)
	}
	cli, err := w.s.client(ctx)
	if err != nil {
		return err
	}
	return w.stream(ctx, cli, w.f.span())
}

func (w *watcher) stream(ctx context.Context, cli *clientv3.Client, sp span) error {
	// WithRequireLeader: a member cut off from the others ends the stream instead of
	// silently serving nothing new; the retry then lands on a member with a leader.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	key, end := sp.watchRange()
	wch := cli.Watch(wctx, key, clientv3.WithRange(end), clientv3.WithRev(w.next), clientv3.WithCreatedNotify())
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case w.ob.ch() <- w.ob.ev():
			w.ob.sent()
		case <-w.ob.wake():
			w.ob.woke()
		case resp, ok := <-wch:
			if !ok {
				if w.s.isClosed() {
					return errClosed
				}
				return errors.New("watch stream closed")
			}
			if err := resp.Err(); err != nil {
				return w.streamError(sp, err)
			}
			if resp.Created {
				w.established()
				continue
			}
			if len(resp.Events) == 0 {
				continue // progress notification
			}
			rev := resp.Events[len(resp.Events)-1].Kv.ModRevision
			if ev, ok := w.f.apply(sp, resp.Events, rev); ok {
				w.ob.add(ev)
			}
			w.next = rev + 1
		}
	}
}

func (w *watcher) streamError(sp span, err error) error {
	switch {
	case errors.Is(err, rpctypes.ErrCompacted), errors.Is(err, rpctypes.ErrFutureRev):
		w.s.log.Info("etcd history compacted past the watch's revision; re-reading", "target", w.f.target.String(), "revision", w.next)
		w.next = 0
		return errResync
	case errors.Is(err, rpctypes.ErrPermissionDenied) && sp.self:
		w.s.setSubtreeOnly(sp.prefix)
		return errRetryNow
	}
	return err
}

func (w *watcher) established() {
	w.s.rpcOK()
	if w.failures > 0 {
		w.s.log.Info("etcd watch resumed", "target", w.f.target.String(), "revision", w.next)
	}
	w.failures, w.lastErr = 0, ""
	w.bo.Reset()
}

// wait sleeps d while still handing the pending event to the receiver.
func (w *watcher) wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		case w.ob.ch() <- w.ob.ev():
			w.ob.sent()
		case <-w.ob.wake():
			w.ob.woke()
		}
	}
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}
