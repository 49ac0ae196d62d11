package integration

// Tests of the etcd backend against real etcd servers (Debian's etcd 3.4, started by
// the harness). Helpers here are prefixed with "etcd".

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"go.uber.org/zap"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/backends/etcd"
	"github.com/heraldhq/herald/integration/harness"
)

// ---------------------------------------------------------------------------
// helpers

func etcdCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// etcdHosts strips the scheme from harness client URLs.
func etcdHosts(endpoints []string) []string {
	hosts := make([]string, len(endpoints))
	for i, ep := range endpoints {
		_, h, _ := strings.Cut(ep, "://")
		hosts[i] = h
	}
	return hosts
}

// etcdLogs collects a store's log lines, to check warnings and that no secret shows.
type etcdLogs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *etcdLogs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *etcdLogs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// etcdOpen opens the backend on hosts with a "etcd://" or "etcds://" URL, logging at
// debug level into the returned etcdLogs; it is closed at the end of the test.
func etcdOpen(t testing.TB, scheme string, hosts []string, mod func(*backends.Config)) (*etcd.Store, *etcdLogs) {
	t.Helper()
	ep, err := backends.ParseURL(scheme + "://" + strings.Join(hosts, ","))
	if err != nil {
		t.Fatal(err)
	}
	logs := &etcdLogs{}
	cfg := backends.Config{
		DialTimeout: 2 * time.Second,
		Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := etcd.New(cfg, ep)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, logs
}

func etcdOpenCluster(t testing.TB, e *harness.Etcd, mod func(*backends.Config)) (*etcd.Store, *etcdLogs) {
	t.Helper()
	scheme := "etcd"
	if e.Certs != nil {
		scheme = "etcds"
		inner := mod
		mod = func(c *backends.Config) {
			c.TLS = e.TLS(t)
			if inner != nil {
				inner(c)
			}
		}
	}
	return etcdOpen(t, scheme, etcdHosts(e.Endpoints), mod)
}

// etcdWatch runs Store.Watch in the background.
type etcdWatch struct {
	ch     chan backends.Event
	cancel context.CancelFunc
	done   chan error
}

func etcdStartWatch(t testing.TB, s *etcd.Store, tgt backends.Target, from uint64, buf int) *etcdWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &etcdWatch{ch: make(chan backends.Event, buf), cancel: cancel, done: make(chan error, 1)}
	go func() { w.done <- s.Watch(ctx, tgt, from, w.ch) }()
	t.Cleanup(func() { w.stop(t) })
	return w
}

// stop ends the watch and returns Watch's result (context.Canceled when all is well).
func (w *etcdWatch) stop(t testing.TB) error {
	t.Helper()
	w.cancel()
	select {
	case err := <-w.done:
		w.done <- err // later calls see it too
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return within 5s of its context ending")
		return nil
	}
}

// next returns the next event, failing after d.
func (w *etcdWatch) next(t testing.TB, d time.Duration) backends.Event {
	t.Helper()
	select {
	case ev := <-w.ch:
		return ev
	case err := <-w.done:
		t.Fatalf("Watch returned early: %v", err)
	case <-time.After(d):
		t.Fatalf("no watch event within %v", d)
	}
	return backends.Event{}
}

// none checks that no event arrives within d.
func (w *etcdWatch) none(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case ev := <-w.ch:
		t.Fatalf("unexpected event %+v", ev)
	case <-time.After(d):
	}
}

// etcdView is what a cache holding one prefix target makes of the events.
type etcdView map[string]string

func (v etcdView) apply(ev backends.Event) {
	if ev.Full {
		clear(v)
	}
	maps.Copy(v, ev.KVs)
	for _, k := range ev.Deleted {
		delete(v, k)
	}
}

// etcdHistory replays etcd's own history of a prefix: the state after each revision
// that touched it, from revision from (whose prior state is base) up to to.
type etcdHistory struct {
	revs   []int64
	states []etcdView
}

func etcdReadHistory(t testing.TB, c *clientv3.Client, prefix string, base etcdView, from, to int64) *etcdHistory {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := &etcdHistory{revs: []int64{from - 1}, states: []etcdView{maps.Clone(base)}}
	cur := maps.Clone(base)
	if from > to {
		return h
	}
	wch := c.Watch(ctx, prefix, clientv3.WithRange(prefix+"0"), clientv3.WithRev(from))
	for resp := range wch {
		if err := resp.Err(); err != nil {
			t.Fatalf("history watch: %v", err)
		}
		for _, e := range resp.Events {
			k := string(e.Kv.Key)
			if !backends.UnderPrefix(k, prefix) {
				continue
			}
			rev := e.Kv.ModRevision
			if rev != h.revs[len(h.revs)-1] {
				h.revs = append(h.revs, rev)
				h.states = append(h.states, nil)
			}
			if e.Type == mvccpb.DELETE {
				delete(cur, k)
			} else {
				cur[k] = string(e.Kv.Value)
			}
			h.states[len(h.states)-1] = maps.Clone(cur)
		}
		if n := len(resp.Events); n > 0 && resp.Events[n-1].Kv.ModRevision >= to {
			return h
		}
	}
	t.Fatalf("history watch ended before revision %d: %v", to, ctx.Err())
	return nil
}

// at returns the state of the prefix as of revision rev.
func (h *etcdHistory) at(rev int64) etcdView {
	i := sort.Search(len(h.revs), func(i int) bool { return h.revs[i] > rev }) - 1
	if i < 0 {
		return nil
	}
	return h.states[i]
}

