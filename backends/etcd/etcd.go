// Package etcd is herald's etcd v3 backend: consistent reads of many prefixes at one
// revision, watches that resume exactly after disconnects, leader changes and compaction,
// service lists read from <root>/<name>/<id>, and lease-backed registration.
package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/heraldhq/herald/backends"
)

const (
	defaultDialTimeout = 5 * time.Second
	// Every retry (watches, reconnects, re-registration) waits minBackoff at first,
	// doubling to maxBackoff.
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
	// keepaliveTime is the gRPC ping interval that detects a hung member (SIGSTOP, a
	// dead VM) whose TCP connection stays open. gRPC will not ping more often than 10 s
	// and etcd refuses pings closer than 5 s apart.
	keepaliveTime    = 10 * time.Second
	keepaliveTimeout = 5 * time.Second
)

var (
	_ backends.Store     = (*Store)(nil)
	_ backends.Registrar = (*Store)(nil)
)

// errClosed is returned by calls on a closed Store.
var errClosed = errors.New("etcd backend closed")

// Store is a connection to one etcd cluster. It is safe for concurrent use.
type Store struct {
	cfg    backends.Config
	layout backends.Layout // where service instances are and what their levels mean
	log    *slog.Logger
	hosts  []string
	name   string // "etcd h1:2379,h2:2379", the prefix of every error
	tls    *tls.Config
	track  *tracker

	// ctx ends on Close; it bounds dialing and is the client's own context.
	ctx    context.Context
	cancel context.CancelFunc
	// regCtx ends first on Close, so registrations revoke their leases while the client
	// still works.
	regCtx    context.Context
	regCancel context.CancelFunc
	regs      sync.WaitGroup
	dials     sync.WaitGroup

	mu      sync.Mutex
	cli     *clientv3.Client
	dialing chan struct{} // closed when the dial in progress ends; nil when none
	dialErr error         // the last dial's error
	closed  bool
	// subtreeOnly holds prefixes whose own key this user may not read: a role granted
	// on "/app/" (etcdctl role grant-permission --prefix r read /app/) covers "/app/x"
	// but not "/app". Such prefixes are read and watched without their own key.
	subtreeOnly map[string]bool
	// emptyHinted holds the prefixes already found empty, so the v2 hint is logged once.
	emptyHinted map[string]bool

	st stateKeeper
}

// New returns a Store for the endpoints of ep. It does not touch the network: the
// connection is made on first use and remade whenever it breaks, so New succeeds
// while etcd is down.
func New(cfg backends.Config, ep backends.Endpoint) (*Store, error) {
	if ep.Scheme != "" && ep.Scheme != "etcd" {
		return nil, fmt.Errorf("etcd backend: wrong scheme %q", ep.Scheme)
	}
	if len(ep.Hosts) == 0 {
		return nil, errors.New("etcd backend: no endpoints")
	}
	if ep.Path != "" {
		return nil, fmt.Errorf("etcd backend %s: a path in the URL (%q) has no meaning for etcd; use key prefixes in the resources", ep.String(), ep.Path)
	}
	if (cfg.Username == "") != (cfg.Password == "") {
		return nil, fmt.Errorf("etcd backend %s: a username needs a password and a password a username", ep.String())
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = defaultDialTimeout
	}
	layout, err := cfg.Layout()
	if err != nil {
		return nil, fmt.Errorf("etcd backend %s: %w", ep.String(), err)
	}
	s := &Store{
		cfg:         cfg,
		layout:      layout,
		log:         cfg.Log().With("backend", "etcd"),
		hosts:       append([]string(nil), ep.Hosts...),
		name:        "etcd " + strings.Join(ep.Hosts, ","),
		subtreeOnly: make(map[string]bool),
		emptyHinted: make(map[string]bool),
	}
	s.tls = cfg.TLSFor(ep)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.regCtx, s.regCancel = context.WithCancel(context.Background())
	s.track = newTracker(s.hosts, s.tls == nil, s.log, s.refreshState)
	s.st.init(s.hosts[0])
	return s, nil
}

// Close stops every registration (revoking its lease), then the connection. Watches
// in progress end with an error.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()

	s.regCancel()
	s.regs.Wait()
	s.cancel()
	s.dials.Wait()

	s.mu.Lock()
	cli := s.cli
	s.cli = nil
	s.mu.Unlock()
	s.st.setClosed()
	if cli == nil {
		return nil
	}
	if err := cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: close: %w", s.name, err)
	}
	return nil
}

