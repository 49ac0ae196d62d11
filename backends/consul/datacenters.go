package consul

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/heraldhq/herald/backends"
)

// dcListEvery is how often a watch of the datacenter list asks again. Consul answers
// /v1/catalog/datacenters from the WAN pool's memory and offers no blocking query on
// it; datacenters join and leave rarely, so a read every 10 s costs the agent nothing
// measurable and shows a new one within seconds of its joining.
const dcListEvery = 10 * time.Second

// dcListRev is the revision of every read of the datacenter list: Consul gives it no
// index, and the watch compares the lists themselves (sameData), so one constant makes
// the engine's first read and the watch's baseline agree.
const dcListRev = 1

// fetchDatacenters reads the datacenters the agent's WAN pool knows, sorted by name
// (Consul sorts them by round-trip time, which moves without any datacenter changing).
func (s *Store) fetchDatacenters(ctx context.Context) ([]string, error) {
	var dcs []string
	r := request{method: http.MethodGet, path: "/v1/catalog/datacenters", out: &dcs}
	if _, err := s.do(ctx, r, s.attempt); err != nil {
		return nil, fmt.Errorf("list datacenters: %w", err)
	}
	slices.Sort(dcs)
	if dcs == nil {
		dcs = []string{}
	}
	return slices.Compact(dcs), nil
}

// Datacenters lists the datacenters Consul knows (its own among them), sorted by name.
func (s *Store) Datacenters(ctx context.Context) ([]string, uint64, error) {
	var dcs []string
	err := s.once(ctx, func(ctx context.Context) error {
		var err error
		dcs, err = s.fetchDatacenters(ctx)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	t := backends.Target{Datacenters: true}
	s.remember(t, dcListRev, backends.Event{Target: t, Revision: dcListRev, Full: true, Datacenters: dcs})
	return dcs, dcListRev, nil
}

// dcListFetcher reads the datacenter list, after dcListEvery when the watch already has
// it (index > 0): the watch loop's blocking query, done by waiting.
func (s *Store) dcListFetcher(t backends.Target) fetchFunc {
	return func(ctx context.Context, index uint64) (backends.Event, uint64, error) {
		if index > 0 {
			if err := sleep(ctx, dcListEvery); err != nil {
				return backends.Event{}, 0, err
			}
		}
		dcs, err := s.fetchDatacenters(ctx)
		return backends.Event{Target: t, Revision: dcListRev, Full: true, Datacenters: dcs}, dcListRev, err
	}
}

var _ backends.DatacenterLister = (*Store)(nil)
