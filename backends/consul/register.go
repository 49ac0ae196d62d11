package consul

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/heraldhq/herald/backends"
)

const (
	defaultTTL           = 15 * time.Second
	defaultCheckInterval = 10 * time.Second
)

// ErrRegistered is returned by Register when the agent already holds a service with the
// same ID and RegisterOptions.Replace is not set. It is a backends.ErrTaken.
var ErrRegistered = backends.TakenError("service ID already registered on the agent")

var _ backends.RegisterPolicy = (*Store)(nil)

// RunsChecks is true: the agent runs HTTP and TCP checks itself.
func (s *Store) RunsChecks() bool { return true }

// ClaimWait: the agent keeps a killed herald's service until DeregisterAfter. With
// herald's TTL check the entry turns critical one TTL after its herald died, and is taken
// over then (see Abandoned). A check that Consul runs itself says nothing about the
// herald that registered it: a duplicate is refused at once.
func (s *Store) ClaimWait(opts backends.RegisterOptions) time.Duration {
	if opts.CheckHTTP != "" || opts.CheckTCP != "" {
		return 0
	}
	if opts.TTL <= 0 {
		opts.TTL = defaultTTL
	}
	return opts.TTL + backends.ClaimMargin
}

// Abandoned reports whether every instance of svc's ID listed is critical: with herald's
// TTL check, the entry of a herald that died without deregistering. A live herald keeps
// it passing (or critical only while its own health check fails, which a second herald
// checking the same instance would see too). With a check Consul runs, it cannot tell.
func (s *Store) Abandoned(ctx context.Context, svc backends.Service, opts backends.RegisterOptions) (bool, error) {
	if opts.CheckHTTP != "" || opts.CheckTCP != "" {
		return false, nil
	}
	q := backends.ServiceQuery{Name: svc.Name, Statuses: []string{
		backends.StatusPassing, backends.StatusWarning, backends.StatusCritical, backends.StatusMaintenance}}
	list, _, err := s.Services(ctx, q)
	if err != nil {
		return false, err
	}
	found := false
	for _, e := range list {
		if e.ID == svc.ID {
			if e.Status != backends.StatusCritical {
				return false, nil
			}
			found = true
		}
	}
	return found, nil
}

// registration is one service announced on one agent.
type registration struct {
	s       *Store
	log     *slog.Logger
	addr    string // the agent holding the service
	id      string
	checkID string
	ttl     bool // herald passes a TTL check; otherwise Consul runs an HTTP or TCP check
	body    *api.AgentServiceRegistration

	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	healthy bool
	note    string
	gone    bool // deregistered
	lost    bool // another process registered the ID since: not ours to keep or remove
}

// newCheckID names this registration's check. The agent does not record who registered
// a service, so the check ID carries a token of this registration: a process whose
// check is no longer on the service has been replaced (the new holder registers with
// replace-existing-checks, which drops it), and stands down instead of keeping the new
// holder's entry alive or deregistering it.
func newCheckID(id string) string {
	var b [6]byte
	crand.Read(b[:]) // never fails (crypto/rand panics rather)
	return "service:" + id + ":herald-" + hex.EncodeToString(b[:])
}

