package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/heraldhq/herald/backends"
)

// tracker follows the connections gRPC makes to each endpoint. The etcd client reports
// a refused connection or a failed TLS handshake only as "context deadline exceeded";
// the tracker keeps the real cause, and which endpoint it came from, for errors and
// State.
type tracker struct {
	onChange func()
	plain    bool // no TLS: a connection is up once TCP connects
	log      *slog.Logger

	mu   sync.Mutex
	eps  map[string]*epState
	last string // endpoint of the most recent failure
	up   string // endpoint of the most recent successful connection
}

type epState struct {
	open    int // live connections (after the TLS handshake, if any)
	lastErr error
	errAt   time.Time
	lost    bool // its loss was logged while other endpoints stayed up
}

func newTracker(hosts []string, plain bool, log *slog.Logger, onChange func()) *tracker {
	t := &tracker{onChange: onChange, plain: plain, log: log, eps: make(map[string]*epState, len(hosts))}
	for _, h := range hosts {
		t.eps[h] = &epState{}
	}
	return t
}

func (t *tracker) ep(addr string) *epState {
	e, ok := t.eps[addr]
	if !ok {
		e = &epState{}
		t.eps[addr] = e
	}
	return e
}

// dial is gRPC's dialer. Plain connections count as up once TCP connects; TLS ones once
// the handshake (wrapCreds) succeeds.
func (t *tracker) dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if ctx.Err() == nil {
			t.failed(addr, err)
		}
		return nil, err
	}
	tc := &trackedConn{Conn: c, t: t, ep: addr}
	if t.plain {
		tc.up()
	}
	return tc, nil
}

func (t *tracker) failed(addr string, err error) {
	t.mu.Lock()
	e := t.ep(addr)
	e.lastErr, e.errAt = err, time.Now()
	t.last = addr
	t.mu.Unlock()
	t.onChange()
}

func (t *tracker) opened(addr string) {
	t.mu.Lock()
	e := t.ep(addr)
	e.open++
	// lastErr stays: a server that accepts the handshake and then drops the
	// connection (a rejected client certificate) must not erase why it failed.
	t.up = addr
	back := e.lost
	e.lost = false
	t.mu.Unlock()
	if back {
		t.log.Info("etcd endpoint reconnected", "endpoint", addr)
	}
	t.onChange()
}

func (t *tracker) closed(addr string, cause error) {
	t.mu.Lock()
	e := t.ep(addr)
	e.open--
	others := false
	if cause != nil {
		e.lastErr, e.errAt = cause, time.Now()
		t.last = addr
		for a, o := range t.eps {
			others = others || (a != addr && o.open > 0)
		}
		// The overall state stays up and says nothing: log the lost member here.
		e.lost = others && e.open == 0
	}
	t.mu.Unlock()
	if others {
		t.log.Warn("etcd endpoint lost; using the others", "endpoint", addr, "error", cause.Error())
	}
	t.onChange()
}

// anyOpen reports whether some endpoint has a live connection, and which.
func (t *tracker) anyOpen() bool {
	ep, _ := t.openEndpoint()
	return ep != ""
}

func (t *tracker) openEndpoint() (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.eps[t.up]; e != nil && e.open > 0 {
		return t.up, true
	}
	for addr, e := range t.eps {
		if e.open > 0 {
			return addr, true
		}
	}
	return "", false
}

// lastFailure returns the most recent connection error of an endpoint that is not
// connected now, if any, and when it happened.
func (t *tracker) lastFailure() (string, error, time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.eps[t.last]; e != nil && e.open == 0 && e.lastErr != nil {
		return t.last, e.lastErr, e.errAt
	}
	var (
		best string
		at   time.Time
	)
	for addr, e := range t.eps {
		if e.open == 0 && e.lastErr != nil && e.errAt.After(at) {
			best, at = addr, e.errAt
		}
	}
	if best == "" {
		return "", nil, time.Time{}
	}
	return best, t.eps[best].lastErr, at
}

