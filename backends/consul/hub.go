package consul

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/heraldhq/herald/backends"
)

// hubAfter is how many service watches hold a blocking query (and over plain HTTP a
// connection) of their own before the others share a hub. Up to there a change reaches
// its watch with the smallest answer Consul can send; past it, a herald watching 1,000
// services would need 1,000 connections, and Consul allows 200 per client address.
const hubAfter = 32

// errHubUnusable means the agent's catalog dump cannot stand in for per-service reads:
// the token may not see all of it (Consul then leaves parts out, and which ones cannot
// be told apart from services that do not exist), or the agent refuses the endpoint.
var errHubUnusable = errors.New("consul: catalog dump unusable")

// hub follows a datacenter's whole catalog with one blocking query on Consul's node dump
// (/v1/internal/ui/nodes: every node with its services and checks, the data of
// /v1/health/service for every service at once, with an index that moves on any change
// of nodes, services or checks) and serves each subscribed service's instances from it.
// No change is missed: every answer is a whole, consistent catalog at its index, and a
// subscriber compares what it last sent with the instances of its service in the
// newest one.
type hub struct {
	s       *Store
	dc      string // "" for the store's own
	localDC string // the agent's datacenter, once known (run's goroutine only)

	mu      sync.Mutex
	refs    int
	stop    context.CancelFunc
	snap    *hubSnap
	changed chan struct{} // closed and replaced on each new snapshot
}

// hubSnap is one answer: the health entries of every service, by name, or an error.
type hubSnap struct {
	index  uint64
	byName map[string][]*api.ServiceEntry
	err    error
}

// dumpNode is one node of the dump, decoded into the health endpoint's types.
type dumpNode struct {
	ID              string
	Node            string
	Address         string
	Datacenter      string
	TaggedAddresses map[string]string
	Meta            map[string]string
	Services        []*api.AgentService
	Checks          api.HealthChecks
}

// hubFor returns the hub of datacenter dc, taking a reference; release it with unref.
func (s *Store) hubFor(dc string) *hub {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.hubs[dc]
	if !ok {
		h = &hub{s: s, dc: dc, changed: make(chan struct{})}
		s.hubs[dc] = h
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.refs++; h.refs == 1 {
		ctx, cancel := context.WithCancel(s.closeCtx)
		h.stop = cancel
		go h.run(ctx)
	}
	return h
}

// unref drops a reference; the last one stops the hub's query.
func (h *hub) unref() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.refs--; h.refs == 0 {
		h.stop()
		h.snap = nil
	}
}

func (h *hub) publish(snap *hubSnap) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.snap = snap
	close(h.changed)
	h.changed = make(chan struct{})
}

// run keeps one blocking query on the dump until ctx ends, publishing every answer whose
// index moved, and every failure (subscribers retry on their own schedule).
func (h *hub) run(ctx context.Context) {
	var index uint64
	bo := newBackoff()
	pace := newPacer(h.s.minGap, paceBurst)
	for ctx.Err() == nil {
		if wait := pace.take(time.Now()); wait > 0 {
			if sleep(ctx, wait) != nil {
				return
			}
		}
		snap := h.fetch(ctx, index)
		if ctx.Err() != nil {
			return
		}
		if snap.err != nil {
			h.publish(snap)
			index = 0
			if errors.Is(snap.err, errHubUnusable) {
				// Subscribers read on their own from now on; the hub idles until
				// they are gone.
				<-ctx.Done()
				return
			}
			if sleep(ctx, retryDelay(&bo, snap.err)) != nil {
				return
			}
			continue
		}
		bo.Reset()
		if snap.index != index || index == 0 {
			h.publish(snap)
		}
		index = nextIndex(index, snap.index)
	}
}