// client returns the connected client, dialing if needed. Only with a username does
// dialing touch the network (clientv3.New fetches a token then); that happens in the
// background so that ctx, not the dial timeout, bounds the wait.
func (s *Store) client(ctx context.Context) (*clientv3.Client, error) {
	bo := newBackoff()
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, errClosed
		}
		if s.cli != nil {
			c := s.cli
			s.mu.Unlock()
			return c, nil
		}
		if s.dialing == nil {
			s.dialing = make(chan struct{})
			s.dials.Add(1)
			go s.dial(s.dialing)
		}
		ch := s.dialing
		s.mu.Unlock()

		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		s.mu.Lock()
		c, err := s.cli, s.dialErr
		s.mu.Unlock()
		if c != nil {
			return c, nil
		}
		if permanent(err) {
			return nil, err
		}
		if err := sleep(ctx, bo.Next()); err != nil {
			return nil, err
		}
	}
}

// newBackoff returns the delay of every retry loop here.
func newBackoff() backends.Backoff { return backends.Backoff{Min: minBackoff, Max: maxBackoff} }

func (s *Store) dial(done chan struct{}) {
	defer s.dials.Done()
	cli, err := clientv3.New(s.clientConfig())
	s.mu.Lock()
	defer s.mu.Unlock()
	defer close(done)
	s.dialing = nil
	if err != nil {
		s.dialErr = err
		return
	}
	if s.closed {
		cli.Close()
		s.dialErr = errClosed
		return
	}
	s.cli, s.dialErr = cli, nil
}

func (s *Store) clientConfig() clientv3.Config {
	opts := []grpc.DialOption{
		grpc.WithContextDialer(s.track.dial),
		// gRPC's default reconnect backoff grows to 2 minutes: far too slow to notice
		// that etcd is back.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  100 * time.Millisecond,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   maxBackoff,
			},
			MinConnectTimeout: s.cfg.DialTimeout,
		}),
	}
	if s.tls != nil {
		opts = append(opts, grpc.WithTransportCredentials(s.track.wrapCreds(s.tls)))
	}
	return clientv3.Config{
		Endpoints:            s.hosts,
		DialTimeout:          s.cfg.DialTimeout,
		DialKeepAliveTime:    keepaliveTime,
		DialKeepAliveTimeout: keepaliveTimeout,
		TLS:                  s.tls,
		Username:             s.cfg.Username,
		Password:             s.cfg.Password,
		// The client logs through zap at info level by default; herald logs through slog.
		Logger:      zap.NewNop(),
		Context:     s.ctx,
		DialOptions: opts,
	}
}

// permanent reports errors that retrying with the same configuration cannot fix.
func permanent(err error) bool {
	return errors.Is(err, errClosed) ||
		errors.Is(err, rpctypes.ErrAuthFailed) ||
		errors.Is(err, rpctypes.ErrPermissionDenied) ||
		errors.Is(err, rpctypes.ErrUserEmpty)
}

// fail wraps err with the store's endpoints and the operation, records it in the
// connection state, and, when the call only timed out, adds why the connection is
// down: the client reports a refused or failed TLS connection as a plain timeout.
func (s *Store) fail(op string, err error) error {
	err = rpctypes.Error(err)
	s.rpcFailed(err)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		if ep, cause, at := s.track.lastFailure(); cause != nil {
			return fmt.Errorf("%s: %s: %w (last connection error: %s)", s.name, op, err, describe(ep, cause, at))
		}
		if !s.track.anyOpen() {
			return fmt.Errorf("%s: %s: %w (no connection to any endpoint yet)", s.name, op, err)
		}
		return fmt.Errorf("%s: %s: %w (connected, but etcd did not answer: no leader or overloaded?)", s.name, op, err)
	}
	return fmt.Errorf("%s: %s: %w", s.name, op, err)
}

func (s *Store) isSubtreeOnly(p string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subtreeOnly[p]
}

func (s *Store) setSubtreeOnly(p string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.subtreeOnly[p] {
		s.log.Debug("etcd user may not read the prefix key itself; reading only below it", "prefix", p)
	}
	s.subtreeOnly[p] = true
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
