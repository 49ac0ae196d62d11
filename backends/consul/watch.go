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
	switch {
	case t.Service != nil:
		q := *t.Service
		if q.Name == "" {
			return nil, fmt.Errorf("consul: watch %s: service query without a name", t)
		}
		return func(ctx context.Context, index uint64) (backends.Event, uint64, error) {
			svcs, idx, err := s.fetchService(ctx, q, index)
			return backends.Event{Target: t, Revision: idx, Full: true, Services: svcs}, idx, err
		}, nil
	case t.ServiceNames:
		return func(ctx context.Context, index uint64) (backends.Event, uint64, error) {
			names, idx, err := s.fetchNames(ctx, index)
			return backends.Event{Target: t, Revision: idx, Full: true, Names: names}, idx, err
		}, nil
	default:
		p := backends.CleanKey(t.Prefix)
		t = backends.PrefixTarget(p)
		return func(ctx context.Context, index uint64) (backends.Event, uint64, error) {
			kvs := make(map[string]string)
			idx, err := s.listTree(ctx, p, index, kvs, make(map[string]bool))
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
	return ev
}

// sameData reports whether two Full events of one target hold the same state.
func sameData(a, b backends.Event) bool {
	return maps.Equal(a.KVs, b.KVs) &&
		reflect.DeepEqual(a.Services, b.Services) &&
		reflect.DeepEqual(a.Names, b.Names)
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
//   - Queries start at least MinGap apart (default 100 ms), so a service flapping many
//     times a second costs at most ten reads and ten events a second.
//   - On an error it backs off (250 ms doubling to 5 s, jittered) and retries, forever,
//     failing over between agents; the first answer after an error is sent whatever it
//     holds, read without an index, since the agent may be a fresh one whose indexes
//     restarted from 1.
//
// from is the revision of the data the caller holds (from Get, Services, ServiceNames or
// an earlier event); 0 means none, and the first read is sent.
func (s *Store) Watch(ctx context.Context, t backends.Target, from uint64, out chan<- backends.Event) error {
	fetch, err := s.fetcher(t)
	if err != nil {
		return err
	}
	if t.Service == nil && !t.ServiceNames {
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
	var bo backoff
	var started time.Time
	outagesSeen := s.outages.Load()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if wait := s.minGap - time.Since(started); !started.IsZero() && wait > 0 {
			if err := sleep(ctx, wait); err != nil {
				return err
			}
		}
		started = time.Now()
		if index > 0 && s.outages.Load() != outagesSeen {
			// Some request failed since our last answer: the agent may have restarted
			// under us (see Store.outages). A plain read re-bases the index.
			index = 0
		}
		ev, got, err := fetch(ctx, index)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
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
			if err := sleep(ctx, bo.next()); err != nil {
				return err
			}
			continue
		}
		bo.reset()
		outagesSeen = s.outages.Load()
		var changed bool
		switch {
		case resync:
			log.Info("consul watch recovered; sending the full state")
			changed = true
		case last != nil:
			changed = !sameData(*last, ev)
		default:
			// The caller holds the data at from: the same index is the same data.
			changed = from == 0 || got != from
		}
		if changed {
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