// fetch reads the dump once, blocking from index when it is not 0.
func (h *hub) fetch(ctx context.Context, index uint64) *hubSnap {
	var nodes []dumpNode
	q := h.s.blocking(url.Values{}, index)
	if h.dc != "" {
		q.Set("dc", h.dc)
	}
	r := request{method: http.MethodGet, path: "/v1/internal/ui/nodes", query: q, out: &nodes}
	m, err := h.s.do(ctx, r, h.s.blockTimeout(index))
	var ce *Error
	switch {
	case err != nil && errors.As(err, &ce) && ce.Status >= 400 && ce.Status < 500 && ce.Status != http.StatusTooManyRequests:
		return &hubSnap{err: fmt.Errorf("%w: %w", errHubUnusable, err)}
	case err != nil:
		return &hubSnap{err: fmt.Errorf("get service catalog dump: %w", err)}
	case m.filtered || (h.s.token == "" && m.aclDeny):
		return &hubSnap{err: fmt.Errorf("%w: the token may not read the whole catalog", errHubUnusable)}
	}
	dc, err := h.datacenter(ctx)
	if err != nil {
		return &hubSnap{err: err}
	}
	byName := make(map[string][]*api.ServiceEntry)
	for i := range nodes {
		n := &nodes[i]
		node := &api.Node{ID: n.ID, Node: n.Node, Address: n.Address, Datacenter: n.Datacenter, TaggedAddresses: n.TaggedAddresses, Meta: n.Meta}
		if node.Datacenter == "" {
			node.Datacenter = dc
		}
		var nodeChecks api.HealthChecks
		svcChecks := make(map[string]api.HealthChecks)
		for _, c := range n.Checks {
			if c == nil {
				continue
			}
			if c.ServiceID == "" {
				nodeChecks = append(nodeChecks, c)
			} else {
				svcChecks[c.ServiceID] = append(svcChecks[c.ServiceID], c)
			}
		}
		for _, sv := range n.Services {
			if sv == nil {
				continue
			}
			checks := append(append(api.HealthChecks(nil), nodeChecks...), svcChecks[sv.ID]...)
			byName[sv.Service] = append(byName[sv.Service], &api.ServiceEntry{Node: node, Service: sv, Checks: checks})
		}
	}
	return &hubSnap{index: m.index, byName: byName}
}

// datacenter is the name the dump's entries get (the dump leaves it out, the health
// endpoint has it): the one asked for, or the agent's own, asked once.
func (h *hub) datacenter(ctx context.Context) (string, error) {
	switch {
	case h.dc != "":
		return h.dc, nil
	case h.s.dc != "":
		return h.s.dc, nil
	case h.localDC != "":
		return h.localDC, nil
	}
	var self struct{ Config struct{ Datacenter string } }
	_, err := h.s.do(ctx, request{method: http.MethodGet, path: "/v1/agent/self", out: &self}, h.s.attempt)
	var ce *Error
	switch {
	case err != nil && errors.As(err, &ce) && ce.Status >= 400 && ce.Status < 500:
		return "", fmt.Errorf("%w: %w", errHubUnusable, err)
	case err != nil:
		return "", fmt.Errorf("get the agent's datacenter: %w", err)
	}
	h.localDC = self.Config.Datacenter
	return h.localDC, nil
}

// hubFetcher reads q from h: at once when the hub has an answer newer than index, else
// when the next one comes. Once the hub is unusable it reads q directly.
func (s *Store) hubFetcher(h *hub, q backends.ServiceQuery) func(ctx context.Context, index uint64) ([]backends.Service, uint64, error) {
	direct := false
	return func(ctx context.Context, index uint64) ([]backends.Service, uint64, error) {
		if direct {
			return s.fetchService(ctx, q, index)
		}
		for {
			h.mu.Lock()
			snap, changed := h.snap, h.changed
			h.mu.Unlock()
			// Only a snapshot newer than what the caller holds: the caller may hold a
			// direct read (index from the health endpoint) newer than the hub's last
			// answer, and an older state must not be sent over it. Indexes that went
			// backwards (a restarted agent) come after a failure, which resets index.
			if snap != nil && (index == 0 || snap.index > index || snap.err != nil) {
				if errors.Is(snap.err, errHubUnusable) {
					s.log.Debug("consul: reading the service on its own", "service", q.String(), "why", snap.err)
					direct = true
					return s.fetchService(ctx, q, 0)
				}
				if snap.err != nil {
					return nil, 0, snap.err
				}
				return filterEntries(q, snap.byName[q.Name], s.log), snap.index, nil
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return nil, 0, ctx.Err()
			}
		}
	}
}
