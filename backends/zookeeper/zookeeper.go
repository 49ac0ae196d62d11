// Package zookeeper is herald's ZooKeeper backend: `--backend zookeeper://h1:2181,h2:2181/chroot`.
//
// # Keys
//
// A znode's path below the chroot is a key and its data the value. A leaf is a key even
// when it holds no data (its value is ""), as in confd. Unlike confd, an intermediate
// znode (one with children) is a key too when it holds data: confd drops such values.
// `?keys=leaves` in the URL restores confd's behaviour exactly (only leaves are keys), for
// byte-for-byte compatibility of ported templates. ZooKeeper's own /zookeeper subtree is
// never listed.
//
// # Watches
//
// go-zookeeper v1.0.4 has no persistent recursive watches (addWatch, ZooKeeper 3.6+), so
// a watched prefix is mirrored in memory with one-shot data and child watches on every
// znode under it, re-armed as they fire. They are multiplexed without one goroutine per
// znode: the per-watch channels the library returns are dropped (each is buffered and
// closed by the library once its single event is delivered, so nothing blocks or leaks)
// and every event reaches herald once, through the connection's event callback, which
// routes it by path to the watched prefixes it concerns. One goroutine per watched prefix
// re-reads what changed; every resource and every Watch call on that prefix shares it. A
// store-wide table records which watch kinds are armed on which znode and in which
// session, so a znode carries at most one watch of a kind however many prefixes cover it
// or how often a prefix is watched again, and the events queued for a prefix can never
// outnumber its armed watches. After a reconnect (the library re-registers watches with
// SetWatches) and after a session expiry (all watches are gone) each prefix is read again
// in full, re-armed and sent as a Full event, so nothing that happened meanwhile is lost.
//
// # Consistency
//
// ZooKeeper has no snapshot read. Get syncs the server it talks to with the leader, reads
// every znode under the prefixes, then stats them all again and accepts the read only when
// no znode's czxid, mzxid or pzxid moved in between (for a missing prefix: the nearest
// existing ancestor's). The result is then exactly the tree as it was at the end of the
// first pass, at least as new as every write acknowledged before Get began. A prefix that
// keeps changing is read again, a bounded number of times, and Get fails rather than
// return a torn view. A revision is the highest zxid seen in what was read.
//
// # Sessions and registrations
//
// The client reconnects by itself across the given servers and keeps its session when it
// can. When the session expires it opens a new one; herald then re-arms every watch,
// re-reads every watched prefix and re-creates its own ephemeral registrations.
package zookeeper

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/heraldhq/herald/backends"
)

const (
	defaultDialTimeout    = 5 * time.Second
	defaultSessionTimeout = 10 * time.Second
	// minBackoff is the first retry delay after a failure; maxBackoff caps them: a watch
	// that lost its server retries at least this often.
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
	// readParallelism is how many znodes are read at once; requests are pipelined on the
	// one connection.
	readParallelism = 32
	// maxOwnSessions bounds the list of session IDs we remember as ours (to recognize
	// our own stale ephemeral nodes).
	maxOwnSessions = 16
)

// ErrClosed is returned by calls on a closed Store.
var ErrClosed = errors.New("zookeeper: store closed")

// Store is a connection to a ZooKeeper ensemble. It implements backends.Store and
// backends.Registrar.
type Store struct {
	cfg     backends.Config
	layout  backends.Layout // where service instances are and what their levels mean
	log     *slog.Logger
	servers string // "h1:2181,h2:2181", for messages
	chroot  string // "" or "/x/y"
	leaves  bool   // ?keys=leaves: only leaves are keys (confd)
	auth    []byte // digest "user:password"; never logged, never in errors
	user    string // digest user, for the ACL of our own nodes
	pass    string

	conn       *zk.Conn
	connSet    chan struct{} // closed once conn is assigned
	ctx        context.Context
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	kick       chan struct{} // wakes the session loop
	closeOnce  sync.Once
	hsDeadline time.Duration
	tls        *tls.Config // nil: plain TCP

	mu         sync.Mutex
	state      backends.State
	up         bool
	ready      chan struct{} // closed while up
	hasSession bool
	authDone   bool
	session    int64
	ownSess    []int64
	libMsg     string        // the library's last error message, for State and errors
	warnedAt   time.Time     // when "unreachable" was last logged while not connected
	warnEvery  time.Duration // how often it is logged again while that lasts

	wmu     sync.Mutex
	wsess   int64
	watches map[string]*armed

	tmu   sync.RWMutex
	trees map[string]*tree

	rmu  sync.Mutex
	regs map[*registration]struct{}
}

var (
	_ backends.Store     = (*Store)(nil)
	_ backends.Registrar = (*Store)(nil)
)