// describe names the endpoint in a connection error unless the error already does
// (dial errors do, TLS errors do not), and says how old an error is past a minute.
func describe(ep string, err error, at time.Time) string {
	msg := err.Error()
	if !strings.Contains(msg, ep) {
		msg = ep + ": " + msg
	}
	if age := time.Since(at); age > time.Minute {
		msg += fmt.Sprintf(" (%s ago)", age.Round(time.Second))
	}
	return msg
}

// trackedConn reports when a connection ends and why.
type trackedConn struct {
	net.Conn
	t  *tracker
	ep string

	mu      sync.Mutex
	counted bool  // counted as open in the tracker
	closing bool  // Close was called: later read errors are our own doing
	readErr error // the first read or write error
	read    int64 // bytes read, after the TLS handshake if there is one
	tls     bool  // wrapped by tlsConn after a successful handshake
	once    sync.Once
}

func (c *trackedConn) up() {
	c.mu.Lock()
	c.counted = true
	c.mu.Unlock()
	c.t.opened(c.ep)
}

func (c *trackedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && c.t.plain {
		c.addRead(n)
	}
	if err != nil {
		c.noteReadErr(err)
	}
	return n, err
}

func (c *trackedConn) addRead(n int) {
	c.mu.Lock()
	c.read += int64(n)
	c.mu.Unlock()
}

func (c *trackedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err != nil {
		c.noteReadErr(err)
	}
	return n, err
}

// noteTLSErr keeps a TLS alert from the server in preference to the plain I/O error
// it may have caused first.
func (c *trackedConn) noteTLSErr(err error) {
	if !isTLSAlert(err) {
		c.noteReadErr(err)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closing {
		c.readErr = err
	}
}

// isTLSAlert reports an alert the peer sent ("remote error: tls: bad certificate").
func isTLSAlert(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error"
}

// noteReadErr keeps the first read or write error, unless we are closing the
// connection ourselves.
func (c *trackedConn) noteReadErr(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closing && c.readErr == nil {
		c.readErr = err
	}
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.mu.Lock()
		c.closing = true
		counted, cause, silent := c.counted, c.readErr, c.read == 0
		c.mu.Unlock()
		switch {
		case cause == nil:
		case silent && c.t.plain:
			// What a TLS server does with a plain-text client.
			cause = fmt.Errorf("server closed the connection without answering (does it expect TLS? use etcds:// or the TLS options): %w", cause)
		case silent && isTLSAlert(cause):
			cause = fmt.Errorf("server refused the connection after the TLS handshake (does it require a client certificate signed by its CA?): %w", cause)
		case silent:
			// The server's alert may have gone unread: we failed writing first.
			cause = fmt.Errorf("server closed the connection right after the TLS handshake (does it require a client certificate signed by its CA?): %w", cause)
		default:
			cause = fmt.Errorf("connection lost: %w", cause)
		}
		if counted {
			c.t.closed(c.ep, cause)
		} else if cause != nil {
			c.t.failed(c.ep, cause)
		}
	})
	return c.Conn.Close()
}

// tlsConn records TLS-level errors (a server's "certificate required" alert arrives
// after the client's side of a TLS 1.3 handshake is done).
type tlsConn struct {
	net.Conn
	raw *trackedConn
}

func (c *tlsConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.raw.addRead(n)
	}
	if err != nil {
		c.raw.noteTLSErr(err)
	}
	return n, err
}

func (c *tlsConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err != nil {
		c.raw.noteReadErr(err)
	}
	return n, err
}

// wrapCreds returns TLS transport credentials that report handshake results.
func (t *tracker) wrapCreds(cfg *tls.Config) credentials.TransportCredentials {
	return &trackedCreds{TransportCredentials: credentials.NewTLS(cfg), t: t}
}

type trackedCreds struct {
	credentials.TransportCredentials
	t *tracker
}

