package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/heraldhq/herald/backends"
)

// ErrTaken is returned by Register when the instance's znode exists and belongs to
// another session (another process) or is persistent, and RegisterOptions.Replace is off.
// It is a backends.ErrTaken.
var ErrTaken = backends.TakenError("already registered by another process")

var _ backends.RegisterPolicy = (*Store)(nil)

// RunsChecks is false: ZooKeeper runs no health checks; herald does.
func (s *Store) RunsChecks() bool { return false }

// ClaimWait is the session timeout plus a margin: a killed herald's ephemeral znode goes
// with its session.
func (s *Store) ClaimWait(backends.RegisterOptions) time.Duration {
	return s.cfg.SessionTimeout + backends.ClaimMargin
}

// Abandoned is false: an ephemeral znode has a live session behind it.
func (s *Store) Abandoned(context.Context, backends.Service, backends.RegisterOptions) (bool, error) {
	return false, nil
}

// maxCreateAttempts bounds the create / inspect / delete round of one registration.
const maxCreateAttempts = 5

// registration is one ephemeral znode that herald keeps: re-created after a session
// expiry, withdrawn while unhealthy, deleted by Deregister or when Register's ctx ends.
type registration struct {
	s    *Store
	svc  backends.Service
	base string // znode asked for: <chroot><root>/<name>/<id>
	data []byte
	seq  bool
	stop func() bool

	mu      sync.Mutex
	path    string // znode created; "" while withdrawn. base plus a suffix when sequential.
	healthy bool
	done    bool
	lost    bool // another process replaced it: not ours to re-create
}

// Register announces svc as an ephemeral znode <root>/<name>/<id> holding herald JSON;
// missing parents are created as persistent znodes. The znode lives as long as the
// session; herald re-creates it in the new session after an expiry. A znode that exists
// and belongs to another session, or is persistent, is refused with ErrTaken unless
// opts.Replace. With opts.Sequential the server appends a sequence number to the ID.
// opts.TTL is not used: the session timeout (Config.SessionTimeout) is the liveness.
func (s *Store) Register(ctx context.Context, svc backends.Service, opts backends.RegisterOptions) (backends.Registration, error) {
	if svc.ID == "" || svc.ID == "." || svc.ID == ".." || strings.Contains(svc.ID, "/") {
		return nil, fmt.Errorf("zookeeper: register %s: instance ID %q: want one path segment", svc.Name, svc.ID)
	}

	norm, err := backends.NormalizeService(svc)
	if err != nil {
		return nil, fmt.Errorf("zookeeper: register %s/%s: %w", svc.Name, svc.ID, err)
	}
	id, data, err := backends.EncodeRegistration(norm, opts.Format, true, os.Getpid())
	if err != nil {
		return nil, fmt.Errorf("zookeeper: register %s/%s: %w", svc.Name, svc.ID, err)
	}
	key, err := s.layout.InstanceKey(svc.Name, svc.Datacenter, id)
	if err != nil {
		return nil, fmt.Errorf("zookeeper: register %s/%s: %w", svc.Name, svc.ID, err)
	}
	r := &registration{
		s: s, svc: norm, data: data, seq: opts.Sequential, healthy: true,
		base: s.serverPath(key),
	}
	s.rmu.Lock()
	for o := range s.regs {
		if o.base == r.base && !r.seq && !o.seq {
			s.rmu.Unlock()
			return nil, fmt.Errorf("zookeeper: register %s: %w (this process; deregister it first)", s.keyOf(r.base), ErrTaken)
		}
	}
	s.rmu.Unlock()
	r.mu.Lock()
	err = r.createLocked(ctx, opts.Replace)
	r.mu.Unlock()
	if err != nil {
		return nil, err
	}
	s.log.Info("zookeeper: registered", "key", r.Path(), "address", norm.HostPort())
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if s.ctx.Err() != nil {
		// Closed meanwhile: the session and its znode are gone.
		return nil, ErrClosed
	}
	r.stop = context.AfterFunc(ctx, func() {
		dctx, cancel := context.WithTimeout(s.ctx, s.cfg.DialTimeout)
		defer cancel()
		if err := r.deregister(dctx); err != nil && !errors.Is(err, ErrClosed) {
			s.log.Warn("zookeeper: withdrawing registration", "key", s.keyOf(r.base), "err", err)
		}
	})
	s.regs[r] = struct{}{}
	return r, nil
}

