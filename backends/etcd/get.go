package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/heraldhq/herald/backends"
)

// maxTxnOps is etcd's default --max-txn-ops. Reads of many prefixes are batched into
// transactions of at most this many ranges, all at the revision of the first.
const maxTxnOps = 128

// maxReadAttempts bounds re-reads when a compaction overtakes a multi-transaction read.
const maxReadAttempts = 3

// span is the part of the key space one prefix covers, on path boundaries: the key
// itself and the range [p/, p0) ('0' follows '/'), so "/app" never reads "/apple".
type span struct {
	prefix string // clean
	self   bool   // the prefix's own key too, not only what lies below it
}

func (s span) ops(rev int64) []clientv3.Op {
	var opts []clientv3.OpOption
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	if s.prefix == "/" {
		return []clientv3.Op{clientv3.OpGet("/", append(opts, clientv3.WithRange("0"))...)}
	}
	below := clientv3.OpGet(s.prefix+"/", append(opts, clientv3.WithRange(s.prefix+"0"))...)
	if !s.self {
		return []clientv3.Op{below}
	}
	return []clientv3.Op{clientv3.OpGet(s.prefix, opts...), below}
}

// watchRange is the one range a watch of the span follows. With self it is
// [p, p0), which also holds keys like "/app-x" ('-' < '/'); contains filters them.
func (s span) watchRange() (key, end string) {
	switch {
	case s.prefix == "/":
		return "/", "0"
	case s.self:
		return s.prefix, s.prefix + "0"
	default:
		return s.prefix + "/", s.prefix + "0"
	}
}

// contains reports whether an event's key belongs to the span.
func (s span) contains(key string) bool {
	if s.prefix == "/" {
		return strings.HasPrefix(key, "/")
	}
	if !backends.UnderPrefix(key, s.prefix) {
		return false
	}
	return s.self || key != s.prefix
}

// prefixSpans turns prefixes into spans, dropping those covered by another.
func (s *Store) prefixSpans(prefixes []string) []span {
	ps := backends.MinimalPrefixes(prefixes)
	spans := make([]span, len(ps))
	for i, p := range ps {
		spans[i] = span{prefix: p, self: p != "/" && !s.isSubtreeOnly(p)}
	}
	return spans
}

// Get returns every key under the prefixes, read at one revision.
func (s *Store) Get(ctx context.Context, prefixes []string) (map[string]string, uint64, error) {
	spans := s.prefixSpans(prefixes)
	if len(spans) == 0 {
		return map[string]string{}, 0, nil
	}
	kvs, rev, err := s.read(ctx, spans, 0)
	if err != nil {
		return nil, 0, s.fail("get "+spanNames(spans), err)
	}
	s.hintEmpty(spans, kvs)
	return kvs, uint64(rev), nil
}

// hintEmpty logs, once per prefix, that a prefix holds nothing in the v3 keyspace: data
// written through etcd's v2 API (node-etcd, python-etcd, registrator's etcd backend) is
// a separate keyspace a v3 client never sees, and otherwise looks like no data at all.
func (s *Store) hintEmpty(spans []span, kvs map[string]string) {
	for _, sp := range spans {
		empty := true
		for k := range kvs {
			if backends.UnderPrefix(k, sp.prefix) {
				empty = false
				break
			}
		}
		s.mu.Lock()
		first := empty && !s.emptyHinted[sp.prefix]
		if first {
			s.emptyHinted[sp.prefix] = true
		}
		s.mu.Unlock()
		if first {
			s.log.Info("no keys under this prefix in etcd's v3 keyspace; herald reads v3 only, so keys written with the v2 API (node-etcd, python-etcd, registrator's etcd backend, etcdctl with ETCDCTL_API=2) are invisible to it",
				"prefix", sp.prefix)
		}
	}
}

func spanNames(spans []span) string {
	names := make([]string, len(spans))
	for i, sp := range spans {
		names[i] = sp.prefix
	}
	return strings.Join(names, ", ")
}

// read returns the keys of all spans at revision rev (0: the current one), and that
// revision. A read that takes several transactions pins them all to the first one's
// revision; if a compaction overtakes it, it starts again at a fresh revision (only
// when rev was 0: a caller that asked for rev gets ErrCompacted).
func (s *Store) read(ctx context.Context, spans []span, rev int64) (map[string]string, int64, error) {
	cli, err := s.client(ctx)
	if err != nil {
		return nil, 0, err
	}
	deniedOnce := false
	for attempt := 1; ; attempt++ {
		kvs, got, err := readOnce(ctx, cli, spans, rev)
		switch {
		case err == nil:
			s.rpcOK()
			return kvs, got, nil
		case errors.Is(err, rpctypes.ErrPermissionDenied) && !deniedOnce && hasSelf(spans):
			deniedOnce = true
			if spans, err = s.dropDeniedSelf(ctx, cli, spans); err != nil {
				return nil, 0, err
			}
		case errors.Is(err, rpctypes.ErrCompacted) && rev == 0 && attempt < maxReadAttempts:
		default:
			return nil, 0, err
		}
	}
}

func readOnce(ctx context.Context, cli *clientv3.Client, spans []span, rev int64) (map[string]string, int64, error) {
	kvs := make(map[string]string)
	for _, batch := range batchSpans(spans) {
		var ops []clientv3.Op
		for _, sp := range batch {
			// After the first transaction rev is set: the rest read at its revision.
			ops = append(ops, sp.ops(rev)...)
		}
		resp, err := cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, r := range resp.Responses {
			for _, kv := range r.GetResponseRange().GetKvs() {
				kvs[string(kv.Key)] = string(kv.Value)
			}
		}
	}
	return kvs, rev, nil
}

