package consul

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/heraldhq/herald/backends"
)

// ErrPermission marks a request Consul's ACLs refused, or answered with part of the data
// hidden (Consul filters what a token may not read instead of failing).
var ErrPermission = errors.New("permission denied by Consul ACL (check --consul-token, HERALD_CONSUL_TOKEN or CONSUL_HTTP_TOKEN)")

// Error is a failed request to one agent. It names the agent and the path, never the
// token (which travels in a header, and is scrubbed from the echoed response body).
type Error struct {
	Addr   string
	Method string
	Path   string // without the query string
	Status int    // HTTP status; 0 when no answer came
	Err    error
}

func (e *Error) Error() string {
	return fmt.Sprintf("consul %s: %s %s: %v", e.Addr, e.Method, e.Path, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// retryable reports whether another agent, or the same one a moment later, may answer:
// no answer at all, a server-side failure ("No cluster leader") or too many connections
// (429), not a refusal.
func retryable(err error) bool {
	var ce *Error
	if errors.As(err, &ce) {
		return ce.Status == 0 || ce.Status >= 500 || ce.Status == http.StatusTooManyRequests
	}
	return false
}

// unreachable reports whether err means the agent is not serving (as opposed to busy).
func unreachable(err error) bool {
	var ce *Error
	return errors.As(err, &ce) && (ce.Status == 0 || ce.Status >= 500)
}

// meta is what Consul says about an answer besides its body.
type meta struct {
	index    uint64 // X-Consul-Index
	filtered bool   // X-Consul-Results-Filtered-By-ACLs
	status   int
	addr     string // the agent that answered
	aclDeny  bool   // X-Consul-Default-ACL-Policy: deny
}

// request is one HTTP call, independent of the agent it goes to.
type request struct {
	method string
	path   string     // already escaped
	query  url.Values // may be nil
	body   any        // JSON-encoded when non-nil
	out    any        // JSON-decoded from a 200 answer when non-nil
	ok     []int      // statuses besides 200 that are answers, not errors (e.g. 404 for an empty KV tree)
}

// call sends r to one agent.
func (s *Store) call(ctx context.Context, addr string, r request) (meta, error) {
	fail := func(status int, err error) (meta, error) {
		return meta{status: status}, &Error{Addr: addr, Method: r.method, Path: r.path, Status: status, Err: err}
	}
	req, err := s.newRequest(ctx, addr, r)
	if err != nil {
		return fail(0, err)
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return fail(0, s.transportErr(err))
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
	}()
	m := meta{status: resp.StatusCode, addr: addr}
	if v := resp.Header.Get("X-Consul-Index"); v != "" {
		if m.index, err = strconv.ParseUint(v, 10, 64); err != nil {
			return fail(resp.StatusCode, fmt.Errorf("bad X-Consul-Index %q: %w", v, err))
		}
	}
	m.filtered = resp.Header.Get("X-Consul-Results-Filtered-By-ACLs") == "true"
	m.aclDeny = resp.Header.Get("X-Consul-Default-ACL-Policy") == "deny"
	if resp.StatusCode != http.StatusOK {
		for _, c := range r.ok {
			if c == resp.StatusCode {
				return m, nil
			}
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		// In case a proxy or a future Consul echoes the token.
		msg := strings.TrimSpace(backends.RedactSecrets(string(b), s.token))
		switch resp.StatusCode {
		case http.StatusForbidden:
			return fail(resp.StatusCode, fmt.Errorf("%w: HTTP 403: %s", ErrPermission, msg))
		case http.StatusTooManyRequests:
			return fail(resp.StatusCode, fmt.Errorf("HTTP 429: %s (Consul allows limits.http_max_conns_per_client connections per client address, 200 by default, and over plain HTTP every watched prefix holds one: raise the limit, or use consuls://, where watches share connections)", msg))
		}
		return fail(resp.StatusCode, fmt.Errorf("HTTP %d: %s", resp.StatusCode, msg))
	}
	if r.out != nil {
		if err := s.decode(r.path, resp.Body, r.out); err != nil {
			return fail(resp.StatusCode, fmt.Errorf("decode answer: %w", err))
		}
	}
	return m, nil
}

// decode reads a whole answer, into a buffer sized as the last answer to the same path
// was, then decodes it. A watch on a big prefix or on the catalog gets all of it again at
// every change: json.Decoder grows its buffer step by step for each (2.3 times the
// 186 KB answer, the largest allocation of a change on a 1,000-key prefix); a buffer kept
// between answers would count twice in the heap the GC paces itself by.
func (s *Store) decode(path string, body io.Reader, out any) error {
	hint := 0
	if v, ok := s.sizes.Load(path); ok {
		hint = v.(int)
	}
	buf := bytes.NewBuffer(make([]byte, 0, hint+bytes.MinRead))
	if _, err := buf.ReadFrom(body); err != nil {
		return err
	}
	if buf.Len() != hint {
		s.sizes.Store(path, buf.Len())
	}
	return json.Unmarshal(buf.Bytes(), out)
}

// newRequest builds r's HTTP request to addr, with the datacenter, token and basic auth.
func (s *Store) newRequest(ctx context.Context, addr string, r request) (*http.Request, error) {
	q := url.Values{}
	for k, v := range r.query {
		q[k] = v
	}
	if s.dc != "" && q.Get("dc") == "" {
		q.Set("dc", s.dc)
	}
	u := s.scheme + "://" + addr + r.path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var body io.Reader
	if r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return nil, err
	}
	if s.token != "" {
		req.Header.Set("X-Consul-Token", s.token)
	}
	if s.user != "" {
		// For a proxy in front of the agent (confd's -basic-auth); Consul ignores it.
		req.SetBasicAuth(s.user, s.pass)
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// transportErr says why no answer came, without repeating the URL.
func (s *Store) transportErr(err error) error {
	// url.Error repeats the full URL; the address and path are already in Error.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if s.scheme == "https" && (errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) ||
		strings.Contains(err.Error(), "http2: client conn could not be established")) {
		// With TLS 1.3 a refused client certificate shows up on the client only as
		// a connection the server dropped (over HTTP/2, without even the errno).
		err = fmt.Errorf("%w (the agent dropped the TLS connection: does it require a client certificate that was not given or not accepted?)", err)
	}
	return err
}

// hidden is the error for an answer Consul trimmed to what the token may read.
func hidden(m meta, r request, what string) error {
	return &Error{Addr: m.addr, Method: r.method, Path: r.path, Status: m.status, Err: fmt.Errorf("%w: %s", ErrPermission, what)}
}

// authzCheck is one question to Consul's /v1/internal/acl/authorize.
type authzCheck struct {
	Resource string
	Segment  string
	Access   string
	Allow    bool `json:",omitempty"`
}

// anonymousDenied covers a gap in Consul's ACL reporting: for the anonymous token (no
// token given) Consul never sets "results filtered by ACLs", so a token forgotten on an
// agent that denies by default reads as an empty store. When that is the situation (no
// token, default policy deny), it asks the agent whether the anonymous token may read
// what was asked, in groups of alternatives (any allowed one will do), and turns a refusal
// into ErrPermission. An agent without the endpoint (older than 1.10) is not asked.
func (s *Store) anonymousDenied(ctx context.Context, m meta, r request, what string, groups [][]authzCheck) error {
	if s.token != "" || !m.aclDeny {
		return nil
	}
	var flat []authzCheck
	for _, g := range groups {
		flat = append(flat, g...)
	}
	// Consul answers at most 64 questions per request.
	var answers []authzCheck
	for start := 0; start < len(flat); start += 64 {
		chunk := flat[start:min(start+64, len(flat))]
		var ans []authzCheck
		actx, cancel := context.WithTimeout(ctx, s.attempt)
		_, err := s.call(actx, m.addr, request{method: http.MethodPost, path: "/v1/internal/acl/authorize", body: chunk, out: &ans})
		cancel()
		if err != nil || len(ans) != len(chunk) {
			s.log.Debug("consul: cannot ask the agent what the anonymous token may read", "addr", m.addr, "err", err)
			return nil
		}
		answers = append(answers, ans...)
	}
	i := 0
	for _, g := range groups {
		ok := false
		for range g {
			ok = ok || answers[i].Allow
			i++
		}
		if !ok {
			return hidden(m, r, fmt.Sprintf("no ACL token was given, the agent denies by default, and the anonymous token may not read %s %q", what, g[0].Segment))
		}
	}
	return nil
}

// do sends r to the agent that answered last and, when it gives no answer (or a server
// error), to the others in the order given, once each. timeout bounds each attempt so a
// hung agent (stopped process, dropped packets) does not hold the caller.
func (s *Store) do(ctx context.Context, r request, timeout time.Duration) (meta, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.closeCtx, cancel)
	defer stop()

	n := len(s.addrs)
	start := int(s.cur.Load())
	var errs []error
	var last string
	for i := range n {
		k := (start + i) % n
		addr := s.addrs[k]
		actx, acancel := context.WithTimeout(ctx, timeout)
		m, err := s.call(actx, addr, r)
		acancel()
		if err == nil || !retryable(err) {
			// The agent answered, even if with a refusal: the connection is fine.
			s.cur.Store(int32(k))
			s.agentAnswered(k)
			s.setUp(addr)
			return m, err
		}
		if dc := s.remoteDC(r); dc != "" && m.status >= 500 {
			// The agent answered, but the other datacenter did not (its servers are down
			// or the WAN is cut): another agent of ours would say the same, and the
			// backend is still up for everything else.
			s.cur.Store(int32(k))
			s.agentAnswered(k)
			s.setUp(addr)
			s.dcFailed(dc, err)
			return m, fmt.Errorf("datacenter %s: %w", dc, err)
		}
		if s.closeCtx.Err() != nil {
			return m, fmt.Errorf("%w: %w", errClosed, err)
		}
		if ctx.Err() != nil {
			return m, err
		}
		if unreachable(err) {
			s.agentFailed(k, err)
		}
		s.outages.Add(1)
		errs = append(errs, err)
		last = addr
	}
	err := errors.Join(errs...)
	if n > 1 {
		err = fmt.Errorf("no consul agent answered (%d tried): %w", n, err)
	}
	if unreachable(errs[len(errs)-1]) {
		s.setDown(last, err)
	}
	return meta{}, err
}

// remoteDC is the datacenter r names when it is not the store's own (a service
// "web@dc2" read through a store of another datacenter), else "".
func (s *Store) remoteDC(r request) string {
	if dc := r.query.Get("dc"); dc != "" && dc != s.dc {
		return dc
	}
	return ""
}

// once runs a one-shot read, retrying with backoff while no agent answers, until ctx ends;
// then it fails with the last cause and ctx's error. A refusal (4xx) fails at once.
func (s *Store) once(ctx context.Context, fn func(context.Context) error) error {
	bo := newBackoff()
	var lastErr error
	for {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			// The attempt ctx cut short says only "deadline exceeded"; the one before
			// it says why we were still trying.
			if lastErr == nil || !errors.Is(err, ctx.Err()) {
				return err
			}
			return fmt.Errorf("%w; gave up: %w", lastErr, ctx.Err())
		}
		if !retryable(err) {
			return err
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w; gave up: %w", lastErr, ctx.Err())
		case <-s.closeCtx.Done():
			return fmt.Errorf("%w: %w", errClosed, lastErr)
		case <-time.After(retryDelay(&bo, err)):
		}
	}
}

// newBackoff returns the delay of every retry here: from 250 ms doubling to 5 s,
// jittered so that many watches failing together do not retry in step.
func newBackoff() backends.Backoff {
	return backends.Backoff{Min: 250 * time.Millisecond, Max: 5 * time.Second}
}

// refusedRetry is the longest wait before trying again an agent that refused the
// connection.
const refusedRetry = time.Second

// retryDelay is how long to wait before retrying after err: bo's next delay, but at most
// refusedRetry when an agent refused the connection. Trying a port nothing listens on
// costs the agent nothing, and an agent that restarts (down for a second or two, often
// several times in a row while it is being fixed) is read again within a second of coming
// back, not after a delay grown to 5 s through the failed tries. A failure without a
// refused connection (agents answering with errors, or hanging) gets the full backoff.
func retryDelay(bo *backends.Backoff, err error) time.Duration {
	d := bo.Next()
	if errors.Is(err, syscall.ECONNREFUSED) {
		return min(d, refusedRetry)
	}
	return d
}

// blocking adds a blocking query's parameters. Index 0 means a plain read.
func (s *Store) blocking(q url.Values, index uint64) url.Values {
	if q == nil {
		q = url.Values{}
	}
	if index > 0 {
		q.Set("index", strconv.FormatUint(index, 10))
		q.Set("wait", strconv.FormatInt(s.wait.Milliseconds(), 10)+"ms")
	}
	return q
}

// blockTimeout bounds one blocking query: Consul answers by wait plus up to wait/16 of
// jitter it adds itself; past that (and a margin for the answer), the agent is hung.
func (s *Store) blockTimeout(index uint64) time.Duration {
	if index == 0 {
		return s.attempt
	}
	return s.wait + s.wait/16 + s.attempt
}