// etcdClientFor is a plain clientv3 client for some of a cluster's endpoints.
func etcdClientFor(t testing.TB, e *harness.Etcd, endpoints ...string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, TLS: e.TLS(t), Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("client for %v: %v", endpoints, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func etcdGetPrefix(t testing.TB, c *clientv3.Client, prefix string) (etcdView, int64) {
	t.Helper()
	resp, err := c.Get(etcdCtx(t, 10*time.Second), prefix, clientv3.WithRange(prefix+"0"))
	if err != nil {
		t.Fatalf("get %s: %v", prefix, err)
	}
	v := etcdView{}
	for _, kv := range resp.Kvs {
		if backends.UnderPrefix(string(kv.Key), prefix) {
			v[string(kv.Key)] = string(kv.Value)
		}
	}
	return v, resp.Header.Revision
}

func etcdPut(t testing.TB, c *clientv3.Client, kv ...string) int64 {
	t.Helper()
	var ops []clientv3.Op
	for i := 0; i+1 < len(kv); i += 2 {
		ops = append(ops, clientv3.OpPut(kv[i], kv[i+1]))
	}
	resp, err := c.Txn(etcdCtx(t, 10*time.Second)).Then(ops...).Commit()
	if err != nil {
		t.Fatalf("put %v: %v", kv, err)
	}
	return resp.Header.Revision
}

// etcdRetry runs op until it succeeds, within 30 s: a writer riding through elections
// and restarts. A write whose answer was lost may be applied twice; that is a real
// state too.
func etcdRetry(t testing.TB, what string, op func(ctx context.Context) error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := op(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// etcdCheckStream applies events to a view and checks, for each, that the view equals
// etcd's real state at the event's revision, and that incremental revisions only grow.
func etcdCheckStream(t testing.TB, events []backends.Event, h *etcdHistory, start etcdView) etcdView {
	t.Helper()
	view := maps.Clone(start)
	var last uint64
	for i, ev := range events {
		if !ev.Full && ev.Revision <= last {
			t.Fatalf("event %d: revision %d after %d: an update applied twice or out of order", i, ev.Revision, last)
		}
		last = ev.Revision
		view.apply(ev)
		want := h.at(int64(ev.Revision))
		if !maps.Equal(view, want) {
			t.Fatalf("event %d (revision %d, full=%v): cache holds %v, but etcd's state at that revision was %v", i, ev.Revision, ev.Full, view, want)
		}
	}
	return view
}

// ---------------------------------------------------------------------------
// reads

func TestEtcdGetRespectsPathBoundaries(t *testing.T) {
	t.Parallel()
	e := harness.StartEtcd(t)
	c := e.Client(t)
	rev := etcdPut(t, c,
		"/app", "root", "/app/a", "1", "/app/b/c", "2", "/app/", "slash",
		"/apple", "no", "/app-x", "no", "/app.x", "no", "/ap", "no", "app/rel", "no",
		"/db/host", "h")
	s, _ := etcdOpenCluster(t, e, nil)
	ctx := etcdCtx(t, 10*time.Second)

	appKeys := map[string]string{"/app": "root", "/app/a": "1", "/app/b/c": "2", "/app/": "slash"}
	cases := []struct {
		prefixes []string
		want     map[string]string
	}{
		{[]string{"/app"}, appKeys},
		{[]string{"/app/"}, appKeys}, // cleaned to /app
		{[]string{"app"}, appKeys},
		{[]string{"/app/b"}, map[string]string{"/app/b/c": "2"}},
		{[]string{"/app/b", "/app", "/db"}, map[string]string{"/app": "root", "/app/a": "1", "/app/b/c": "2", "/app/": "slash", "/db/host": "h"}},
		{[]string{"/apple"}, map[string]string{"/apple": "no"}},
		{[]string{"/nothing"}, map[string]string{}},
		{[]string{"/app/a"}, map[string]string{"/app/a": "1"}},
		{[]string{"/"}, map[string]string{"/app": "root", "/app/a": "1", "/app/b/c": "2", "/app/": "slash",
			"/apple": "no", "/app-x": "no", "/app.x": "no", "/ap": "no", "/db/host": "h"}},
	}
	for _, tc := range cases {
		got, gotRev, err := s.Get(ctx, tc.prefixes)
		if err != nil {
			t.Fatalf("Get(%v): %v", tc.prefixes, err)
		}
		if !maps.Equal(got, tc.want) {
			t.Errorf("Get(%v) = %v, want %v", tc.prefixes, got, tc.want)
		}
		if gotRev != uint64(rev) {
			t.Errorf("Get(%v): revision %d, want %d", tc.prefixes, gotRev, rev)
		}
	}
	if st := s.State(); st.Conn != backends.Up || st.Err != nil {
		t.Errorf("state after reads: %+v", st)
	}

	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := s.Get(cctx, []string{"/app"}); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "/app") {
		t.Errorf("Get with a cancelled context: %v", err)
	}
}

// A read of more prefixes than one transaction may hold (2 ranges each, 128 per txn)
// still sees one revision: a writer changes all of them in one transaction, and no
// read may mix two of its generations.
func TestEtcdGetManyPrefixesIsOneSnapshot(t *testing.T) {
	t.Parallel()
	e := harness.StartEtcd(t)
	c := e.Client(t)
	const n = 100
	keys := make([]string, n)
	prefixes := make([]string, n)
	for i := range n {
		prefixes[i] = fmt.Sprintf("/snap/p%03d", i)
		keys[i] = prefixes[i] + "/v"
	}
	write := func(gen int) int64 {
		ops := make([]clientv3.Op, n)
		for i, k := range keys {
			ops[i] = clientv3.OpPut(k, strconv.Itoa(gen))
		}
		resp, err := c.Txn(etcdCtx(t, 10*time.Second)).Then(ops...).Commit()
		if err != nil {
			t.Errorf("write generation %d: %v", gen, err)
			return 0
		}
		return resp.Header.Revision
	}
	write(0)
	s, _ := etcdOpenCluster(t, e, nil)

	revOf := sync.Map{} // revision -> generation
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for gen := 1; ; gen++ {
			select {
			case <-stop:
				return
			default:
			}
			if rev := write(gen); rev > 0 {
				revOf.Store(rev, gen)
			}
		}
	}()
	ctx := etcdCtx(t, 60*time.Second)
	mixed := 0
	for range 40 {
		kvs, rev, err := s.Get(ctx, prefixes)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if len(kvs) != n {
			t.Fatalf("Get returned %d keys, want %d", len(kvs), n)
		}
		gens := map[string]bool{}
		for _, v := range kvs {
			gens[v] = true
		}
		if len(gens) != 1 {
			mixed++
			t.Errorf("one Get at revision %d saw %d generations", rev, len(gens))
		}
		if g, ok := revOf.Load(int64(rev)); ok && !gens[strconv.Itoa(g.(int))] {
			t.Errorf("Get at revision %d returned generation %v, but that revision wrote %d", rev, gens, g)
		}
	}
	close(stop)
	wg.Wait()
}

// ---------------------------------------------------------------------------
// watches

func TestEtcdWatchPrefix(t *testing.T) {
	t.Parallel()
	e := harness.StartEtcd(t)
	c := e.Client(t)
	etcdPut(t, c, "/app/a", "1", "/apple", "no")

	owned := goroutineScope(t)
	s, err := etcd.New(backends.Config{}, backends.Endpoint{Scheme: "etcd", Hosts: etcdHosts(e.Endpoints)})
	if err != nil {
		t.Fatal(err)
	}
	tgt := backends.PrefixTarget("/app")
	w := etcdStartWatch(t, s, tgt, 0, 0)

	// From 0: the current state first, as a Full event.
	ev := w.next(t, 10*time.Second)
	if !ev.Full || !maps.Equal(ev.KVs, map[string]string{"/app/a": "1"}) || ev.Target.ID() != tgt.ID() {
		t.Fatalf("first event %+v, want Full {/app/a:1}", ev)
	}
	start := ev.Revision

	// Changes outside the prefix (but inside the raw watch range) are never sent.
	etcdPut(t, c, "/apple", "x", "/app-x", "x", "/app.x", "x", "/ap", "x", "/app", "root")
	ev = w.next(t, 5*time.Second)
	if ev.Full || !maps.Equal(ev.KVs, map[string]string{"/app": "root"}) || len(ev.Deleted) != 0 {
		t.Fatalf("event %+v, want only /app", ev)
	}
	rev := etcdPut(t, c, "/app/b", "2", "/app/c", "3") // one transaction, one event
	ev = w.next(t, 5*time.Second)
	if ev.Revision != uint64(rev) || !maps.Equal(ev.KVs, map[string]string{"/app/b": "2", "/app/c": "3"}) {
		t.Fatalf("event %+v, want /app/b and /app/c at %d", ev, rev)
	}
	if _, err := c.Delete(etcdCtx(t, 5*time.Second), "/app/a"); err != nil {
		t.Fatal(err)
	}
	ev = w.next(t, 5*time.Second)
	if len(ev.KVs) != 0 || !slices.Equal(ev.Deleted, []string{"/app/a"}) {
		t.Fatalf("event %+v, want /app/a deleted", ev)
	}
	if _, err := c.Delete(etcdCtx(t, 5*time.Second), "/app/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	ev = w.next(t, 5*time.Second)
	if !slices.Equal(ev.Deleted, []string{"/app/b", "/app/c"}) {
		t.Fatalf("event %+v, want /app/b and /app/c deleted", ev)
	}
	w.none(t, 300*time.Millisecond)

	// A second watch from the first one's start revision replays the same history
	// (etcd hands it over in one batch: one event, the state at its last revision).
	w2 := etcdStartWatch(t, s, tgt, start, 10)
	etcdCollect(t, w2, etcdView{"/app/a": "1"}, etcdView{"/app": "root"}, 5*time.Second)
	w2.none(t, 300*time.Millisecond)

	if err := w.stop(t); !errors.Is(err, context.Canceled) {
		t.Errorf("Watch returned %v, want context.Canceled", err)
	}
	if err := w2.stop(t); !errors.Is(err, context.Canceled) {
		t.Errorf("second Watch returned %v, want context.Canceled", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	waitGoroutines(t, owned, 1, "after Close")
}

// etcdChurn writes n transactions to keys under prefix, each setting /a and /b to i and
// deleting or re-creating /odd, so every state is recognisable; after write k
// (1-based), it calls at(k).
func etcdChurn(t testing.TB, c *clientv3.Client, prefix string, n int, at func(k int)) {
	t.Helper()
	for i := 1; i <= n; i++ {
		v := strconv.Itoa(i)
		ops := []clientv3.Op{clientv3.OpPut(prefix+"/a", v), clientv3.OpPut(prefix+"/b", v)}
		if i%2 == 1 {
			ops = append(ops, clientv3.OpPut(prefix+"/odd", v))
		} else {
			ops = append(ops, clientv3.OpDelete(prefix+"/odd"))
		}
		etcdRetry(t, "write "+v, func(ctx context.Context) error {
			_, err := c.Txn(ctx).Then(ops...).Commit()
			return err
		})
		if at != nil {
			at(i)
		}
	}
}

// etcdCollect gathers events until the view reaches want or d passes.
func etcdCollect(t testing.TB, w *etcdWatch, view etcdView, want etcdView, d time.Duration) []backends.Event {
	t.Helper()
	var evs []backends.Event
	v := maps.Clone(view)
	deadline := time.After(d)
	for !maps.Equal(v, want) {
		select {
		case ev := <-w.ch:
			evs = append(evs, ev)
			v.apply(ev)
		case err := <-w.done:
			t.Fatalf("Watch returned: %v", err)
		case <-deadline:
			t.Fatalf("after %d events the cache holds %v, want %v", len(evs), v, want)
		}
	}
	return evs
}

// A single member restarting mid-stream: the watch resumes after the last revision it
// saw, every state the cache passes through is one etcd really had, and nothing is
// applied twice.
func TestEtcdWatchResumesAfterRestart(t *testing.T) {
	t.Parallel()
	e := harness.StartEtcd(t)
	c := e.Client(t)
	const prefix = "/restart"
	base, rev0 := etcdGetPrefix(t, c, prefix)
	s, logs := etcdOpenCluster(t, e, nil)
	w := etcdStartWatch(t, s, backends.PrefixTarget(prefix), uint64(rev0), 10000)

	const n = 300
	etcdChurn(t, c, prefix, n, func(k int) {
		if k == 100 {
			e.Members[0].Restart(t)
		}
	})
	final, last := etcdGetPrefix(t, c, prefix)
	evs := etcdCollect(t, w, base, final, 20*time.Second)
	h := etcdReadHistory(t, c, prefix, base, rev0+1, last)
	etcdCheckStream(t, evs, h, base)
	if !strings.Contains(logs.String(), "etcd") {
		t.Logf("logs:\n%s", logs)
	}
	t.Logf("%d writes, %d events; state %v", n, len(evs), final)
}

// etcdWatchStreams reads how many watch streams a member serves, from its /metrics.
func etcdWatchStreams(t testing.TB, endpoint string) int {
	t.Helper()
	resp, err := http.Get(endpoint + "/metrics")
	if err != nil {
		t.Fatalf("metrics of %s: %v", endpoint, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "etcd_debugging_mvcc_watch_stream_total "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int(n)
		}
	}
	t.Fatalf("metrics of %s: no etcd_debugging_mvcc_watch_stream_total", endpoint)
	return 0
}

func etcdMemberID(t testing.TB, c *clientv3.Client, endpoint string) uint64 {
	t.Helper()
	st, err := c.Status(etcdCtx(t, 5*time.Second), endpoint)
	if err != nil {
		t.Fatalf("status %s: %v", endpoint, err)
	}
	return st.Header.MemberId
}

// The scenario: a 3-member cluster, 1,000 updates, and the leader, which serves
// our watch, killed in the middle. The watch fails over to another member and resumes
// exactly; the final state is the final value; every intermediate state was real.
func TestEtcdClusterKillLeaderMidStream(t *testing.T) {
	t.Parallel()
	e := harness.StartEtcdCluster(t, 3)
	c := e.Client(t)
	const prefix = "/kill"
	base, rev0 := etcdGetPrefix(t, c, prefix)
	s, logs := etcdOpenCluster(t, e, nil)
	w := etcdStartWatch(t, s, backends.PrefixTarget(prefix), uint64(rev0), 10000)

	// Find the member that serves our watch stream (the only one in the cluster) and
	// make it the leader, so that killing the leader cuts our watch.
	var served int
	deadline := time.Now().Add(10 * time.Second)
	for served = -1; served < 0; {
		for i, ep := range e.Endpoints {
			if etcdWatchStreams(t, ep) > 0 {
				served = i
			}
		}
		if served < 0 && time.Now().After(deadline) {
			t.Fatal("no member reports our watch stream")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if leader := e.Leader(t); leader != served {
		lc := etcdClientFor(t, e, e.Endpoints[leader])
		if _, err := lc.MoveLeader(etcdCtx(t, 10*time.Second), etcdMemberID(t, c, e.Endpoints[served])); err != nil {
			t.Fatalf("move leader to m%d: %v", served, err)
		}
	}
	if leader := e.Leader(t); leader != served {
		t.Fatalf("leader is m%d, want m%d", leader, served)
	}
	t.Logf("watch served by the leader m%d", served)

	const n = 1000
	var survivors []string
	etcdChurn(t, c, prefix, n, func(k int) {
		if k == 300 {
			e.Members[served].Kill(t)
			for i, ep := range e.Endpoints {
				if i != served {
					survivors = append(survivors, ep)
				}
			}
		}
	})
	sc := etcdClientFor(t, e, survivors...)
	final, last := etcdGetPrefix(t, sc, prefix)
	if final[prefix+"/a"] != strconv.Itoa(n) {
		t.Fatalf("etcd holds %v after %d writes", final, n)
	}
	evs := etcdCollect(t, w, base, final, 30*time.Second)
	h := etcdReadHistory(t, sc, prefix, base, rev0+1, last)
	etcdCheckStream(t, evs, h, base)
	moved := 0
	for _, ep := range survivors {
		moved += etcdWatchStreams(t, ep)
	}
	if moved == 0 {
		t.Error("no surviving member serves the watch")
	}
	t.Logf("%d writes, %d events, final %v; log:\n%s", n, len(evs), final, logs)
}

// A member that loses its quorum keeps its TCP connections: only WithRequireLeader
// makes the watch notice. The state goes down saying why, and when the quorum is back
// the watch resumes without losing an update.
func TestEtcdWatchNoticesLostQuorum(t *testing.T) {
	t.Parallel()
	e := harness.StartEtcdCluster(t, 3)
	c := e.Client(t)
	hosts := etcdHosts(e.Endpoints)
	s, logs := etcdOpen(t, "etcd", hosts[:1], nil)
	w := etcdStartWatch(t, s, backends.PrefixTarget("/q"), 0, 100)
	view := etcdView{}
	view.apply(w.next(t, 10*time.Second))
	etcdPut(t, c, "/q/k", "1")
	view.apply(w.next(t, 5*time.Second))

	e.Members[1].Pause(t)
	e.Members[2].Pause(t)
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := s.State()
		if st.Conn == backends.Down && st.Err != nil && strings.Contains(st.Err.Error(), "leader") {
			t.Logf("state without quorum: %v: %v", st.Conn, st.Err)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("state %+v 15s after the member lost its quorum; want down, no leader", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if l := logs.String(); !strings.Contains(l, "watch interrupted") || !strings.Contains(l, "no leader") {
		t.Errorf("no warning that the watch lost its leader:\n%s", l)
	}
	e.Members[1].Resume(t)
	e.Members[2].Resume(t)
	etcdRetry(t, "write after quorum is back", func(ctx context.Context) error {
		_, err := c.Put(ctx, "/q/k", "2")
		return err
	})
	etcdCollect(t, w, view, etcdView{"/q/k": "2"}, 20*time.Second)
	deadline = time.Now().Add(10 * time.Second)
	for s.State().Conn != backends.Up {
		if time.Now().After(deadline) {
			t.Fatalf("state %+v after the quorum came back", s.State())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// compaction

// A watch asked to start at a revision that compaction removed re-reads and sends the
// current state as one Full event, then follows changes.
func TestEtcdWatchFromCompactedRevisionSendsFull(t *testing.T) {
	t.Parallel()
	e := harness.StartEtcd(t)
	c := e.Client(t)
	old := etcdPut(t, c, "/cmp/a", "1", "/cmp/gone", "1")
	etcdPut(t, c, "/cmp/a", "2")
	if _, err := c.Delete(etcdCtx(t, 5*time.Second), "/cmp/gone"); err != nil {
		t.Fatal(err)
	}
	now := etcdPut(t, c, "/cmp/b", "1")
	if _, err := c.Compact(etcdCtx(t, 5*time.Second), now); err != nil {
		t.Fatal(err)
	}
	s, logs := etcdOpenCluster(t, e, nil)
	w := etcdStartWatch(t, s, backends.PrefixTarget("/cmp"), uint64(old), 0)
	ev := w.next(t, 10*time.Second)
	if !ev.Full || ev.Revision < uint64(now) || !maps.Equal(ev.KVs, map[string]string{"/cmp/a": "2", "/cmp/b": "1"}) {
		t.Fatalf("first event %+v, want Full {a:2 b:1} at >= %d", ev, now)
	}
	etcdPut(t, c, "/cmp/c", "1")
	ev = w.next(t, 5*time.Second)
	if ev.Full || !maps.Equal(ev.KVs, map[string]string{"/cmp/c": "1"}) {
		t.Fatalf("event after resync %+v", ev)
	}
	if !strings.Contains(logs.String(), "compacted") {
		t.Errorf("no log line says the history was compacted:\n%s", logs)
	}
}

// A watch that falls behind during an outage (the network between herald and etcd is
// cut; etcd keeps changing and compacts its history) comes back with one Full event
// holding the current state, including the deletions it missed.
func TestEtcdWatchBehindCompactionAfterOutage(t *testing.T) {
	t.Parallel()
	e := harness.StartEtcd(t)
	c := e.Client(t)
	etcdPut(t, c, "/out/a", "1", "/out/del", "1")
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	px := harness.StartProxy(t, addr, etcdHosts(e.Endpoints)[0])
	s, _ := etcdOpen(t, "etcd", []string{addr}, nil)
	w := etcdStartWatch(t, s, backends.PrefixTarget("/out"), 0, 0)
	view := etcdView{}
	view.apply(w.next(t, 10*time.Second))

	px.Cut()
	for i := range 20 {
		etcdPut(t, c, "/out/a", strconv.Itoa(i+2))
	}
	if _, err := c.Delete(etcdCtx(t, 5*time.Second), "/out/del"); err != nil {
		t.Fatal(err)
	}
	rev := etcdPut(t, c, "/out/new", "1")
	if _, err := c.Compact(etcdCtx(t, 5*time.Second), rev); err != nil {
		t.Fatal(err)
	}
	// While cut off, the state says so.
	deadline := time.Now().Add(10 * time.Second)
	for s.State().Conn == backends.Up && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if st := s.State(); st.Conn == backends.Up {
		t.Errorf("state during the outage: %+v", st)
	}
	px.Restore(t)
	ev := w.next(t, 20*time.Second)
	if !ev.Full {
		t.Fatalf("first event after the outage %+v, want Full", ev)
	}
	view.apply(ev)
	if want := (etcdView{"/out/a": "21", "/out/new": "1"}); !maps.Equal(view, want) {
		t.Fatalf("after resync the cache holds %v, want %v", view, want)
	}
	if st := s.State(); st.Conn != backends.Up {
		t.Errorf("state after the outage: %+v", st)
	}
}

// ---------------------------------------------------------------------------
// etcd down at start

func TestEtcdDownAtStartThenUp(t *testing.T) {
	t.Parallel()
	addr := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	s, logs := etcdOpen(t, "etcd", []string{addr}, nil)

	// render: fails after its timeout, naming the endpoint, the key and the cause.
	begin := time.Now()
	_, _, err := s.Get(etcdCtx(t, time.Second), []string{"/app"})
	took := time.Since(begin)
	if err == nil {
		t.Fatal("Get succeeded with etcd down")
	}
	for _, want := range []string{addr, "/app", "connection refused"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if took < 900*time.Millisecond || took > 3*time.Second {
		t.Errorf("Get failed after %v, want about its 1s timeout", took)
	}
	t.Logf("render error: %v", err)

	// watch: waits, says so, and starts when etcd appears.
	w := etcdStartWatch(t, s, backends.PrefixTarget("/app"), 0, 0)
	// The positive event: the warning about the unreachable etcd.
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if l := logs.String(); strings.Contains(l, "level=WARN") && strings.Contains(l, "connection refused") {
			break
		}
	}
	if st := s.State(); st.Conn != backends.Down || st.Endpoint != addr || st.Err == nil {
		t.Errorf("state while down: %+v", st)
	}
	if l := logs.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, "connection refused") {
		t.Errorf("no warning about the unreachable etcd:\n%s", l)
	}

	e := harness.StartEtcd(t)
	c := e.Client(t)
	etcdPut(t, c, "/app/k", "v")
	harness.StartProxy(t, addr, etcdHosts(e.Endpoints)[0])
	ev := w.next(t, 20*time.Second)
	if !ev.Full || !maps.Equal(ev.KVs, map[string]string{"/app/k": "v"}) {
		t.Fatalf("first event %+v, want Full {/app/k: v}", ev)
	}
	etcdPut(t, c, "/app/k", "v2")
	if ev = w.next(t, 5*time.Second); ev.KVs["/app/k"] != "v2" {
		t.Fatalf("event %+v, want /app/k=v2", ev)
	}
	if st := s.State(); st.Conn != backends.Up || st.Endpoint != addr {
		t.Errorf("state when up: %+v", st)
	}
	if !strings.Contains(logs.String(), "etcd connected") {
		t.Errorf("no log line says etcd is back:\n%s", logs)
	}
}

// ---------------------------------------------------------------------------
// rapid changes (confd#629, confd#709: the file must end with the final value)

func TestEtcdRapidChangesEndWithFinalValue(t *testing.T) {
	t.Parallel()
	e := harness.StartEtcd(t)
	c := e.Client(t)
	for _, gap := range []time.Duration{0, 50 * time.Millisecond} {
		prefix := fmt.Sprintf("/rapid%d", gap.Milliseconds())
		s, _ := etcdOpenCluster(t, e, func(cfg *backends.Config) { cfg.MinGap = gap })
		w := etcdStartWatch(t, s, backends.PrefixTarget(prefix), 0, 0)
		view := etcdView{}
		view.apply(w.next(t, 10*time.Second))

		// A slow consumer (5 ms per event) against a fast writer (8 concurrent writers).
		const n = 1000
		var wg sync.WaitGroup
		begin := time.Now()
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := g; i < n; i += 8 {
					if _, err := c.Put(context.Background(), prefix+"/k", strconv.Itoa(i)); err != nil {
						t.Errorf("put: %v", err)
						return
					}
				}
			}()
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		events := 0
		var final etcdView
		var finalRev int64
	loop:
		for {
			select {
			case ev := <-w.ch:
				events++
				view.apply(ev)
				time.Sleep(5 * time.Millisecond)
				if final != nil && maps.Equal(view, final) && ev.Revision == uint64(finalRev) {
					break loop
				}
			case <-done:
				done = nil
				writeTook := time.Since(begin)
				final, finalRev = etcdGetPrefix(t, c, prefix)
				t.Logf("MinGap %v: %d writes in %v (%.0f/s)", gap, n, writeTook, n/writeTook.Seconds())
				if maps.Equal(view, final) {
					break loop
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("MinGap %v: after %d events the cache holds %v, etcd %v", gap, events, view, final)
			}
		}
		t.Logf("MinGap %v: %d events for %d writes; final %v", gap, events, n, view)
		w.none(t, 200*time.Millisecond)
	}
}

// ---------------------------------------------------------------------------
// TLS and auth

func TestEtcdTLS(t *testing.T) {
	t.Parallel()
	certs := harness.GenCerts(t)
	e := harness.StartEtcd(t, harness.EtcdTLS(certs))
	c := e.Client(t)
	etcdPut(t, c, "/tls/k", "v")
	hosts := etcdHosts(e.Endpoints)

	s, _ := etcdOpen(t, "etcds", hosts, func(cfg *backends.Config) { cfg.TLS = certs.ClientTLS(t) })
	kvs, _, err := s.Get(etcdCtx(t, 10*time.Second), []string{"/tls"})
	if err != nil || kvs["/tls/k"] != "v" {
		t.Fatalf("Get over TLS: %v %v", kvs, err)
	}
	w := etcdStartWatch(t, s, backends.PrefixTarget("/tls"), 0, 0)
	w.next(t, 10*time.Second)
	etcdPut(t, c, "/tls/k", "v2")
	if ev := w.next(t, 5*time.Second); ev.KVs["/tls/k"] != "v2" {
		t.Fatalf("watch over TLS: %+v", ev)
	}

	other := harness.GenCerts(t)
	cases := []struct {
		name   string
		scheme string
		tls    *tls.Config
		want   string
	}{
		{"no client certificate", "etcds", certs.ClientTLSNoCert(t), "certificate"},
		{"server signed by an unknown CA", "etcds", other.ClientTLS(t), "x509"},
		{"system roots (etcds:// without TLS flags)", "etcds", nil, "x509"},
		{"plain text to a TLS port", "etcd", nil, hosts[0]},
	}
	for _, tc := range cases {
		s, _ := etcdOpen(t, tc.scheme, hosts, func(cfg *backends.Config) { cfg.TLS = tc.tls })
		_, _, err := s.Get(etcdCtx(t, 2*time.Second), []string{"/tls"})
		if err == nil {
			t.Errorf("%s: Get succeeded", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), hosts[0]) {
			t.Errorf("%s: error %q does not mention %q and the endpoint", tc.name, err, tc.want)
		}
		t.Logf("%s: %v", tc.name, err)
		if st := s.State(); st.Conn != backends.Down {
			t.Errorf("%s: state %+v", tc.name, st)
		}
	}
}

// etcdEnableAuth creates root and a user "reader" (password readerPW) whose role may
// read perm, then turns auth on. It returns a root client.
func etcdEnableAuth(t testing.TB, e *harness.Etcd, rootPW, readerPW string, perms ...[2]string) *clientv3.Client {
	t.Helper()
	c := e.Client(t)
	ctx := etcdCtx(t, 10*time.Second)
	steps := []func() error{
		func() error { _, err := c.UserAdd(ctx, "root", rootPW); return err },
		func() error { _, err := c.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := c.RoleAdd(ctx, "reader"); return err },
		func() error { _, err := c.UserAdd(ctx, "reader", readerPW); return err },
		func() error { _, err := c.UserGrantRole(ctx, "reader", "reader"); return err },
	}
	for _, p := range perms {
		steps = append(steps, func() error {
			_, err := c.RoleGrantPermission(ctx, "reader", p[0], p[1], clientv3.PermissionType(authpb.READ))
			return err
		})
	}
	steps = append(steps, func() error { _, err := c.AuthEnable(ctx); return err })
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("auth setup step %d: %v", i, err)
		}
	}
	root, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints, Username: "root", Password: rootPW, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("root client: %v", err)
	}
	t.Cleanup(func() { root.Close() })
	return root
}

func TestEtcdAuth(t *testing.T) {
	t.Parallel()
	const rootPW, readerPW = "r00t-Secret-1", "Reader-Secret-2"
	for _, grant := range []struct {
		name     string
		key, end string
	}{
		{"role on the subtree /app/", "/app/", "/app0"},
		{"role on the prefix /app", "/app", "/app0"},
	} {
		t.Run(grant.name, func(t *testing.T) {
			t.Parallel()
			e := harness.StartEtcd(t)
			c := e.Client(t)
			etcdPut(t, c, "/app/k", "v", "/app", "self", "/secret/k", "s")
			root := etcdEnableAuth(t, e, rootPW, readerPW, [2]string{grant.key, grant.end})

			s, logs := etcdOpenCluster(t, e, func(cfg *backends.Config) { cfg.Username, cfg.Password = "reader", readerPW })
			ctx := etcdCtx(t, 20*time.Second)
			kvs, _, err := s.Get(ctx, []string{"/app"})
			if err != nil {
				t.Fatalf("Get /app as reader: %v", err)
			}
			want := map[string]string{"/app/k": "v", "/app": "self"}
			if grant.key == "/app/" {
				delete(want, "/app") // the role does not cover the key /app itself
			}
			if !maps.Equal(kvs, want) {
				t.Errorf("Get /app as reader = %v, want %v", kvs, want)
			}
			w := etcdStartWatch(t, s, backends.PrefixTarget("/app"), 0, 0)
			if ev := w.next(t, 10*time.Second); !ev.Full || !maps.Equal(ev.KVs, want) {
				t.Fatalf("first watch event %+v, want Full %v", ev, want)
			}
			if _, err := root.Put(ctx, "/app/k", "v2"); err != nil {
				t.Fatal(err)
			}
			if ev := w.next(t, 5*time.Second); ev.KVs["/app/k"] != "v2" {
				t.Fatalf("watch as reader: %+v", ev)
			}

			// Outside the role: permission denied, naming the prefix, at once.
			begin := time.Now()
			_, _, err = s.Get(ctx, []string{"/secret"})
			if err == nil || !strings.Contains(err.Error(), "permission denied") || !strings.Contains(err.Error(), "/secret") {
				t.Errorf("Get /secret as reader: %v, want permission denied naming /secret", err)
			}
			if time.Since(begin) > 2*time.Second {
				t.Errorf("permission denied took %v", time.Since(begin))
			}

			// A wrong password fails at once with a clear error and shows no password.
			bad, badLogs := etcdOpenCluster(t, e, func(cfg *backends.Config) { cfg.Username, cfg.Password = "reader", "Wrong-Secret-3" })
			begin = time.Now()
			_, _, err = bad.Get(ctx, []string{"/app"})
			if err == nil || !strings.Contains(err.Error(), "authentication failed") {
				t.Errorf("Get with a wrong password: %v, want authentication failed", err)
			}
			if time.Since(begin) > 5*time.Second {
				t.Errorf("a wrong password took %v to fail", time.Since(begin))
			}
			if st := bad.State(); st.Conn != backends.Down || st.Err == nil {
				t.Errorf("state with a wrong password: %+v", st)
			}
			for _, secret := range []string{rootPW, readerPW, "Wrong-Secret-3"} {
				for what, text := range map[string]string{"logs": logs.String() + badLogs.String(), "error": fmt.Sprint(err), "state": fmt.Sprint(s.State(), bad.State())} {
					if strings.Contains(text, secret) {
						t.Errorf("a password shows in the %s", what)
					}
				}
			}
		})
	}
}

// ---------------------------------------------------------------------------
// service lists

func etcdJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestEtcdServices(t *testing.T) {
	t.Parallel()
	e := harness.StartEtcd(t)
	c := e.Client(t)
	etcdPut(t, c,
		"/services/web/w1", `{"name":"web","id":"w1","address":"10.0.0.2","port":8080,"tags":["blue"],"status":"passing"}`,
		"/services/web/w2", "10.0.0.1:8080",
		"/services/web/w3", `{"name":"web","id":"w3","address":"10.0.0.3","port":8080,"status":"critical"}`,
		"/services/web/bad", "not a host port",
		"/services/webx/x1", "10.9.9.9:1",
		"/services/db/d1", "[::1]:5432",
	)
	s, logs := etcdOpenCluster(t, e, nil)
	ctx := etcdCtx(t, 10*time.Second)

	q, _ := backends.ParseServiceQuery("web")
	svcs, _, err := s.Services(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, svc := range svcs {
		got = append(got, svc.ID+"="+svc.HostPort())
		if svc.Backend != "etcd" || svc.Name != "web" || svc.Key == "" {
			t.Errorf("instance %+v: want Backend etcd, Name web and its key", svc)
		}
	}
	if want := []string{"w2=10.0.0.1:8080", "w1=10.0.0.2:8080"}; !slices.Equal(got, want) {
		t.Errorf("Services(web) = %v, want %v (sorted by address, critical filtered, malformed skipped)", got, want)
	}
	if l := logs.String(); !strings.Contains(l, "/services/web/bad") || !strings.Contains(l, "level=WARN") {
		t.Errorf("no warning naming the malformed instance's key:\n%s", l)
	}
	qa, _ := backends.ParseServiceQuery("web", "any")
	if all, _, err := s.Services(ctx, qa); err != nil || len(all) != 3 {
		t.Errorf("Services(web|any) = %d instances, %v; want 3", len(all), err)
	}
	qt, _ := backends.ParseServiceQuery("web", "tag=blue") // a Store reads q.Name exactly; "blue.web" resolves against the catalog first (ResolveQuery)
	if blue, _, err := s.Services(ctx, qt); err != nil || len(blue) != 1 || blue[0].ID != "w1" {
		t.Errorf("Services(blue.web) = %+v, %v", blue, err)
	}
	names, _, err := s.ServiceNames(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ns []string
	for _, n := range names {
		ns = append(ns, n.Name)
	}
	if want := []string{"db", "web", "webx"}; !slices.Equal(ns, want) {
		t.Errorf("ServiceNames = %v, want %v", ns, want)
	}
}

// Instances written with a lease vanish when it expires; the service watch sends the
// shorter list.
func TestEtcdServiceWatchLeaseExpiry(t *testing.T) {
	t.Parallel()
	e := harness.StartEtcd(t)
	c := e.Client(t)
	ctx := etcdCtx(t, 30*time.Second)
	etcdPut(t, c, "/services/api/a1", "10.0.0.1:80")
	s, logs := etcdOpenCluster(t, e, nil)
	q, _ := backends.ParseServiceQuery("api")
	w := etcdStartWatch(t, s, backends.ServiceTarget(q), 0, 0)
	ev := w.next(t, 10*time.Second)
	if !ev.Full || len(ev.Services) != 1 {
		t.Fatalf("first event %+v, want the one instance", ev)
	}

	lease, err := c.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "/services/api/a2", "10.0.0.2:80", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	ev = w.next(t, 5*time.Second)
	if !ev.Full || len(ev.Services) != 2 {
		t.Fatalf("event %+v, want two instances", ev)
	}
	// A change that leaves the list as it was sends nothing.
	if _, err := c.Put(ctx, "/services/api/zz", "garbage"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "/services/apix/a1", "10.0.0.9:80"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "/services/api/a1/deeper", "x"); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	ev = w.next(t, 10*time.Second)
	if !ev.Full || len(ev.Services) != 1 || ev.Services[0].ID != "a1" {
		t.Fatalf("event %+v, want only a1 after the lease expired", ev)
	}
	t.Logf("lease-backed instance gone %v after the last change", time.Since(begin).Round(time.Millisecond))
	// The malformed instance is reported once, not on every change of the list.
	if n := strings.Count(logs.String(), "key=/services/api/zz"); n != 1 {
		t.Errorf("the malformed instance is named %d times in the log, want once:\n%s", n, logs)
	}

	names := etcdStartWatch(t, s, backends.Target{ServiceNames: true}, 0, 0)
	ev = names.next(t, 10*time.Second)
	if len(ev.Names) != 2 || ev.Names[0].Name != "api" || ev.Names[1].Name != "apix" {
		t.Fatalf("service names %+v", ev.Names)
	}
	etcdPut(t, c, "/services/cache/c1", "10.0.0.3:6379")
	if ev = names.next(t, 5*time.Second); len(ev.Names) != 3 {
		t.Fatalf("service names after adding cache: %+v", ev.Names)
	}
}

// ---------------------------------------------------------------------------
// registration

func etcdLeaseOf(t testing.TB, c *clientv3.Client, key string) (string, clientv3.LeaseID, bool) {
	t.Helper()
	resp, err := c.Get(etcdCtx(t, 5*time.Second), key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0, false
	}
	return string(resp.Kvs[0].Value), clientv3.LeaseID(resp.Kvs[0].Lease), true
}

func etcdWaitKey(t testing.TB, c *clientv3.Client, key string, present bool, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		_, _, ok := etcdLeaseOf(t, c, key)
		if ok == present {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("key %s present=%v after %v, want %v", key, ok, d, present)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestEtcdRegister(t *testing.T) {
	t.Parallel()
	e := harness.StartEtcd(t)
	c := e.Client(t)
	s, _ := etcdOpenCluster(t, e, nil)
	ctx := etcdCtx(t, 30*time.Second)
	svc := backends.Service{Name: "web", ID: "w1", Address: "10.0.0.1", Port: 80, Tags: []string{"a"}, Meta: map[string]string{"v": "1"}}
	reg, err := s.Register(ctx, svc, backends.RegisterOptions{TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	const key = "/services/web/w1"
	val, lease, ok := etcdLeaseOf(t, c, key)
	if !ok || lease == 0 {
		t.Fatalf("after Register: key present=%v lease=%x", ok, lease)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(val), &v); err != nil {
		t.Fatalf("value %q: %v", val, err)
	}
	if v["name"] != "web" || v["id"] != "w1" || v["address"] != "10.0.0.1" || v["port"] != float64(80) || v["status"] != "passing" {
		t.Errorf("value %s", val)
	}
	// The backend reads its own writing back.
	q, _ := backends.ParseServiceQuery("web")
	if got, _, err := s.Services(ctx, q); err != nil || len(got) != 1 || got[0].HostPort() != "10.0.0.1:80" || !got[0].HasTag("a") {
		t.Errorf("Services(web) after Register = %+v, %v", got, err)
	}

	// Kept alive past several TTLs.
	time.Sleep(5 * time.Second)
	if _, l2, ok := etcdLeaseOf(t, c, key); !ok || l2 != lease {
		t.Fatalf("after 2.5 TTLs: present=%v lease %x, want %x", ok, l2, lease)
	}

	// The same ID from another process is refused unless Replace.
	s2, _ := etcdOpenCluster(t, e, nil)
	if _, err := s2.Register(ctx, svc, backends.RegisterOptions{TTL: 2 * time.Second}); !errors.Is(err, etcd.ErrTaken) || !strings.Contains(err.Error(), key) {
		t.Errorf("second Register of the same ID: %v, want ErrTaken naming %s", err, key)
	}

	// Unhealthy withdraws, healthy announces again.
	if err := reg.SetHealthy(ctx, false, "check failed"); err != nil {
		t.Fatal(err)
	}
	etcdWaitKey(t, c, key, false, time.Second)
	time.Sleep(3 * time.Second) // the keepalive must not put it back
	etcdWaitKey(t, c, key, false, time.Second)
	if err := reg.SetHealthy(ctx, true, "check ok"); err != nil {
		t.Fatal(err)
	}
	etcdWaitKey(t, c, key, true, time.Second)

	// Someone revokes our lease: the key vanishes, then comes back under a new lease.
	if _, err := c.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	etcdWaitKey(t, c, key, true, 10*time.Second)
	_, lease2, _ := etcdLeaseOf(t, c, key)
	if lease2 == lease || lease2 == 0 {
		t.Errorf("after revocation the key has lease %x (old %x)", lease2, lease)
	}

	// Deregister removes it at once.
	begin := time.Now()
	if err := reg.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	etcdWaitKey(t, c, key, false, time.Second)
	t.Logf("deregistered in %v", time.Since(begin))
	if err := reg.Deregister(ctx); err != nil {
		t.Errorf("second Deregister: %v", err)
	}

	// Replace takes over an ID held by another lease.
	other, err := c.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "/services/web/w2", "10.0.0.9:80", clientv3.WithLease(other.ID)); err != nil {
		t.Fatal(err)
	}
	svc.ID = "w2"
	if _, err := s.Register(ctx, svc, backends.RegisterOptions{TTL: 2 * time.Second, Replace: true}); err != nil {
		t.Fatalf("Register with Replace: %v", err)
	}
	if val, l, _ := etcdLeaseOf(t, c, "/services/web/w2"); l == other.ID || !strings.Contains(val, "10.0.0.1") {
		t.Errorf("after Replace: %s under lease %x", val, l)
	}
}

func TestEtcdRegisterEndsWithContext(t *testing.T) {
	t.Parallel()
	e := harness.StartEtcd(t)
	c := e.Client(t)
	owned := goroutineScope(t)
	s, err := etcd.New(backends.Config{}, backends.Endpoint{Scheme: "etcd", Hosts: etcdHosts(e.Endpoints)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := s.Register(ctx, backends.Service{Name: "job", ID: "j1", Address: "127.0.0.1", Port: 1}, backends.RegisterOptions{TTL: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	etcdWaitKey(t, c, "/services/job/j1", true, time.Second)
	cancel()
	etcdWaitKey(t, c, "/services/job/j1", false, 5*time.Second) // long before the 30 s TTL

	// Close revokes what is still registered.
	if _, err := s.Register(context.Background(), backends.Service{Name: "job", ID: "j2", Address: "127.0.0.1", Port: 1}, backends.RegisterOptions{TTL: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	etcdWaitKey(t, c, "/services/job/j2", false, time.Second)
	waitGoroutines(t, owned, 1, "after Close")
}

// etcd down for longer than the TTL: when it is back, the instance is announced again.
func TestEtcdRegisterSurvivesOutage(t *testing.T) {
	t.Parallel()
	e := harness.StartEtcd(t)
	s, logs := etcdOpenCluster(t, e, nil)
	ctx := etcdCtx(t, 60*time.Second)
	if _, err := s.Register(ctx, backends.Service{Name: "web", ID: "w1", Address: "10.0.0.1", Port: 80}, backends.RegisterOptions{TTL: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	e.Members[0].Stop(t)
	time.Sleep(4 * time.Second)
	e.Members[0].Restart(t)
	c := e.Client(t)
	etcdWaitKey(t, c, "/services/web/w1", true, 15*time.Second)
	// And it stays: the lease is kept alive again.
	time.Sleep(5 * time.Second)
	etcdWaitKey(t, c, "/services/web/w1", true, time.Second)
	t.Logf("log:\n%s", logs)
}

// ---------------------------------------------------------------------------
// benchmarks

// etcdLatency puts a value b.N times and measures the time until the watch delivers it.
func etcdLatency(b *testing.B, c *clientv3.Client, recv func(want string) time.Time, key string) {
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		v := strconv.Itoa(i)
		start := time.Now()
		if _, err := c.Put(context.Background(), key, v); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, recv(v).Sub(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkEtcdWatchLatency: put to event through Store.Watch, single node.
func BenchmarkEtcdWatchLatency(b *testing.B) {
	e := harness.StartEtcd(b)
	c := e.Client(b)
	s, _ := etcdOpenCluster(b, e, nil)
	w := etcdStartWatch(b, s, backends.PrefixTarget("/bench"), 0, 0)
	w.next(b, 10*time.Second)
	etcdLatency(b, c, func(want string) time.Time {
		for {
			ev := w.next(b, 10*time.Second)
			if ev.KVs["/bench/k"] == want {
				return time.Now()
			}
		}
	}, "/bench/k")
}

// BenchmarkEtcdRawWatchLatency: the same with clientv3's own watch, for comparison.
func BenchmarkEtcdRawWatchLatency(b *testing.B) {
	e := harness.StartEtcd(b)
	c := e.Client(b)
	wc := e.Client(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wch := wc.Watch(ctx, "/bench/", clientv3.WithPrefix())
	etcdLatency(b, c, func(want string) time.Time {
		for resp := range wch {
			for _, ev := range resp.Events {
				if string(ev.Kv.Value) == want {
					return time.Now()
				}
			}
		}
		b.Fatal("watch closed")
		return time.Time{}
	}, "/bench/k")
}