func (tc *trackedCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := tc.TransportCredentials.ClientHandshake(ctx, authority, raw)
	rc, ok := raw.(*trackedConn)
	if !ok {
		return conn, info, err
	}
	if err != nil {
		if ctx.Err() == nil {
			tc.t.failed(rc.ep, fmt.Errorf("TLS handshake: %w", err))
		}
		return nil, nil, err
	}
	rc.up()
	return &tlsConn{Conn: conn, raw: rc}, info, nil
}

func (tc *trackedCreds) Clone() credentials.TransportCredentials {
	return &trackedCreds{TransportCredentials: tc.TransportCredentials.Clone(), t: tc.t}
}

// stateKeeper turns connection and call outcomes into the State the backend reports,
// and logs each change once.
type stateKeeper struct {
	mu     sync.Mutex
	cur    backends.State
	rpcErr error // the last call's error, until a call succeeds
	closed bool
}

func (k *stateKeeper) init(ep string) {
	k.cur = backends.State{Conn: backends.Connecting, Endpoint: ep, Since: time.Now()}
}

// rpcFailed records a failed call (not one its caller cancelled) in the state.
func (s *Store) rpcFailed(err error) {
	if errors.Is(err, context.Canceled) || errors.Is(err, errClosed) {
		return
	}
	s.st.mu.Lock()
	s.st.rpcErr = err
	s.st.mu.Unlock()
	s.refreshState()
}

// rpcOK records a successful call.
func (s *Store) rpcOK() {
	s.st.mu.Lock()
	had := s.st.rpcErr != nil
	s.st.rpcErr = nil
	s.st.mu.Unlock()
	if had {
		s.refreshState()
	}
}

func (k *stateKeeper) setClosed() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed = true
	k.cur = backends.State{Conn: backends.Down, Endpoint: k.cur.Endpoint, Err: errClosed, Since: time.Now()}
}

// State reports the connection state: up while some endpoint is connected and the
// last call succeeded; down with the cause otherwise.
func (s *Store) State() backends.State {
	s.refreshState()
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	return s.st.cur
}

// refreshState recomputes the state and logs a change. It is called by the tracker on
// every connection event and by State.
func (s *Store) refreshState() {
	openEp, open := s.track.openEndpoint()
	failEp, failErr, _ := s.track.lastFailure()

	k := &s.st
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return
	}
	next := backends.State{Conn: backends.Connecting, Endpoint: k.cur.Endpoint}
	switch {
	case open && k.rpcErr == nil:
		next.Conn, next.Endpoint = backends.Up, openEp
	case open:
		next.Conn, next.Endpoint, next.Err = backends.Down, openEp, k.rpcErr
	case failErr != nil:
		next.Conn, next.Endpoint, next.Err = backends.Down, failEp, failErr
	case k.rpcErr != nil:
		next.Conn, next.Err = backends.Down, k.rpcErr
	}
	prev := k.cur
	changed := next.Conn != prev.Conn || next.Endpoint != prev.Endpoint || errString(next.Err) != errString(prev.Err)
	if !changed {
		k.mu.Unlock()
		return
	}
	next.Since = prev.Since
	if next.Conn != prev.Conn {
		next.Since = time.Now()
	}
	k.cur = next
	k.mu.Unlock()

	// One warning when it goes down; while down the cause may alternate between
	// endpoints on every reconnect attempt, which is only worth a debug line.
	switch {
	case next.Conn == backends.Up && prev.Conn != backends.Up:
		s.log.Info("etcd connected", "endpoint", next.Endpoint)
	case next.Conn == backends.Down && prev.Conn != backends.Down:
		s.log.Warn("etcd unavailable; retrying, watches resume when it is back", "endpoint", next.Endpoint, "error", errString(next.Err))
	case next.Conn == backends.Down:
		s.log.Debug("etcd still unavailable", "endpoint", next.Endpoint, "error", errString(next.Err))
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
