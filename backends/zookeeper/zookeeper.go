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
	"math/rand/v2"
	"net"
	"slices"
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

// hostList hands out the servers in a shuffled round robin. Unlike the library's DNS
// provider it resolves nothing up front, so New never blocks or fails on DNS; names are
// resolved at each dial.
type hostList struct {
	mu      sync.Mutex
	servers []string
	curr    int
	last    int
}

func (h *hostList) Init(servers []string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.servers = slices.Clone(servers)
	rand.Shuffle(len(h.servers), func(i, j int) { h.servers[i], h.servers[j] = h.servers[j], h.servers[i] })
	h.curr, h.last = -1, -1
	return nil
}

func (h *hostList) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.servers)
}

func (h *hostList) Next() (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.curr = (h.curr + 1) % len(h.servers)
	retryStart := h.curr == h.last
	if h.last == -1 {
		h.last = 0
	}
	return h.servers[h.curr], retryStart
}

func (h *hostList) Connected() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last = h.curr
}

// dial connects to one server and records why it failed, for State and errors.
func (s *Store) dial(network, addr string, _ time.Duration) (net.Conn, error) {
	// The library's loop starts before Connect returns; events must find s.conn set.
	select {
	case <-s.connSet:
	case <-s.ctx.Done():
		return nil, ErrClosed
	}
	d := net.Dialer{Timeout: s.cfg.DialTimeout}
	c, err := d.DialContext(s.ctx, network, addr)
	if err != nil {
		s.mu.Lock()
		s.setDownLocked(addr, fmt.Errorf("dial %s: %w", addr, err))
		s.mu.Unlock()
		return nil, err
	}
	if s.tls != nil {
		if c, err = s.tlsHandshake(c, addr); err != nil {
			s.mu.Lock()
			s.setDownLocked(addr, fmt.Errorf("TLS with %s: %w", addr, err))
			s.mu.Unlock()
			return nil, err
		}
	}
	return &handshakeConn{Conn: c, limit: s.hsDeadline}, nil
}

// tlsHandshake runs the TLS handshake on c now, bounded by the dial timeout, so that a
// certificate problem is reported as such rather than as a failed session.
func (s *Store) tlsHandshake(c net.Conn, addr string) (net.Conn, error) {
	cfg := s.tls
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			c.Close()
			return nil, err
		}
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	tc := tls.Client(c, cfg)
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DialTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

// handshakeConn bounds the session handshake. The library allows it ten times the
// receive timeout (about 7 session timeouts), so a hung server that still accepts TCP
// (a paused JVM, a frozen VM) would hold the client that long before it tries the next
// member. Only the first read and write deadlines (the handshake's) are shortened.
type handshakeConn struct {
	net.Conn
	limit         time.Duration
	mu            sync.Mutex
	reads, writes int
}

