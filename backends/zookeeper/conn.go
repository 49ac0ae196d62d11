package zookeeper

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"time"
)

// This file holds how herald reaches the servers: the shuffled host list, the dialer
// and the TLS handshake bounded by the session timeout.

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
