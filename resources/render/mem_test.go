package render

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"

	"github.com/heraldhq/herald/backends"
)

// memStore is an in-memory registry for runner unit tests: revisions, prefix watches
// with incremental events, service lists, and a switch to make it "down".
type memStore struct {
	mu    sync.Mutex
	kv    map[string]string
	svcs  map[string][]backends.Service
	rev   uint64
	down  bool
	gets  int
	watch map[chan<- backends.Event][]backends.Target
}

func newMem(kv map[string]string) *memStore {
	if kv == nil {
		kv = map[string]string{}
	}
	return &memStore{kv: kv, svcs: map[string][]backends.Service{}, rev: 1, watch: map[chan<- backends.Event][]backends.Target{}}
}

var errDown = errors.New("127.0.0.1:1: connection refused")

func (m *memStore) Get(ctx context.Context, prefixes []string) (map[string]string, uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gets++
	if m.down {
		return nil, 0, errDown
	}
	out := map[string]string{}
	for k, v := range m.kv {
		for _, p := range prefixes {
			if backends.UnderPrefix(k, p) {
				out[k] = v
			}
		}
	}
	return out, m.rev, nil
}

func (m *memStore) Services(ctx context.Context, q backends.ServiceQuery) ([]backends.Service, uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return nil, 0, errDown
	}
	var out []backends.Service
	for _, s := range m.svcs[q.Name] {
		if q.Accepts(s) {
			out = append(out, s)
		}
	}
	return out, m.rev, nil
}

// ServiceNames is the catalog: every service with at least one instance, as etcd and
// ZooKeeper list them.
func (m *memStore) ServiceNames(ctx context.Context) ([]backends.ServiceSummary, uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return nil, 0, errDown
	}
	return m.namesLocked(), m.rev, nil
}

func (m *memStore) namesLocked() []backends.ServiceSummary {
	out := []backends.ServiceSummary{}
	for name, list := range m.svcs {
		if len(list) > 0 {
			out = append(out, backends.ServiceSummary{Name: name})
		}
	}
	slices.SortFunc(out, func(a, b backends.ServiceSummary) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (m *memStore) Watch(ctx context.Context, t backends.Target, from uint64, out chan<- backends.Event) error {
	m.mu.Lock()
	m.watch[out] = append(m.watch[out], t)
	m.mu.Unlock()
	<-ctx.Done()
	m.mu.Lock()
	ts := m.watch[out]
	for i, x := range ts {
		if x.ID() == t.ID() {
			m.watch[out] = append(ts[:i:i], ts[i+1:]...)
			break
		}
	}
	m.mu.Unlock()
	return ctx.Err()
}

func (m *memStore) State() backends.State { return backends.State{Conn: backends.Up} }
func (m *memStore) Close() error          { return nil }

// put changes a key and notifies watchers of prefixes holding it.
func (m *memStore) put(k, v string) {
	m.mu.Lock()
	m.rev++
	m.kv[k] = v
	type send struct {
		ch chan<- backends.Event
		ev backends.Event
	}
	var sends []send
	for ch, ts := range m.watch {
		for _, t := range ts {
			if t.Service == nil && !t.ServiceNames && backends.UnderPrefix(k, t.Prefix) {
				sends = append(sends, send{ch, backends.Event{Target: t, Revision: m.rev, KVs: map[string]string{k: v}}})
			}
		}
	}
	m.mu.Unlock()
	for _, s := range sends {
		s.ch <- s.ev
	}
}

func (m *memStore) setServices(name string, svcs []backends.Service) {
	m.mu.Lock()
	m.rev++
	m.svcs[name] = svcs
	var sends []func()
	for ch, ts := range m.watch {
		for _, t := range ts {
			if t.Service != nil && t.Service.Name == name {
				var out []backends.Service
				for _, s := range svcs {
					if t.Service.Accepts(s) {
						out = append(out, s)
					}
				}
				ev := backends.Event{Target: t, Revision: m.rev, Full: true, Services: out}
				ch := ch
				sends = append(sends, func() { ch <- ev })
			}
			if t.ServiceNames {
				ev := backends.Event{Target: t, Revision: m.rev, Full: true, Names: m.namesLocked()}
				ch := ch
				sends = append(sends, func() { ch <- ev })
			}
		}
	}
	m.mu.Unlock()
	for _, f := range sends {
		f()
	}
}

func (m *memStore) watchCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, ts := range m.watch {
		n += len(ts)
	}
	return n
}

// confdir writes resources: name -> (toml body without [template], template text).