// batchSpans groups spans into transactions of at most maxTxnOps ranges.
func batchSpans(spans []span) [][]span {
	var (
		out [][]span
		cur []span
		n   int
	)
	for _, sp := range spans {
		k := len(sp.ops(0))
		if n+k > maxTxnOps {
			out = append(out, cur)
			cur, n = nil, 0
		}
		cur = append(cur, sp)
		n += k
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

func hasSelf(spans []span) bool {
	for _, sp := range spans {
		if sp.self {
			return true
		}
	}
	return false
}

// dropDeniedSelf asks, for each prefix whose own key was part of a denied read,
// whether that key alone is readable; those that are not are read without it from
// now on.
func (s *Store) dropDeniedSelf(ctx context.Context, cli *clientv3.Client, spans []span) ([]span, error) {
	out := make([]span, len(spans))
	for i, sp := range spans {
		out[i] = sp
		if !sp.self {
			continue
		}
		_, err := cli.Get(ctx, sp.prefix, clientv3.WithCountOnly())
		switch {
		case errors.Is(err, rpctypes.ErrPermissionDenied):
			s.setSubtreeOnly(sp.prefix)
			out[i].self = false
		case err != nil:
			return nil, err
		}
	}
	return out, nil
}

// Services returns the instances of one service at the services layout, filtered and
// sorted. A datacenter is the layout's {dc} level; a query naming one fails when the
// layout has none.
func (s *Store) Services(ctx context.Context, q backends.ServiceQuery) ([]backends.Service, uint64, error) {
	if err := s.layout.CheckQuery(q); err != nil {
		return nil, 0, fmt.Errorf("%s: %w", s.name, err)
	}
	sp, err := s.serviceSpan(q.Name)
	if err != nil {
		return nil, 0, err
	}
	kvs, rev, err := s.read(ctx, []span{sp}, 0)
	if err != nil {
		return nil, 0, s.fail("services "+sp.prefix, err)
	}
	s.hintEmpty([]span{sp}, kvs)
	return s.filterServices(q, kvs, s.log), uint64(rev), nil
}

// ServiceNames lists the services under the services root.
func (s *Store) ServiceNames(ctx context.Context) ([]backends.ServiceSummary, uint64, error) {
	sp := span{prefix: s.layout.Root()}
	kvs, rev, err := s.read(ctx, []span{sp}, 0)
	if err != nil {
		return nil, 0, s.fail("service names under "+sp.prefix, err)
	}
	s.hintEmpty([]span{sp}, kvs)
	return s.summaries(kvs, s.log), uint64(rev), nil
}

func (s *Store) serviceSpan(name string) (span, error) {
	p, err := s.layout.ServicePrefix(name)
	if err != nil {
		return span{}, fmt.Errorf("%s: %w", s.name, err)
	}
	return span{prefix: p}, nil
}

func (s *Store) filterServices(q backends.ServiceQuery, kvs map[string]string, log *slog.Logger) []backends.Service {
	all := s.layout.ServicesUnder(s.cfg, kvs, log)[q.Name]
	out := make([]backends.Service, 0, len(all))
	for _, svc := range all {
		if !s.layout.Selects(q, svc) {
			continue
		}
		svc.Backend = "etcd"
		out = append(out, svc)
	}
	backends.SortServices(out)
	return out
}

func (s *Store) summaries(kvs map[string]string, log *slog.Logger) []backends.ServiceSummary {
	return summariesOf(s.layout.ServicesUnder(s.cfg, kvs, log))
}

// summariesOf is the catalog of instances grouped by name: never nil, so that an empty
// registry reads as loaded.
func summariesOf(byName map[string][]backends.Service) []backends.ServiceSummary {
	names := backends.ServiceSummaries(byName)
	if names == nil {
		names = []backends.ServiceSummary{}
	}
	return names
}

// quietRepeats passes each distinct record once. A service watch recomputes its list
// on every change under the service's prefix and would otherwise warn about the same
// malformed instance each time.
type quietRepeats struct {
	slog.Handler
	mu   *sync.Mutex
	seen map[string]struct{}
}

// maxQuietRecords bounds the memory; past it the set starts over (and repeats once).
const maxQuietRecords = 1024

func newQuietRepeats(h slog.Handler) *quietRepeats {
	return &quietRepeats{Handler: h, mu: new(sync.Mutex), seen: make(map[string]struct{})}
}

func (h *quietRepeats) Handle(ctx context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String())
	b.WriteByte(' ')
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteByte(' ')
		b.WriteString(a.String())
		return true
	})
	k := b.String()
	h.mu.Lock()
	_, dup := h.seen[k]
	if !dup {
		if len(h.seen) >= maxQuietRecords {
			clear(h.seen)
		}
		h.seen[k] = struct{}{}
	}
	h.mu.Unlock()
	if dup {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h *quietRepeats) WithAttrs(as []slog.Attr) slog.Handler {
	return &quietRepeats{Handler: h.Handler.WithAttrs(as), mu: h.mu, seen: h.seen}
}

func (h *quietRepeats) WithGroup(name string) slog.Handler {
	return &quietRepeats{Handler: h.Handler.WithGroup(name), mu: h.mu, seen: h.seen}
}
