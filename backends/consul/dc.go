package consul

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/heraldhq/herald/backends"
)

// dcProbeEvery is how often a watched datacenter other than the store's own is asked
// whether it answers. Its blocking queries cannot tell: the local agent serves them
// from its streaming view, which goes on answering with the last data (and no error)
// while the datacenter is gone, and which restarts from a lower index when a
// datacenter that lost its state comes back, so a query blocking on the old index
// would wait the whole --consul-wait.
const dcProbeEvery = 2 * time.Second

// dcMonitor is the state of one other datacenter, kept while watches read it. When it
// goes down or comes back, flip is closed: the watches' queries in flight are cut and
// read again from scratch.
type dcMonitor struct {
	part  backends.PartState // Since zero: not known yet
	refs  int
	stop  context.CancelFunc
	epoch uint64        // transitions so far
	flip  chan struct{} // closed and replaced at each transition
}

// dcRef returns (creating) the monitor of dc and takes a reference, starting its probe
// on the first one; release it with dcUnref.
func (s *Store) dcRef(dc string) *dcMonitor {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.dcMonitorLocked(dc)
	if m.refs++; m.refs == 1 {
		ctx, cancel := context.WithCancel(s.closeCtx)
		m.stop = cancel
		go s.probeDC(ctx, dc)
	}
	return m
}

func (s *Store) dcUnref(m *dcMonitor) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.refs--; m.refs == 0 {
		m.stop()
	}
}

func (s *Store) dcMonitorLocked(dc string) *dcMonitor {
	m, ok := s.dcs[dc]
	if !ok {
		m = &dcMonitor{part: backends.PartState{Name: "datacenter " + dc}, flip: make(chan struct{})}
		s.dcs[dc] = m
	}
	return m
}

// dcState is the monitor's transition count and the channel closed at the next one.
func (s *Store) dcState(m *dcMonitor) (uint64, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return m.epoch, m.flip
}

// dcAnswered and dcFailed record what was learnt of datacenter dc: a probe's answer, or
// a failure of any request to it. A change of state (not the first one known) is logged
// and flips the monitor.
func (s *Store) dcAnswered(dc string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.dcMonitorLocked(dc)
	switch {
	case m.part.Since.IsZero():
		m.part.Up, m.part.Since = true, time.Now()
	case !m.part.Up:
		s.log.Info("consul datacenter reachable again; reading its lists again", "datacenter", dc)
		m.part.Up, m.part.Err, m.part.Since = true, nil, time.Now()
		m.flipLocked()
	}
}

func (s *Store) dcFailed(dc string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.dcMonitorLocked(dc)
	if m.part.Up || m.part.Since.IsZero() {
		s.log.Warn("consul datacenter unreachable; its lists keep their last data", "datacenter", dc, "err", err)
		if m.part.Up {
			m.flipLocked()
		}
		m.part.Since = time.Now()
	}
	m.part.Up, m.part.Err = false, err
}

func (m *dcMonitor) flipLocked() {
	m.epoch++
	close(m.flip)
	m.flip = make(chan struct{})
}

// probeDC asks dc for its leader every dcProbeEvery until ctx ends. A failure is
// recorded by do (dcFailed); an answer naming a leader marks dc up.
func (s *Store) probeDC(ctx context.Context, dc string) {
	tk := time.NewTicker(dcProbeEvery)
	defer tk.Stop()
	for {
		var leader string
		r := request{method: http.MethodGet, path: "/v1/status/leader", query: url.Values{"dc": {dc}}, out: &leader}
		_, err := s.do(ctx, r, s.attempt)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil && leader != "":
			s.dcAnswered(dc)
		case err == nil:
			s.dcFailed(dc, errors.New("no leader"))
		}
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
	}
}

// dcGuard ties a watch of another datacenter to its monitor.
type dcGuard struct {
	s     *Store
	m     *dcMonitor // nil: the store's own datacenter, nothing to guard
	epoch uint64
}

// query returns the context for one query: cut when the datacenter flips. reset says
// that it flipped since the last query, so the next read must not block on an index
// from before.
func (g *dcGuard) query(ctx context.Context) (qctx context.Context, done func(), reset bool) {
	if g.m == nil {
		return ctx, func() {}, false
	}
	epoch, flip := g.s.dcState(g.m)
	reset, g.epoch = epoch != g.epoch, epoch
	qctx, cancel := context.WithCancel(ctx)
	stop := make(chan struct{})
	go func() {
		select {
		case <-flip:
			cancel()
		case <-stop:
		}
	}()
	return qctx, func() { close(stop); cancel() }, reset
}
