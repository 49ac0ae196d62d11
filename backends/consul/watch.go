package consul

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"time"

	"github.com/heraldhq/herald/backends"
)

// fetchFunc reads a target once, blocking from index when it is not 0, and returns its
// whole state and Consul's index for it.
type fetchFunc func(ctx context.Context, index uint64) (backends.Event, uint64, error)

func (s *Store) fetcher(t backends.Target) (fetchFunc, error) {
	switch t.Kind() {
	case backends.KindService:
		q := *t.Service
		if q.Name == "" {
			return nil, fmt.Errorf("consul: watch %s: service query without a name", t)
		}
		return func(ctx context.Context, index uint64) (backends.Event, uint64, error) {
			svcs, idx, err := s.fetchService(ctx, q, index)
			return backends.Event{Target: t, Revision: idx, Full: true, Services: svcs}, idx, err
		}, nil
	case backends.KindServiceNames:
		return func(ctx context.Context, index uint64) (backends.Event, uint64, error) {
			names, idx, err := s.fetchNames(ctx, index)
			return backends.Event{Target: t, Revision: idx, Full: true, Names: names}, idx, err
		}, nil
	case backends.KindDatacenters:
		return s.dcListFetcher(t), nil
	default:
		p := backends.CleanKey(t.Prefix)
		t = backends.PrefixTarget(p)
		size := 0 // keys in the last answer: the next is sized for as many
		return func(ctx context.Context, index uint64) (backends.Event, uint64, error) {
			kvs := make(map[string]string, size)
			idx, err := s.listTree(ctx, p, index, kvs, make(map[string]bool))
			size = len(kvs)
			return prefixEvent(p, idx, kvs), idx, err
		}, nil
	}
}

// private copies what an event holds, so that a baseline kept for comparison is not
// changed by a receiver that modifies what it was sent.
func private(ev backends.Event) backends.Event {
	ev.KVs = maps.Clone(ev.KVs)
	ev.Services = slices.Clone(ev.Services)
	ev.Names = slices.Clone(ev.Names)
	ev.Datacenters = slices.Clone(ev.Datacenters)
	return ev
}

// sameData reports whether two Full events of one target hold the same state.
func sameData(a, b backends.Event) bool {
	return maps.Equal(a.KVs, b.KVs) &&
		reflect.DeepEqual(a.Services, b.Services) &&
		reflect.DeepEqual(a.Names, b.Names) &&
		slices.Equal(a.Datacenters, b.Datacenters)
}

// nextIndex is the index to block on after an answer carrying got, when the previous
// query blocked on prev. As Consul's blocking-query guidance asks: an index that went
// backwards (the agent lost its state: a restarted -dev agent, a snapshot restore) is
// reset to 0, so the next query is a plain read rather than a wait for an index the
// server will take minutes to reach; an index of 0 in an answer becomes 1, because
// blocking on 0 returns at once and would spin.
func nextIndex(prev, got uint64) uint64 {
	switch {
	case got < prev:
		return 0
	case got == 0:
		return 1
	default:
		return got
	}
}

// Watch follows one target with one blocking query at a time and sends a Full event each
// time its state changes, until ctx ends; then it returns ctx.Err().
//
//   - A query returning with nothing changed (the wait ran out, or a neighbouring key or
//     an unrelated check moved the index) sends nothing.
//   - Queries are paced by a token bucket (see pacer): a change after a quiet moment,
//     and each change of a burst, is read at once; only a target changing faster than
//     one change per MinGap (default 50 ms) for longer than the bucket lasts waits, so a
//     key flapping many times a second costs at most 20 reads and events a second.
//   - On an error it backs off (250 ms doubling to 5 s, jittered; at most 1 s while the
//     connection is refused, see retryDelay) and retries, forever, failing over between
//     agents; the first answer after an error is sent whatever it
//     holds, read without an index, since the agent may be a fresh one whose indexes
//     restarted from 1.
//
// from is the revision of the data the caller holds (from Get, Services, ServiceNames or
// an earlier event); 0 means none, and the first read is sent.
func (s *Store) Watch(ctx context.Context, t backends.Target, from uint64, out chan<- backends.Event) error {
	fetch, guard, release, err := s.watchFetch(t)
	if err != nil {
		return err
	}
	defer release()
	if t.Kind() == backends.KindPrefix {
		t = backends.PrefixTarget(t.Prefix)
	}
	var last *backends.Event
	if from > 0 {
		if ev, ok := s.recall(t, from); ok {
			last = &ev
		}
	}
	log := s.log.With("target", t.ID())
	index := from
	resync := false
	bo := newBackoff()
	pace := newPacer(s.minGap, paceBurst)
	outagesSeen := s.outages.Load()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if wait := pace.take(time.Now()); wait > 0 {
			if err := sleep(ctx, wait); err != nil {
				return err
			}
		}
		if index > 0 && s.outages.Load() != outagesSeen {
			// Some request failed since our last answer: the agent may have restarted
			// under us (see Store.outages). A plain read re-bases the index.
			index = 0
		}
		qctx, qdone, reset := guard.query(ctx)
		if reset {
			index = 0
		}
		ev, got, err := fetch(qctx, index)
		qdone()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if qctx.Err() != nil {
				continue // the datacenter went down or came back: read it again
			}
			if s.closeCtx.Err() != nil {
				return fmt.Errorf("consul: watch %s: %w", t, err)
			}
			if !resync {
				log.Warn("consul watch failing; retrying with backoff", "err", err)
			} else {
				log.Debug("consul watch still failing", "err", err)
			}
			resync, index = true, 0
			if err := sleep(ctx, retryDelay(&bo, err)); err != nil {
				return err
			}
			continue
		}
		bo.Reset()
		outagesSeen = s.outages.Load()
		if resync {
			log.Info("consul watch recovered; sending the full state")
		}
		if resync || changedSince(last, ev, from, got) {
			select {
			case out <- ev:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		kept := private(ev)
		last, resync = &kept, false
		index = nextIndex(index, got)
	}
}

