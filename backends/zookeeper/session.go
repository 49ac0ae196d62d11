package zookeeper

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/heraldhq/herald/backends"
)

// This file holds the session: the library's events and log lines turned into herald's
// connection state, and the loop that re-adds auth and registrations after a reconnect.

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