// New prepares a Store for ep. It never blocks on the network and never fails because
// the servers are down: the client connects in the background, and the first call that
// needs the server waits for it until its context ends.
func New(cfg backends.Config, ep backends.Endpoint) (*Store, error) {
	if ep.Scheme != "" && ep.Scheme != "zookeeper" {
		return nil, fmt.Errorf("zookeeper: backend %s is not a zookeeper:// URL", ep)
	}
	if len(ep.Hosts) == 0 {
		return nil, fmt.Errorf("zookeeper: backend %s: no servers", ep)
	}
	layout, err := cfg.Layout()
	if err != nil {
		return nil, fmt.Errorf("zookeeper: backend %s: %w", ep, err)
	}
	s := &Store{
		cfg:     cfg,
		layout:  layout,
		log:     cfg.Log().With("backend", "zookeeper"),
		servers: strings.Join(ep.Hosts, ","),
		connSet: make(chan struct{}),
		kick:    make(chan struct{}, 1),
		ready:   make(chan struct{}),
		watches: make(map[string]*armed),
		trees:   make(map[string]*tree),
		regs:    make(map[*registration]struct{}),
	}
	if ep.Path != "" {
		s.chroot = backends.CleanKey(ep.Path)
		if s.chroot == "/" {
			s.chroot = ""
		}
	}
	for k, vs := range ep.Query {
		switch k {
		case "keys":
			switch v := vs[len(vs)-1]; v {
			case "leaves":
				s.leaves = true
			case "data", "":
			default:
				return nil, fmt.Errorf("zookeeper %s: ?keys=%s: want leaves (confd: only leaves are keys) or data (default: every znode holding data, and every leaf)", s.servers, v)
			}
		default:
			return nil, fmt.Errorf("zookeeper %s: unknown URL option %q (known: keys)", s.servers, k)
		}
	}
	if err := s.setAuth(cfg.Username, cfg.Password); err != nil {
		return nil, err
	}
	if s.cfg.DialTimeout <= 0 {
		s.cfg.DialTimeout = defaultDialTimeout
	}
	if s.cfg.SessionTimeout <= 0 {
		s.cfg.SessionTimeout = defaultSessionTimeout
	}
	s.hsDeadline = s.cfg.DialTimeout
	// TLS (ZooKeeper 3.5+'s secureClientPort): zookeepers:// with the system roots, or
	// the TLS options (CA, client certificate for ssl.clientAuth=need).
	s.tls = cfg.TLSFor(ep)
	s.state = backends.State{Conn: backends.Connecting, Endpoint: ep.Hosts[0], Since: time.Now()}
	s.warnEvery = unreachableWarnEvery
	s.ctx, s.cancel = context.WithCancel(context.Background())

	conn, _, err := zk.Connect(ep.Hosts, s.cfg.SessionTimeout,
		zk.WithHostProvider(&hostList{}),
		zk.WithDialer(s.dial),
		zk.WithLogger(zkLogger{s}),
		zk.WithLogInfo(false),
		zk.WithEventCallback(s.onEvent),
	)
	if err != nil {
		s.cancel()
		return nil, fmt.Errorf("zookeeper %s: %w", s.servers, err)
	}
	s.conn = conn
	close(s.connSet)
	s.wg.Add(1)
	go s.sessionLoop()
	return s, nil
}

// setAuth reads the digest credentials: Username + Password, or Password alone spelled
// "user:password". Messages never echo the password.
func (s *Store) setAuth(user, pass string) error {
	switch {
	case user == "" && pass == "":
		return nil
	case user == "":
		u, p, ok := strings.Cut(pass, ":")
		if !ok || u == "" {
			return fmt.Errorf("zookeeper %s: digest auth needs a user: set a username, or give the password as user:password", s.servers)
		}
		user, pass = u, p
	case strings.Contains(user, ":"):
		return fmt.Errorf("zookeeper %s: digest user %q must not contain ':'", s.servers, user)
	}
	if pass == "" {
		return fmt.Errorf("zookeeper %s: digest user %q has an empty password", s.servers, user)
	}
	s.user, s.pass = user, pass
	s.auth = []byte(user + ":" + pass)
	return nil
}

// minBackoff doubling to maxBackoff, jittered so that many clients do not retry in step.
func newBackoff() backends.Backoff { return backends.Backoff{Min: minBackoff, Max: maxBackoff} }

// Close ends the session (its ephemeral nodes vanish), stops every watch and waits for
// herald's goroutines.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		// A Watch that is starting has finished its wg.Add once it releases tmu; later
		// ones see the Store closed.
		s.tmu.Lock()
		s.tmu.Unlock() //nolint:staticcheck // an empty critical section is the point
		s.rmu.Lock()
		for r := range s.regs {
			if r.stop != nil {
				r.stop()
			}
		}
		clear(s.regs)
		s.rmu.Unlock()
		// Closing the session removes its ephemeral znodes on the server.
		s.conn.Close()
		s.wg.Wait()
	})
	return nil
}

// call runs one request so that the caller can stop waiting when ctx ends: the
// library's requests take no context. An abandoned request still finishes by itself
// when the server answers, the connection drops or the Store closes, so its goroutine
// is short-lived.
func call[T any](ctx context.Context, fn func() (T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := fn()
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// transient reports whether a request failed because of the connection or session, so
// that it is worth retrying once the client has reconnected.
func transient(err error) bool {
	return errors.Is(err, zk.ErrConnectionClosed) || errors.Is(err, zk.ErrNoServer) ||
		errors.Is(err, zk.ErrSessionExpired) || errors.Is(err, zk.ErrSessionMoved) ||
		errors.Is(err, zk.ErrClosing)
}

// serverPath maps a herald key to the znode path (adding the chroot).
func (s *Store) serverPath(key string) string {
	key = backends.CleanKey(key)
	if s.chroot == "" {
		return key
	}
	if key == "/" {
		return s.chroot
	}
	return s.chroot + key
}

// keyOf maps a znode path back to a herald key.
func (s *Store) keyOf(p string) string {
	if s.chroot == "" {
		return p
	}
	if p == s.chroot {
		return "/"
	}
	return p[len(s.chroot):]
}

// hidden reports whether child name of znode dir is ZooKeeper's own namespace.
func (s *Store) hidden(dir, name string) bool {
	return dir == "/" && name == "zookeeper"
}

func join(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

func parentOf(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

// server names the member in use, for errors.
func (s *Store) server() string {
	if srv := s.conn.Server(); srv != "" {
		return srv
	}
	return s.servers
}

// errAt wraps err with the server and znode it concerns.
func (s *Store) errAt(op, p string, err error) error {
	return fmt.Errorf("zookeeper %s: %s %s: %w", s.server(), op, p, err)
}