// Register announces svc on an agent (the first of the configured ones that answers) with
// a check that keeps it alive:
//
//   - by default a TTL check of opts.TTL (15 s when zero) that herald reports passing every
//     TTL/3 in the background, so the instance turns critical when herald dies or hangs;
//   - with opts.CheckHTTP or opts.CheckTCP, a check Consul runs itself every CheckInterval
//     (10 s when zero) with CheckTimeout.
//
// opts.DeregisterAfter sets deregister_critical_service_after, so an instance left
// critical (herald gone) is removed by Consul. The registration stays on the agent that
// accepted it, even when others are configured: a service belongs to its agent's node,
// and a copy on a second agent would outlive the first's return as a stale duplicate.
// Every TTL/3 (also in HTTP/TCP mode) the background loop checks that the agent still
// knows the service and registers it again if not (a restarted -dev agent forgets
// everything). The loop stops at Deregister, when ctx ends, or when the Store is closed.
//
// A service with the same ID already on the agent is an error wrapping ErrRegistered
// unless opts.Replace. A registration replaced that way by another process stands down
// (see newCheckID): its loop stops, SetHealthy fails, Deregister leaves the entry.
func (s *Store) Register(ctx context.Context, svc backends.Service, opts backends.RegisterOptions) (backends.Registration, error) {
	if svc.Name == "" {
		return nil, errors.New("consul: register: the service has no name")
	}
	if opts.CheckHTTP != "" && opts.CheckTCP != "" {
		return nil, fmt.Errorf("consul: register %s: give an HTTP or a TCP check, not both", svc.Name)
	}
	id := svc.ID
	if id == "" {
		// Consul's own default.
		id = svc.Name
	}
	ttl := opts.TTL
	if ttl <= 0 {
		ttl = defaultTTL
	}
	r := &registration{
		s:       s,
		log:     s.log.With("service", svc.Name, "id", id),
		id:      id,
		checkID: newCheckID(id),
		ttl:     opts.CheckHTTP == "" && opts.CheckTCP == "",
		healthy: true,
		done:    make(chan struct{}),
	}
	r.body = registrationBody(svc, id, r.checkID, ttl, opts)

	var existing api.AgentService
	path := "/v1/agent/service/" + url.PathEscape(id)
	err := s.once(ctx, func(ctx context.Context) error {
		m, err := s.do(ctx, request{method: http.MethodGet, path: path, out: &existing, ok: []int{http.StatusNotFound}}, s.attempt)
		if err != nil {
			return err
		}
		r.addr = m.addr
		if m.status == http.StatusOK && !opts.Replace {
			return fmt.Errorf("consul %s: register %s: service ID %q is already registered there (service %q, port %d); stop its owner or replace it: %w",
				m.addr, svc.Name, id, existing.Service, existing.Port, ErrRegistered)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := s.once(ctx, r.register); err != nil {
		return nil, err
	}
	r.log.Info("registered service with consul", "addr", r.addr, "check", checkKind(opts))

	loopCtx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.closeCtx, cancel)
	r.cancel = func() { stop(); cancel() }
	period := max(ttl/3, 100*time.Millisecond)
	go r.keepAlive(loopCtx, period)
	return r, nil
}

func checkKind(opts backends.RegisterOptions) string {
	switch {
	case opts.CheckHTTP != "":
		return "http"
	case opts.CheckTCP != "":
		return "tcp"
	default:
		return "ttl"
	}
}

func registrationBody(svc backends.Service, id, checkID string, ttl time.Duration, opts backends.RegisterOptions) *api.AgentServiceRegistration {
	b := &api.AgentServiceRegistration{
		ID:      id,
		Name:    svc.Name,
		Tags:    svc.Tags,
		Port:    svc.Port,
		Address: svc.Address,
		Meta:    svc.Meta,
	}
	if svc.Weight > 0 {
		b.Weights = &api.AgentWeights{Passing: svc.Weight, Warning: 1}
	}
	c := &api.AgentServiceCheck{CheckID: checkID}
	if opts.DeregisterAfter > 0 {
		c.DeregisterCriticalServiceAfter = opts.DeregisterAfter.String()
	}
	switch {
	case opts.CheckHTTP != "" || opts.CheckTCP != "":
		c.Name = "herald: " + checkKind(opts) + " check"
		c.HTTP, c.TCP = opts.CheckHTTP, opts.CheckTCP
		interval := opts.CheckInterval
		if interval <= 0 {
			interval = defaultCheckInterval
		}
		c.Interval = interval.String()
		if opts.CheckTimeout > 0 {
			c.Timeout = opts.CheckTimeout.String()
		}
	default:
		c.Name = "herald: TTL check"
		c.TTL = ttl.String()
		c.Status = api.HealthPassing
		c.Notes = "herald reports this check every TTL/3; critical means herald stopped or reported the instance unhealthy"
	}
	b.Check = c
	return b
}

// at sends r to the registration's agent only.
func (r *registration) at(ctx context.Context, req request) (meta, error) {
	ctx, cancel := context.WithTimeout(ctx, r.s.attempt)
	defer cancel()
	m, err := r.s.call(ctx, r.addr, req)
	switch {
	case err == nil || !unreachable(err):
		r.s.setUp(r.addr)
	case ctx.Err() == nil || errors.Is(err, context.DeadlineExceeded):
		// No answer, and not because the caller gave up.
		r.s.setDown(r.addr, err)
	}
	return m, err
}

func (r *registration) register(ctx context.Context) error {
	q := url.Values{"replace-existing-checks": {"true"}}
	_, err := r.at(ctx, request{method: http.MethodPut, path: "/v1/agent/service/register", query: q, body: r.body})
	if err != nil {
		return fmt.Errorf("register %s: %w", r.id, err)
	}
	return nil
}

// report sends the current health: the TTL check's status, or maintenance mode for a
// check Consul runs itself (herald cannot set that check's status).
func (r *registration) report(ctx context.Context) error {
	r.mu.Lock()
	healthy, note := r.healthy, r.note
	r.mu.Unlock()
	if r.ttl {
		st := api.HealthPassing
		if !healthy {
			st = api.HealthCritical
		}
		if note == "" {
			note = "herald: " + st
		}
		body := map[string]string{"Status": st, "Output": note}
		_, err := r.at(ctx, request{method: http.MethodPut, path: "/v1/agent/check/update/" + url.PathEscape(r.checkID), body: body})
		if err != nil {
			return fmt.Errorf("update check %s: %w", r.checkID, err)
		}
		return nil
	}
	q := url.Values{"enable": {strconv.FormatBool(!healthy)}}
	if !healthy && note != "" {
		q.Set("reason", note)
	}
	_, err := r.at(ctx, request{method: http.MethodPut, path: "/v1/agent/service/maintenance/" + url.PathEscape(r.id), query: q})
	if err != nil {
		return fmt.Errorf("set maintenance of %s: %w", r.id, err)
	}
	return nil
}

// holder reports whether the agent knows the service, and whether this registration's
// check is still on it. A known service without it was registered again by another
// process: the registration is marked lost, for good.
func (r *registration) holder(ctx context.Context) (known, ours bool, err error) {
	m, err := r.at(ctx, request{method: http.MethodGet, path: "/v1/agent/service/" + url.PathEscape(r.id), ok: []int{http.StatusNotFound}})
	if err != nil || m.status != http.StatusOK {
		return false, false, err
	}
	var checks map[string]api.AgentCheck
	q := url.Values{"filter": {"ServiceID == " + strconv.Quote(r.id)}}
	if _, err := r.at(ctx, request{method: http.MethodGet, path: "/v1/agent/checks", query: q, out: &checks}); err != nil {
		return true, false, err
	}
	if _, ours = checks[r.checkID]; !ours {
		r.mu.Lock()
		r.lost = true
		r.mu.Unlock()
	}
	return true, ours, nil
}

// errReplaced: the service ID was registered again by another process.
var errReplaced = errors.New("registered again by another process (replace); standing down")

// refresh keeps the TTL check passing (or critical, as last set) and registers the
// service again when the agent forgot it. It reports whether the agent could be reached,
// or errReplaced when another process now holds the ID.
func (r *registration) refresh(ctx context.Context) error {
	if r.ttl {
		err := r.report(ctx)
		var ce *Error
		if err == nil || !errors.As(err, &ce) || ce.Status != http.StatusNotFound {
			return err
		}
	}
	// A TTL check the agent does not know, or (HTTP/TCP) every period: is it still ours?
	known, ours, err := r.holder(ctx)
	switch {
	case err != nil:
		return err
	case ours:
		return nil
	case known:
		return errReplaced
	}
	if err := r.register(ctx); err != nil {
		return fmt.Errorf("the agent forgot the service and registering it again failed: %w", err)
	}
	r.mu.Lock()
	healthy := r.healthy
	r.mu.Unlock()
	if r.ttl || !healthy {
		if err := r.report(ctx); err != nil {
			return fmt.Errorf("registered again, but reporting health failed: %w", err)
		}
	}
	r.log.Info("consul: the agent had forgotten the service (restarted?); registered it again", "addr", r.addr)
	return nil
}

// keepAlive refreshes every period; a failure is logged once when it starts (then at
// debug level) and its end once, so an agent down for an hour does not flood the log.
func (r *registration) keepAlive(ctx context.Context, period time.Duration) {
	defer close(r.done)
	tk := time.NewTicker(period)
	defer tk.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		err := r.refresh(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, errReplaced):
			r.log.Warn("consul: service ID registered again by another process; no longer keeping it alive nor removing it", "addr", r.addr)
			return
		case err != nil && !failing:
			r.log.Warn("consul: cannot keep the registration alive; retrying", "addr", r.addr, "err", err)
		case err != nil:
			r.log.Debug("consul: still cannot keep the registration alive", "addr", r.addr, "err", err)
		case failing:
			r.log.Info("consul: registration kept alive again", "addr", r.addr)
		}
		failing = err != nil
	}
}

