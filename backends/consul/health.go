package consul

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/heraldhq/herald/backends"
)

// Consul marks maintenance with critical checks of these IDs.
const (
	nodeMaintCheck    = "_node_maintenance"
	serviceMaintCheck = "_service_maintenance:"
)

// instanceStatus is the worst of an instance's checks (the node's and its own):
// maintenance > critical > warning > passing. No check at all is passing, as Consul's own
// ?passing filter treats it.
func instanceStatus(serviceID string, checks api.HealthChecks) string {
	worst := backends.StatusPassing
	for _, c := range checks {
		if c == nil {
			continue
		}
		st := c.Status
		if c.CheckID == nodeMaintCheck || c.CheckID == serviceMaintCheck+serviceID {
			st = backends.StatusMaintenance
		}
		switch st {
		case backends.StatusPassing, backends.StatusWarning, backends.StatusCritical, backends.StatusMaintenance:
		default:
			// An unknown status is not evidence of health.
			st = backends.StatusCritical
		}
		if backends.StatusRank(st) > backends.StatusRank(worst) {
			worst = st
		}
	}
	return worst
}

// toService normalizes one health entry. ok is false for an entry without a node or a
// service, which Consul should never send.
func toService(e *api.ServiceEntry) (backends.Service, bool) {
	if e == nil || e.Node == nil || e.Service == nil {
		return backends.Service{}, false
	}
	n, sv := e.Node, e.Service
	addr := sv.Address
	if addr == "" {
		// Consul leaves a service's address empty to mean "the node's".
		addr = n.Address
	}
	addr = strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]")
	status := instanceStatus(sv.ID, e.Checks)
	s := backends.Service{
		Name:       sv.Service,
		ID:         sv.ID,
		Address:    addr,
		Port:       sv.Port,
		Tags:       sv.Tags,
		Meta:       sv.Meta,
		Status:     status,
		Healthy:    status == backends.StatusPassing,
		Weight:     sv.Weights.Passing,
		Datacenter: n.Datacenter,
		Node:       n.Node,
		Backend:    "consul",
		Format:     "consul",
		Key:        n.Node + "/" + sv.ID,
	}
	if s.Datacenter == "" {
		s.Datacenter = sv.Datacenter
	}
	if len(sv.TaggedAddresses) > 0 {
		s.Endpoints = make(map[string]backends.HostPort, len(sv.TaggedAddresses))
		for name, ta := range sv.TaggedAddresses {
			s.Endpoints[name] = backends.HostPort{Host: strings.TrimSuffix(strings.TrimPrefix(ta.Address, "["), "]"), Port: ta.Port}
		}
	}
	return s, true
}

// filterEntries turns Consul's answer into the instances q accepts, sorted. The status
// and tag filters are applied here, not by Consul (?passing, ?tag=), so that they mean
// what ServiceQuery.Accepts says, the same for every backend.
func filterEntries(q backends.ServiceQuery, entries []*api.ServiceEntry, log *slog.Logger) []backends.Service {
	out := make([]backends.Service, 0, len(entries))
	for _, e := range entries {
		s, ok := toService(e)
		if !ok {
			log.Warn("consul: skipping a malformed health entry (no node or service)", "service", q.Name)
			continue
		}
		if q.Accepts(s) {
			out = append(out, s)
		}
	}
	backends.SortServices(out)
	return out
}

// fetchService reads all instances of q.Name from the health endpoint, blocking from
// index when it is not 0, and filters them. It fails with ErrPermission when Consul hid
// instances from the token: a list short of some backends is worse than none.
func (s *Store) fetchService(ctx context.Context, q backends.ServiceQuery, index uint64) ([]backends.Service, uint64, error) {
	var entries []*api.ServiceEntry
	query := s.blocking(url.Values{}, index)
	if q.Datacenter != "" {
		query.Set("dc", q.Datacenter)
		if q.Datacenter != s.dc {
			// Served by the local agent's streaming view, a blocking query on another
			// datacenter that restarted (lost its state) answers at once with the data it
			// had before, at an index above the new one, and keeps it for minutes
			// (measured with Consul 1.22: a plain read gives the new list, the next
			// blocking read the old one). Consul never streams a request that asks for
			// merged central config, so this one is a classic blocking query answered
			// by that datacenter's servers; for a service that is not a proxy or a
			// gateway the answer is the same.
			query.Set("merge-central-config", "")
		}
	}
	r := request{method: http.MethodGet, path: "/v1/health/service/" + url.PathEscape(q.Name), query: query, out: &entries}
	m, err := s.do(ctx, r, s.blockTimeout(index))
	if err != nil {
		return nil, 0, fmt.Errorf("get service %s: %w", q, err)
	}
	if m.filtered {
		return nil, 0, hidden(m, r, fmt.Sprintf("the token may not read some instances of service %s (service:read and node:read are needed) and Consul left them out", q))
	}
	if err := s.anonymousDenied(ctx, m, r, "service", [][]authzCheck{{{Resource: "service", Access: "read", Segment: q.Name}}}); err != nil {
		return nil, 0, err
	}
	return filterEntries(q, entries, s.log), m.index, nil
}

// Services returns the instances of one service that q accepts, retrying while no agent
// answers until ctx ends.
func (s *Store) Services(ctx context.Context, q backends.ServiceQuery) ([]backends.Service, uint64, error) {
	if q.Name == "" {
		return nil, 0, fmt.Errorf("consul: service query without a name")
	}
	var svcs []backends.Service
	var rev uint64
	err := s.once(ctx, func(ctx context.Context) error {
		var err error
		svcs, rev, err = s.fetchService(ctx, q, 0)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	t := backends.ServiceTarget(q)
	s.remember(t, rev, backends.Event{Target: t, Revision: rev, Full: true, Services: svcs})
	return svcs, rev, nil
}

// fetchNames reads the catalog's service names, blocking from index when it is not 0.
// Unlike an instance list, a catalog listing only what the token may see is how Consul's
// ACLs are meant to work, so hidden services are logged at debug level, not an error.
func (s *Store) fetchNames(ctx context.Context, index uint64) ([]backends.ServiceSummary, uint64, error) {
	var m map[string][]string
	r := request{method: http.MethodGet, path: "/v1/catalog/services", query: s.blocking(nil, index), out: &m}
	meta, err := s.do(ctx, r, s.blockTimeout(index))
	if err != nil {
		return nil, 0, fmt.Errorf("get service catalog: %w", err)
	}
	if meta.filtered {
		s.log.Debug("consul: the token may not see every service; listing those it may")
	}
	return summaries(m), meta.index, nil
}

func summaries(m map[string][]string) []backends.ServiceSummary {
	out := make([]backends.ServiceSummary, 0, len(m))
	for name, tags := range m {
		t := slices.Clone(tags)
		slices.Sort(t)
		t = slices.Compact(t)
		if t == nil {
			t = []string{}
		}
		out = append(out, backends.ServiceSummary{Name: name, Tags: t})
	}
	slices.SortFunc(out, func(a, b backends.ServiceSummary) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// ServiceNames lists the catalog's services, sorted by name, with their tags.
func (s *Store) ServiceNames(ctx context.Context) ([]backends.ServiceSummary, uint64, error) {
	var names []backends.ServiceSummary
	var rev uint64
	err := s.once(ctx, func(ctx context.Context) error {
		var err error
		names, rev, err = s.fetchNames(ctx, 0)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	t := backends.Target{ServiceNames: true}
	s.remember(t, rev, backends.Event{Target: t, Revision: rev, Full: true, Names: names})
	return names, rev, nil
}