// nodeACL is the ACL of herald's own instance znodes: with digest credentials only that
// user may change or delete them (everyone may read them); without, they are open, as
// Curator and most writers make them.
func (s *Store) nodeACL() []zk.ACL {
	if s.auth == nil {
		return zk.WorldACL(zk.PermAll)
	}
	return append(zk.DigestACL(zk.PermAll, s.user, s.pass), zk.WorldACL(zk.PermRead)...)
}

// ensureParents creates the missing ancestors of znode p as persistent, open znodes
// (shared directories other writers add to).
func (s *Store) ensureParents(ctx context.Context, p string) error {
	var missing []string
	for a := p; a != "/"; a = parentOf(a) {
		ok, _, err := s.exists(ctx, a)
		if err != nil {
			return s.errAt("stat", a, err)
		}
		if ok {
			break
		}
		missing = append(missing, a)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		a := missing[i]
		_, err := call(ctx, func() (string, error) { return s.conn.Create(a, nil, zk.FlagPersistent, zk.WorldACL(zk.PermAll)) })
		if err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return s.errAt("create", a, err)
		}
	}
	return nil
}

// createLocked creates the znode, or adopts it when it already belongs to this client.
// r.mu is held.
func (r *registration) createLocked(ctx context.Context, replace bool) error {
	s := r.s
	flags := int32(zk.FlagEphemeral)
	if r.seq {
		flags = zk.FlagEphemeralSequential
	}
	var lastErr error
	for range maxCreateAttempts {
		if err := s.waitReady(ctx); err != nil {
			if lastErr != nil {
				return fmt.Errorf("zookeeper %s: register %s: %v: %w", s.servers, r.base, lastErr, err)
			}
			return err
		}
		if err := s.ensureParents(ctx, parentOf(r.base)); err != nil {
			if transient(err) {
				lastErr = err
				continue
			}
			return err
		}
		p, err := call(ctx, func() (string, error) { return s.conn.Create(r.base, r.data, flags, s.nodeACL()) })
		switch {
		case err == nil:
			r.path = p
			return nil
		case errors.Is(err, zk.ErrNoNode), transient(err):
			lastErr = err
			continue
		case !errors.Is(err, zk.ErrNodeExists):
			return s.errAt("create", r.base, err)
		}
		ok, st, err := s.exists(ctx, r.base)
		if err != nil {
			return s.errAt("stat", r.base, err)
		}
		if !ok {
			continue
		}
		switch owner := st.EphemeralOwner; {
		case owner != 0 && owner == s.currentSession():
			if _, err := call(ctx, func() (*zk.Stat, error) { return s.conn.Set(r.base, r.data, st.Version) }); err != nil {
				lastErr = err
				continue
			}
			r.path = r.base
			return nil
		case s.ownSession(owner) || replace:
			// Ours from an expired session, or taken over on purpose.
			err := s.deleteVersion(ctx, r.base, st.Version)
			if err != nil && !errors.Is(err, zk.ErrNoNode) && !errors.Is(err, zk.ErrBadVersion) {
				return s.errAt("delete", r.base, err)
			}
			if replace && !s.ownSession(owner) {
				s.log.Warn("zookeeper: replacing existing registration", "key", s.keyOf(r.base), "owner", ownerDesc(owner))
			}
			lastErr = zk.ErrNodeExists
		default:
			return fmt.Errorf("zookeeper %s: register %s: %w (%s); set Replace to take it over", s.server(), s.keyOf(r.base), ErrTaken, ownerDesc(owner))
		}
	}
	return fmt.Errorf("zookeeper %s: register %s: giving up after %d attempts: %w", s.server(), s.keyOf(r.base), maxCreateAttempts, lastErr)
}

func ownerDesc(owner int64) string {
	if owner == 0 {
		return "a persistent znode"
	}
	return "ephemeral, session " + sessionHex(owner)
}

func (s *Store) deleteVersion(ctx context.Context, p string, version int32) error {
	_, err := call(ctx, func() (struct{}, error) { return struct{}{}, s.conn.Delete(p, version) })
	return err
}

