// Package consul is herald's Consul backend: KV prefixes and service health read with
// blocking queries, and agent service registration for `herald register`.
//
// It speaks Consul's HTTP API itself rather than through github.com/hashicorp/consul/api's
// Client, because api.NewClient reads CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE,
// CONSUL_HTTP_AUTH, CONSUL_NAMESPACE and CONSUL_PARTITION from the environment behind the
// caller's back (an empty --consul-token would silently become the variable's token, and
// a stale token file path would fail New). Nothing below cmd/ reads the environment; the
// api package's types are still used for the wire format.
//
// Every watch of a prefix, and each of the first 32 watches of services, holds one
// blocking query, and over plain HTTP one connection; the service watches past those
// share one blocking query on the catalog dump (see hub). Consul allows
// limits.http_max_conns_per_client (200 by default) connections per client address, so
// watching more than about 190 prefixes at once needs that limit raised, or consuls://,
// where HTTP/2 carries all the queries over a few connections. Past the limit, watches
// retry with backoff and log Consul's 429 with this advice.
package consul

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/backends"
)

const (
	defaultWait        = 5 * time.Minute
	defaultMinGap      = 50 * time.Millisecond // a watch's sustained pace under a flapping target: 20 reads a second (see pacer)
	defaultDialTimeout = 5 * time.Second
	// maxAttempt bounds one non-blocking request to one agent. A healthy agent answers in
	// milliseconds (a cross-datacenter read in a WAN round trip); one that accepts
	// connections but does not answer (a hung or stopped process) must leave the
	// caller's --timeout (10 s by default) to the next address.
	maxAttempt = 2 * time.Second

	// Consul 1.22 accepts 128 operations per transaction, older servers 64; staying at 64
	// keeps one batch one transaction everywhere.
	maxTxnOps = 64
)

// Store is a connection to one Consul datacenter through one or more agents, tried in
// the order given when one fails. It implements backends.Store and backends.Registrar.
type Store struct {
	log     *slog.Logger
	addrs   []string // host:port, in the order given
	scheme  string   // http or https
	token   string   // never logged, never in an error
	user    string   // HTTP basic auth for a proxy in front of the agent; "" for none
	pass    string   // never logged, never in an error
	dc      string   // from ?dc=; empty: the agent's own
	wait    time.Duration
	minGap  time.Duration
	attempt time.Duration // longest wait for one non-blocking answer before trying the next agent
	hc      *http.Client
	cur     atomic.Int32 // index in addrs of the agent that answered last
	// outages counts requests that reached no agent. A watch whose last answer came
	// before the latest one reads without an index once: the agent may be a fresh one
	// (a restarted -dev agent starts its indexes again) on which a blocking query for
	// an index of its previous life would wait the whole --consul-wait.
	outages  atomic.Uint64
	closeCtx context.Context
	closeFn  context.CancelFunc

	mu     sync.Mutex
	state  backends.State
	agents []backends.PartState  // one per address, in the order of addrs; Since zero: not tried yet
	dcs    map[string]*dcMonitor // other datacenters read (service "web@dc2"), by name
	hubs   map[string]*hub       // by datacenter ("" for the store's own); see hubAfter

	svcWatches atomic.Int64    // service watches running
	sizes      sync.Map        // request path -> length of its last answer (see decode)
	memo       map[string]memo // target ID -> what the last one-shot read saw, so a Watch starting there does not resend it
}

// memo is the data one read of a target returned, at the revision reported with it.
type memo struct {
	rev uint64
	ev  backends.Event
}