// SetHealthy reports the instance passing or critical (TTL check, with note as the
// check's output), or for an HTTP/TCP check run by Consul, puts the service in or out of
// maintenance mode with note as the reason. The background loop keeps reporting it.
func (r *registration) SetHealthy(ctx context.Context, healthy bool, note string) error {
	r.mu.Lock()
	if r.gone {
		r.mu.Unlock()
		return fmt.Errorf("consul: service %s is deregistered", r.id)
	}
	if r.lost {
		r.mu.Unlock()
		return fmt.Errorf("consul: service %s: %w", r.id, errReplaced)
	}
	r.healthy, r.note = healthy, note
	r.mu.Unlock()
	if !r.ttl {
		// Maintenance mode is set on the service, whoever holds it now.
		known, ours, err := r.holder(ctx)
		if err != nil {
			return err
		}
		if known && !ours {
			return fmt.Errorf("consul: service %s: %w", r.id, errReplaced)
		}
	}
	err := r.report(ctx)
	var ce *Error
	if r.ttl && errors.As(err, &ce) && ce.Status == http.StatusNotFound {
		// The check is gone: the agent forgot the service (register it again), or
		// another process registered the ID since.
		if err := r.refresh(ctx); err != nil {
			return fmt.Errorf("consul: service %s: %w", r.id, err)
		}
		return nil
	}
	return err
}

// Deregister stops the background loop and removes the service from its agent. A second
// call, or a service the agent no longer knows, is not an error.
func (r *registration) Deregister(ctx context.Context) error {
	r.cancel()
	<-r.done
	r.mu.Lock()
	gone, lost := r.gone, r.lost
	r.mu.Unlock()
	if gone || lost {
		return nil
	}
	// Another process may have taken the ID over: its entry is not ours to remove. (It
	// could still do so between this look and the deregistration below.)
	known, ours, err := r.holder(ctx)
	if err != nil {
		return fmt.Errorf("deregister %s: %w", r.id, err)
	}
	if known && !ours {
		r.log.Info("consul: service ID held by another process now; left in place", "addr", r.addr)
		return nil
	}
	_, err = r.at(ctx, request{method: http.MethodPut, path: "/v1/agent/service/deregister/" + url.PathEscape(r.id), ok: []int{http.StatusNotFound}})
	if err != nil {
		return fmt.Errorf("deregister %s: %w", r.id, err)
	}
	r.mu.Lock()
	r.gone = true
	r.mu.Unlock()
	r.log.Info("deregistered service from consul", "addr", r.addr)
	return nil
}