func (c *handshakeConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	if !t.IsZero() && c.reads == 0 {
		c.reads++
		t = earlier(t, time.Now().Add(c.limit))
	}
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

func (c *handshakeConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	if !t.IsZero() && c.writes == 0 {
		c.writes++
		t = earlier(t, time.Now().Add(c.limit))
	}
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// unreachableWarnEvery is how often a store that cannot connect says so again, as the
// etcd and Consul backends do: an operator starting herald while ZooKeeper is down
// learns it at once, and a long outage is not silent.
const unreachableWarnEvery = 30 * time.Second

// zkLogger routes the library's log lines to slog at debug level (it would print to
// stderr) and keeps the last one as the cause shown when the connection drops. While
// no session is up, the library's lines are its failed connection attempts (it emits
// no session event for those): the first, and one every warnEvery, is a warning.
type zkLogger struct{ s *Store }

func (l zkLogger) Printf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.s.log.Debug("zookeeper client", "msg", msg)
	l.s.mu.Lock()
	l.s.libMsg = msg
	warn := !l.s.up && (l.s.warnedAt.IsZero() || time.Since(l.s.warnedAt) >= l.s.warnEvery)
	if warn {
		l.s.warnedAt = time.Now()
	}
	l.s.mu.Unlock()
	if warn {
		l.s.log.Warn("zookeeper unreachable; retrying, watches start when it answers", "servers", l.s.servers, "err", msg)
	}
}

// onEvent receives every event of the connection: session changes and the one-shot
// watch events of all znodes. It runs on the library's receive goroutine, sometimes with
// the library's locks held, so it only records and hands off; it never calls the server.
func (s *Store) onEvent(ev zk.Event) {
	switch ev.Type {
	case zk.EventSession:
		s.sessionEvent(ev)
		s.tmu.RLock()
		for _, t := range s.trees {
			t.enqueue(ev)
		}
		s.tmu.RUnlock()
	case zk.EventNotWatching:
		s.route(ev)
	default:
		s.disarm(ev.Path, ev.Type)
		s.route(ev)
	}
}

func (s *Store) route(ev zk.Event) {
	s.tmu.RLock()
	defer s.tmu.RUnlock()
	for _, t := range s.trees {
		if backends.UnderPrefix(ev.Path, t.path) {
			t.enqueue(ev)
		}
	}
}

func (s *Store) sessionEvent(ev zk.Event) {
	<-s.connSet
	switch ev.State {
	case zk.StateHasSession:
		id := s.conn.SessionID()
		s.wmu.Lock()
		if id != s.wsess {
			// The library dropped every watch of the old session.
			s.wsess = id
			clear(s.watches)
		}
		s.wmu.Unlock()

		s.mu.Lock()
		prev := s.session
		s.session, s.hasSession = id, true
		if !slices.Contains(s.ownSess, id) {
			s.ownSess = append(s.ownSess, id)
			if len(s.ownSess) > maxOwnSessions {
				s.ownSess = s.ownSess[1:]
			}
		}
		if s.auth == nil || s.authDone {
			s.setUpLocked(ev.Server)
		}
		s.mu.Unlock()
		if prev != 0 && prev != id {
			s.log.Warn("zookeeper session replaced; re-arming watches and re-creating registrations",
				"server", ev.Server, "old_session", sessionHex(prev), "session", sessionHex(id))
		}
		s.wake()
	case zk.StateDisconnected:
		s.mu.Lock()
		was := s.hasSession
		s.hasSession = false
		if s.ctx.Err() == nil && ev.Server != "" {
			what := "connection to " + ev.Server + " lost"
			if !was {
				what = "no session from " + ev.Server
			}
			err := errors.New(what)
			if s.libMsg != "" {
				err = fmt.Errorf("%s: %s", what, s.libMsg)
			}
			s.setDownLocked(ev.Server, err)
		}
		s.mu.Unlock()
	case zk.StateExpired:
		s.mu.Lock()
		s.hasSession = false
		s.setDownLocked(ev.Server, fmt.Errorf("session %s expired", sessionHex(s.session)))
		s.mu.Unlock()
		s.log.Warn("zookeeper session expired; opening a new one", "server", ev.Server)
	case zk.StateAuthFailed:
		s.mu.Lock()
		s.hasSession = false
		s.setDownLocked(ev.Server, errors.New("authentication failed"))
		s.mu.Unlock()
	case zk.StateConnecting:
		s.mu.Lock()
		if !s.up {
			s.state.Endpoint = ev.Server
		}
		s.mu.Unlock()
	}
}

func sessionHex(id int64) string { return fmt.Sprintf("0x%x", id) }

func (s *Store) setUpLocked(server string) {
	if s.up {
		return
	}
	s.up = true
	s.libMsg = ""
	s.warnedAt = time.Time{}
	s.state = backends.State{Conn: backends.Up, Endpoint: server, Since: time.Now()}
	close(s.ready)
	s.log.Info("zookeeper connected", "server", server, "session", sessionHex(s.session))
}

func (s *Store) setDownLocked(server string, err error) {
	if s.up {
		s.up = false
		s.ready = make(chan struct{})
		s.log.Warn("zookeeper connection down", "server", server, "err", err)
		s.warnedAt = time.Now() // said; the next "unreachable" comes warnEvery later
	}
	conn := backends.Down
	if err == nil {
		conn = backends.Connecting
	}
	if s.state.Conn != conn {
		s.state.Since = time.Now()
	}
	s.state.Conn, s.state.Err = conn, err
	if server != "" {
		s.state.Endpoint = server
	}
}

func (s *Store) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// State reports the connection state. It never holds credentials.
func (s *Store) State() backends.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// waitReady waits until a session is established (and digest auth added). The error
// names the servers and the last cause when ctx ends first.
func (s *Store) waitReady(ctx context.Context) error {
	s.mu.Lock()
	ch := s.ready
	s.mu.Unlock()
	select {
	case <-ch:
		return nil
	default:
	}
	select {
	case <-ch:
		return nil
	case <-s.ctx.Done():
		return ErrClosed
	case <-ctx.Done():
		s.mu.Lock()
		st := s.state
		s.mu.Unlock()
		if st.Err != nil {
			return fmt.Errorf("zookeeper %s: not connected (%v): %w", s.servers, st.Err, ctx.Err())
		}
		return fmt.Errorf("zookeeper %s: not connected yet: %w", s.servers, ctx.Err())
	}
}

func (s *Store) currentSession() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.session
}

func (s *Store) ownSession(id int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return id != 0 && slices.Contains(s.ownSess, id)
}

// sessionLoop adds digest auth to a new connection and keeps registrations alive after
// every (re)connect; it retries with backoff.
func (s *Store) sessionLoop() {
	defer s.wg.Done()
	var retry *time.Timer
	var retryC <-chan time.Time
	bo := newBackoff()
	for {
		select {
		case <-s.ctx.Done():
			if retry != nil {
				retry.Stop()
			}
			return
		case <-s.kick:
		case <-retryC:
		}
		retryC = nil
		err := s.addAuth()
		if err == nil {
			err = s.keepRegistrations(s.ctx)
		}
		if err == nil || s.ctx.Err() != nil {
			bo.Reset()
			continue
		}
		d := bo.Next()
		s.log.Warn("zookeeper: retrying", "err", err, "in", d.Round(time.Millisecond))
		if retry == nil {
			retry = time.NewTimer(d)
		} else {
			retry.Reset(d)
		}
		retryC = retry.C
	}
}

func (s *Store) addAuth() error {
	s.mu.Lock()
	need := s.auth != nil && s.hasSession && !s.authDone
	s.mu.Unlock()
	if !need {
		return nil
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DialTimeout)
	defer cancel()
	// The library re-sends added credentials on every later connection, before any
	// request, so this is needed once per Store.
	_, err := call(ctx, func() (struct{}, error) { return struct{}{}, s.conn.AddAuth("digest", s.auth) })
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("zookeeper %s: digest auth as %q: %w", s.servers, s.user, err)
		s.setDownLocked(s.state.Endpoint, err)
		return err
	}
	s.authDone = true
	if s.hasSession {
		s.setUpLocked(s.conn.Server())
	}
	return nil
}

// newBackoff returns the delay of the retry loops that wait for the server: from
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
