package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/heraldhq/herald/backends"
)

const defaultRegisterTTL = 10 * time.Second

// ErrTaken is returned by Register when the instance's key is held by another lease
// (another process registered the same ID) and RegisterOptions.Replace is false. It is a
// backends.ErrTaken.
var ErrTaken = backends.TakenError("already registered by another process")

var _ backends.RegisterPolicy = (*Store)(nil)

// RunsChecks is false: etcd runs no health checks; herald does.
func (s *Store) RunsChecks() bool { return false }

// ClaimWait is the lease length plus a margin: a killed herald's key goes with its lease.
func (s *Store) ClaimWait(opts backends.RegisterOptions) time.Duration {
	if opts.TTL <= 0 {
		opts.TTL = defaultRegisterTTL
	}
	return opts.TTL + backends.ClaimMargin
}

// Abandoned is false: a key under a live lease has a live holder.
func (s *Store) Abandoned(context.Context, backends.Service, backends.RegisterOptions) (bool, error) {
	return false, nil
}

func validSegment(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.Contains(s, "/")
}

// Register writes svc at <root>/<name>/<id> attached to a lease of opts.TTL (default
// 10 s) and keeps the lease alive until Deregister, ctx's end or Close; then it revokes
// the lease, which removes the key at once. It refuses (ErrTaken) a key that already
// exists under another lease, or without one, unless opts.Replace.
//
// If the lease is lost (etcd unreachable for longer than the TTL, or revoked by
// someone), it is granted anew and the key written again as soon as etcd answers.
func (s *Store) Register(ctx context.Context, svc backends.Service, opts backends.RegisterOptions) (backends.Registration, error) {
	if !validSegment(svc.Name) || !validSegment(svc.ID) {
		return nil, fmt.Errorf("%s: register: service name %q and ID %q must be non-empty and contain no '/'", s.name, svc.Name, svc.ID)
	}
	if svc.Address == "" || svc.Port < 0 || svc.Port > 65535 {
		return nil, fmt.Errorf("%s: register %s/%s: need an address and a port in 0-65535 (got %q, %d)", s.name, svc.Name, svc.ID, svc.Address, svc.Port)
	}
	ttl := opts.TTL
	if ttl <= 0 {
		ttl = defaultRegisterTTL
	}
	id, val, err := backends.EncodeRegistration(svc, opts.Format, false, os.Getpid())
	if err != nil {
		return nil, fmt.Errorf("%s: register %s/%s: %w", s.name, svc.Name, svc.ID, err)
	}
	key, err := s.layout.InstanceKey(svc.Name, svc.Datacenter, id)
	if err != nil {
		return nil, fmt.Errorf("%s: register %s/%s: %w", s.name, svc.Name, svc.ID, err)
	}
	r := &registration{
		s:       s,
		key:     key,
		val:     string(val),
		ttl:     int64((ttl + time.Second - 1) / time.Second),
		replace: opts.Replace,
		healthy: true,
		done:    make(chan struct{}),
	}
	r.log = s.log.With("key", r.key)

	cli, err := s.client(ctx)
	if err != nil {
		return nil, s.fail("register "+r.key, err)
	}
	if err := r.announce(ctx, cli, 0); err != nil {
		return nil, err
	}

	life, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.regCtx, cancel)
	r.cancel = func() { stop(); cancel() }
	ka, err := cli.KeepAlive(life, r.lease)
	if err != nil {
		r.cancel()
		r.revoke(ctx, cli)
		return nil, s.fail("register "+r.key+": keepalive", err)
	}
	s.regs.Add(1)
	go r.run(life, cli, ka)
	r.log.Info("etcd: registered service instance", "lease", fmt.Sprintf("%x", int64(r.lease)), "ttl_s", r.ttl)
	return r, nil
}

type registration struct {
	s       *Store
	key     string
	val     string
	ttl     int64
	replace bool
	log     *slog.Logger
	cancel  context.CancelFunc
	done    chan struct{}

	mu           sync.Mutex // serializes writes to etcd; guards the fields below
	lease        clientv3.LeaseID
	healthy      bool
	deregistered bool
}