// removeLocked deletes the znode if this client owns it. r.mu is held.
func (r *registration) removeLocked(ctx context.Context) error {
	s := r.s
	if r.path == "" {
		return nil
	}
	if err := s.waitReady(ctx); err != nil {
		return err
	}
	ok, st, err := s.exists(ctx, r.path)
	if err != nil {
		return s.errAt("stat", r.path, err)
	}
	if ok && s.ownSession(st.EphemeralOwner) {
		if err := s.deleteVersion(ctx, r.path, st.Version); err != nil && !errors.Is(err, zk.ErrNoNode) {
			return s.errAt("delete", r.path, err)
		}
	}
	r.path = ""
	return nil
}

// ensureLocked re-creates the znode when it is missing or left from an older session of
// ours. r.mu is held.
func (r *registration) ensureLocked(ctx context.Context) error {
	s := r.s
	if r.done || r.lost || !r.healthy {
		return nil
	}
	if r.path != "" {
		ok, st, err := s.exists(ctx, r.path)
		if err != nil {
			return s.errAt("stat", r.path, err)
		}
		switch {
		case ok && st.EphemeralOwner == s.currentSession():
			return nil
		case ok && !s.ownSession(st.EphemeralOwner):
			r.lost = true
			s.log.Warn("zookeeper: registration taken over by another process; not re-creating it",
				"key", s.keyOf(r.path), "owner", ownerDesc(st.EphemeralOwner))
			return nil
		case ok:
			if err := s.deleteVersion(ctx, r.path, st.Version); err != nil && !errors.Is(err, zk.ErrNoNode) {
				return s.errAt("delete", r.path, err)
			}
		}
		r.path = ""
	}
	err := r.createLocked(ctx, false)
	if errors.Is(err, ErrTaken) {
		r.lost = true
		s.log.Warn("zookeeper: registration taken by another process; not re-creating it", "key", s.keyOf(r.base), "err", err)
		return nil
	}
	if err == nil {
		s.log.Info("zookeeper: registration re-created", "key", s.keyOf(r.path))
	}
	return err
}

// keepRegistrations re-creates what a new session lost. It runs after every connect.
func (s *Store) keepRegistrations(ctx context.Context) error {
	s.mu.Lock()
	up := s.up
	s.mu.Unlock()
	if !up {
		return nil
	}
	s.rmu.Lock()
	regs := make([]*registration, 0, len(s.regs))
	for r := range s.regs {
		regs = append(regs, r)
	}
	s.rmu.Unlock()
	var errs []error
	for _, r := range regs {
		// Bounded, so that a Deregister waiting for r.mu is not held through an outage.
		rctx, cancel := context.WithTimeout(ctx, s.cfg.SessionTimeout)
		r.mu.Lock()
		err := r.ensureLocked(rctx)
		r.mu.Unlock()
		cancel()
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// SetHealthy withdraws the znode when false and re-creates it when true.
func (r *registration) SetHealthy(ctx context.Context, healthy bool, note string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return fmt.Errorf("zookeeper: %s: deregistered", r.s.keyOf(r.base))
	}
	if r.healthy == healthy && (r.path != "") == healthy {
		return nil
	}
	r.healthy = healthy
	if !healthy {
		r.s.log.Info("zookeeper: withdrawing unhealthy instance", "key", r.s.keyOf(r.base), "note", note)
		return r.removeLocked(ctx)
	}
	r.s.log.Info("zookeeper: re-announcing healthy instance", "key", r.s.keyOf(r.base), "note", note)
	r.lost = false
	return r.createLocked(ctx, false)
}

// Deregister deletes the znode and stops keeping it.
func (r *registration) Deregister(ctx context.Context) error {
	if r.stop != nil {
		r.stop()
	}
	return r.deregister(ctx)
}

func (r *registration) deregister(ctx context.Context) error {
	s := r.s
	s.rmu.Lock()
	delete(s.regs, r)
	s.rmu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.done = true
	had := r.path
	// A failed removal leaves r.path set, so that calling Deregister again retries it.
	if err := r.removeLocked(ctx); err != nil {
		return err
	}
	if had != "" {
		s.log.Info("zookeeper: deregistered", "key", s.keyOf(had))
	}
	return nil
}

// Path is the znode key the registration currently holds ("" while withdrawn); with
// Sequential it ends in the server's sequence number.
func (r *registration) Path() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.path == "" {
		return ""
	}
	return r.s.keyOf(r.path)
}