// New prepares a Store for ep. It never touches the network: an agent that is down makes
// the first read fail (after its context ends) or a watch retry, never New.
func New(cfg backends.Config, ep backends.Endpoint) (*Store, error) {
	if ep.Scheme != "consul" {
		return nil, fmt.Errorf("consul backend: endpoint scheme %q is not consul", ep.Scheme)
	}
	if len(ep.Hosts) == 0 {
		return nil, errors.New("consul backend: no address given")
	}
	if ep.Path != "" {
		return nil, fmt.Errorf("consul backend %s: a path is not supported (use the key prefixes in the resources)", ep)
	}
	for k := range ep.Query {
		if k != "dc" {
			return nil, fmt.Errorf("consul backend %s: unknown option %q (known: dc)", ep, k)
		}
	}
	dial := cfg.DialTimeout
	if dial <= 0 {
		dial = defaultDialTimeout
	}
	s := &Store{
		log:     cfg.Log().With("backend", "consul"),
		addrs:   append([]string(nil), ep.Hosts...),
		scheme:  "http",
		token:   cfg.Token,
		user:    cfg.Username,
		pass:    cfg.Password,
		dc:      ep.Query.Get("dc"),
		wait:    cfg.ConsulWait,
		minGap:  cfg.MinGap,
		attempt: min(2*dial, maxAttempt),
		memo:    make(map[string]memo),
		dcs:     make(map[string]*dcMonitor),
		hubs:    make(map[string]*hub),
	}
	if s.wait <= 0 {
		s.wait = defaultWait
	}
	switch {
	case s.minGap == 0:
		s.minGap = defaultMinGap
	case s.minGap < 0:
		s.minGap = 0
	}
	tlsCfg := cfg.TLSFor(ep)
	if tlsCfg != nil {
		s.scheme = "https"
	}
	s.hc = &http.Client{Transport: &http.Transport{
		// No proxy: ProxyFromEnvironment would read HTTP_PROXY here, below cmd/.
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: dial, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tlsCfg,
		TLSHandshakeTimeout: dial,
		ForceAttemptHTTP2:   tlsCfg != nil, // over TLS, many blocking queries share one connection
		// Every watch holds one connection in a blocking query and reuses it at once when
		// the query returns; a small idle pool would close and redial them in bursts.
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
	}}
	s.closeCtx, s.closeFn = context.WithCancel(context.Background())
	s.state = backends.State{Conn: backends.Connecting, Endpoint: s.addrs[0], Since: time.Now()}
	for _, a := range s.addrs {
		s.agents = append(s.agents, backends.PartState{Name: "agent " + a})
	}
	return s, nil
}

// State reports the connection to the agents: up once one answered, down when none
// answered the last request, with that error.
func (s *Store) State() backends.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state
	if len(s.agents) > 1 {
		// With one agent its state is the backend's.
		for _, a := range s.agents {
			if !a.Since.IsZero() {
				st.Parts = append(st.Parts, a)
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s.dcs)) {
		if p := s.dcs[name].part; !p.Since.IsZero() {
			st.Parts = append(st.Parts, p)
		}
	}
	return st
}

// agentAnswered and agentFailed keep the state of agent k (an index in addrs), so that
// a hung agent shows in /healthz while the next one serves.
func (s *Store) agentAnswered(k int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := &s.agents[k]; !a.Up {
		a.Up, a.Err, a.Since = true, nil, time.Now()
	}
}

func (s *Store) agentFailed(k int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := &s.agents[k]
	if a.Up || a.Since.IsZero() {
		if len(s.addrs) > 1 {
			s.log.Warn("consul agent not answering; using the other addresses while it is down", "addr", s.addrs[k], "err", err)
		}
		a.Since = time.Now()
	}
	a.Up, a.Err = false, err
}

// Close aborts requests in flight, including the blocking queries of running watches,
// which then return an error, and releases connections. It does not deregister services.
func (s *Store) Close() error {
	s.closeFn()
	s.hc.CloseIdleConnections()
	return nil
}

func (s *Store) setUp(addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state.Conn == backends.Up && s.state.Endpoint == addr {
		return
	}
	if s.state.Conn == backends.Down {
		s.log.Info("consul reachable again", "addr", addr)
	}
	s.state = backends.State{Conn: backends.Up, Endpoint: addr, Since: time.Now()}
}

func (s *Store) setDown(addr string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state.Conn != backends.Down {
		s.log.Warn("consul unreachable", "addr", addr, "err", err)
		s.state.Since = time.Now()
	}
	s.state.Conn, s.state.Endpoint, s.state.Err = backends.Down, addr, err
}

func (s *Store) remember(t backends.Target, rev uint64, ev backends.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.memo[t.ID()] = memo{rev: rev, ev: private(ev)}
}

// recall returns (and forgets) what the last read of t saw, if it was at revision rev.
func (s *Store) recall(t backends.Target, rev uint64) (backends.Event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.memo[t.ID()]
	delete(s.memo, t.ID())
	return m.ev, ok && m.rev == rev
}

var (
	_ backends.Store     = (*Store)(nil)
	_ backends.Registrar = (*Store)(nil)
)