// announce makes sure a live lease exists (granting one if lease is 0) and, when
// healthy, that the key holds our value under it. Called with r.mu not held.
func (r *registration) announce(ctx context.Context, cli *clientv3.Client, old clientv3.LeaseID) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lease == 0 || r.lease == old && old != 0 {
		g, err := cli.Grant(ctx, r.ttl)
		if err != nil {
			return r.s.fail("register "+r.key+": grant lease", err)
		}
		r.lease = g.ID
	}
	if !r.healthy {
		return nil
	}
	owned := []clientv3.LeaseID{r.lease}
	if old != 0 {
		owned = append(owned, old)
	}
	if err := r.put(ctx, cli, owned); err != nil {
		if old == 0 {
			// A first registration that fails leaves nothing behind.
			r.revokeLocked(ctx, cli)
		}
		return err
	}
	return nil
}

// put writes the value under r.lease unless the key belongs to a lease not in owned
// (or to none) and Replace is off. r.mu is held.
func (r *registration) put(ctx context.Context, cli *clientv3.Client, owned []clientv3.LeaseID) error {
	op := "register " + r.key
	for range 3 {
		resp, err := cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(r.key), "=", 0)).
			Then(clientv3.OpPut(r.key, r.val, clientv3.WithLease(r.lease))).
			Else(clientv3.OpGet(r.key)).
			Commit()
		if err != nil {
			return r.s.fail(op, err)
		}
		if resp.Succeeded {
			r.s.rpcOK()
			return nil
		}
		kvs := resp.Responses[0].GetResponseRange().GetKvs()
		if len(kvs) == 0 {
			continue // deleted in between
		}
		holder := clientv3.LeaseID(kvs[0].Lease)
		ours := false
		for _, l := range owned {
			ours = ours || holder == l
		}
		if ours && holder == r.lease && string(kvs[0].Value) == r.val {
			return nil
		}
		if !ours && !r.replace {
			who := fmt.Sprintf("lease %x", int64(holder))
			if holder == 0 {
				who = "no lease (written by hand?)"
			}
			return fmt.Errorf("%s: %s: %w (key exists under %s; use replace to take it over)", r.s.name, op, ErrTaken, who)
		}
		// Only if nobody changed it since we looked.
		resp, err = cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(r.key), "=", kvs[0].ModRevision)).
			Then(clientv3.OpPut(r.key, r.val, clientv3.WithLease(r.lease))).
			Commit()
		if err != nil {
			return r.s.fail(op, err)
		}
		if resp.Succeeded {
			r.s.rpcOK()
			return nil
		}
	}
	return fmt.Errorf("%s: %s: the key kept changing under us; giving up this attempt", r.s.name, op)
}

// run keeps the lease alive. The client closes ka when the lease expired or when no
// keepalive was answered for a whole TTL; then run checks whether the lease survived
// and re-announces, retrying until etcd answers or the registration ends.
func (r *registration) run(life context.Context, cli *clientv3.Client, ka <-chan *clientv3.LeaseKeepAliveResponse) {
	defer r.s.regs.Done()
	defer close(r.done)
	defer r.cancel() // releases the hook on the store's context
	for {
		select {
		case <-life.Done():
			r.finish(life, cli)
			return
		case _, ok := <-ka:
			if ok {
				continue
			}
			if life.Err() != nil {
				r.finish(life, cli)
				return
			}
			r.log.Warn("etcd: registration's lease keepalive stopped; re-announcing")
			ka = r.recover(life, cli)
			if ka == nil {
				r.finish(life, cli)
				return
			}
			r.log.Info("etcd: registration re-announced", "lease", fmt.Sprintf("%x", int64(r.currentLease())))
		}
	}
}

func (r *registration) currentLease() clientv3.LeaseID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lease
}

// recover returns a keepalive channel for a live lease with the key written under it,
// or nil when life ended first.
func (r *registration) recover(life context.Context, cli *clientv3.Client) <-chan *clientv3.LeaseKeepAliveResponse {
	bo := newBackoff()
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if sleep(life, bo.Next()) != nil {
				return nil
			}
		}
		ctx, cancel := context.WithTimeout(life, 3*r.s.cfg.DialTimeout)
		ka, err := r.recoverOnce(ctx, life, cli)
		cancel()
		if err == nil {
			return ka
		}
		if life.Err() != nil {
			return nil
		}
		r.log.Warn("etcd: re-announcing registration failed; retrying", "error", err.Error(), "attempt", attempt+1)
	}
}