// watchFetch returns the read a watch of t repeats, the guard of its datacenter, and
// what to release when the watch ends. Past hubAfter service watches, service lists
// are read through one shared hub per datacenter instead of one query each.
func (s *Store) watchFetch(t backends.Target) (fetchFunc, *dcGuard, func(), error) {
	fetch, err := s.fetcher(t)
	if err != nil {
		return nil, nil, nil, err
	}
	guard := &dcGuard{s: s}
	var undo []func()
	release := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	if t.Kind() != backends.KindService {
		return fetch, guard, release, nil
	}
	if dc := t.Service.Datacenter; dc != "" && dc != s.dc {
		guard.m = s.dcRef(dc)
		undo = append(undo, func() { s.dcUnref(guard.m) })
	}
	undo = append(undo, func() { s.svcWatches.Add(-1) })
	if s.svcWatches.Add(1) > hubAfter {
		h := s.hubFor(t.Service.Datacenter)
		undo = append(undo, h.unref)
		read := s.hubFetcher(h, *t.Service)
		fetch = func(ctx context.Context, index uint64) (backends.Event, uint64, error) {
			svcs, idx, err := read(ctx, index)
			return backends.Event{Target: t, Revision: idx, Full: true, Services: svcs}, idx, err
		}
	}
	return fetch, guard, release, nil
}

// changedSince reports whether ev (read at index got) differs from what the receiver
// holds: last, the last event sent, or else the data at revision from.
func changedSince(last *backends.Event, ev backends.Event, from, got uint64) bool {
	if last != nil {
		return !sameData(*last, ev)
	}
	// The caller holds the data at from: the same index is the same data.
	return from == 0 || got != from
}

// paceBurst is how many queries a watch may start back to back before pacing applies: a
// burst of changes (a deploy touching a few keys, a rolling restart) is followed change
// by change, and a hot loop is still caught within a second.
const paceBurst = 20

// pacer is a token bucket for one watch's queries: it holds up to burst tokens, each
// query spends one, and one comes back every gap. Unlike a fixed gap after each query
// (which delays every change that follows another within the gap, and so costs a
// steady stream of changes ~gap/2 each), it delays nothing until the target has been
// changing faster than one change per gap for a while: a flapping key, or an index that
// keeps moving with no change in the data.
type pacer struct {
	gap    time.Duration
	burst  float64
	tokens float64
	at     time.Time // when tokens was last brought up to date
}

func newPacer(gap time.Duration, burst int) *pacer {
	return &pacer{gap: gap, burst: float64(burst), tokens: float64(burst)}
}

// take spends a token for a query starting at now, and returns how long the query must
// wait first for it (0: start at once). The wait is booked: the next take counts from
// the end of it.
func (p *pacer) take(now time.Time) time.Duration {
	if p.gap <= 0 {
		return 0
	}
	if !p.at.IsZero() && now.After(p.at) {
		p.tokens = min(p.burst, p.tokens+float64(now.Sub(p.at))/float64(p.gap))
	}
	if p.at.Before(now) {
		p.at = now
	}
	p.tokens--
	if p.tokens >= 0 {
		return 0
	}
	// In debt: the query waits until the token it spent has come back.
	wait := time.Duration(-p.tokens * float64(p.gap))
	p.tokens = 0
	p.at = now.Add(wait)
	return wait
}

var errClosed = errors.New("consul backend closed")

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}