func (r *registration) recoverOnce(ctx, life context.Context, cli *clientv3.Client) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	old := r.currentLease()
	// The lease may have survived: a restarted etcd extends leases it recovers.
	resp, err := cli.TimeToLive(ctx, old)
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return nil, r.s.fail("register "+r.key+": lease state", err)
	}
	dead := err != nil || resp.TTL <= 0
	if dead {
		if err := r.announce(ctx, cli, old); err != nil {
			return nil, err
		}
	} else if err := r.announce(ctx, cli, 0); err != nil {
		return nil, err
	}
	ka, err := cli.KeepAlive(life, r.currentLease())
	if err != nil {
		return nil, r.s.fail("register "+r.key+": keepalive", err)
	}
	return ka, nil
}

// finish runs when the registration's life ends: revoke the lease unless Deregister
// does it with its own context.
func (r *registration) finish(life context.Context, cli *clientv3.Client) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.deregistered {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(life), r.s.cfg.DialTimeout)
	defer cancel()
	if err := r.revokeLocked(ctx, cli); err != nil {
		r.log.Warn("etcd: could not revoke the registration's lease; the key stays until it expires", "error", err.Error(), "ttl_s", r.ttl)
		return
	}
	r.log.Info("etcd: registration ended; lease revoked")
}

func (r *registration) revoke(ctx context.Context, cli *clientv3.Client) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.revokeLocked(ctx, cli)
}

func (r *registration) revokeLocked(ctx context.Context, cli *clientv3.Client) error {
	if r.lease == 0 {
		return nil
	}
	_, err := cli.Revoke(ctx, r.lease)
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return r.s.fail(fmt.Sprintf("register %s: revoke lease %x", r.key, int64(r.lease)), err)
	}
	r.lease = 0
	return nil
}

// SetHealthy withdraws the key (keeping the lease) when false and writes it again
// when true. note is logged.
func (r *registration) SetHealthy(ctx context.Context, healthy bool, note string) error {
	cli, err := r.s.client(ctx)
	if err != nil {
		return r.s.fail("register "+r.key, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.deregistered {
		return fmt.Errorf("%s: register %s: deregistered", r.s.name, r.key)
	}
	was := r.healthy
	r.healthy = healthy
	if healthy {
		if r.lease == 0 {
			return nil // the keepalive loop is re-granting; it writes the key when done
		}
		if err := r.put(ctx, cli, []clientv3.LeaseID{r.lease}); err != nil {
			r.healthy = was
			return err
		}
		if !was {
			r.log.Info("etcd: instance healthy again; announced", "note", note)
		}
		return nil
	}
	// Delete only our own key: someone who replaced us keeps theirs.
	_, err = cli.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(r.key), "=", r.lease)).
		Then(clientv3.OpDelete(r.key)).
		Commit()
	if err != nil {
		r.healthy = was
		return r.s.fail("withdraw "+r.key, err)
	}
	if was {
		r.log.Warn("etcd: instance unhealthy; withdrawn", "note", note)
	}
	return nil
}

// Deregister stops the keepalive and revokes the lease, which deletes the key. If etcd
// cannot be reached before ctx ends, the key disappears when the lease expires.
func (r *registration) Deregister(ctx context.Context) error {
	r.mu.Lock()
	if r.deregistered {
		r.mu.Unlock()
		return nil
	}
	r.deregistered = true
	r.mu.Unlock()
	r.cancel()
	select {
	case <-r.done:
	case <-ctx.Done():
		return fmt.Errorf("%s: deregister %s: %w", r.s.name, r.key, ctx.Err())
	}
	cli, err := r.s.client(ctx)
	if err != nil {
		return r.s.fail("deregister "+r.key, err)
	}
	if err := r.revoke(ctx, cli); err != nil {
		return fmt.Errorf("%w; the instance stays listed until its lease expires (TTL %ds)", err, r.ttl)
	}
	r.log.Info("etcd: deregistered")
	return nil
}
