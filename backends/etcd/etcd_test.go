package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/heraldhq/herald/backends"
)

func TestSpanOps(t *testing.T) {
	cases := []struct {
		sp   span
		want [][2]string // key, range end ("" for a single key)
	}{
		{span{prefix: "/app", self: true}, [][2]string{{"/app", ""}, {"/app/", "/app0"}}},
		{span{prefix: "/app"}, [][2]string{{"/app/", "/app0"}}},
		{span{prefix: "/", self: false}, [][2]string{{"/", "0"}}},
		{span{prefix: "/a/b c", self: true}, [][2]string{{"/a/b c", ""}, {"/a/b c/", "/a/b c0"}}},
	}
	for _, c := range cases {
		ops := c.sp.ops(7)
		if len(ops) != len(c.want) {
			t.Fatalf("%+v: %d ops, want %d", c.sp, len(ops), len(c.want))
		}
		for i, op := range ops {
			if string(op.KeyBytes()) != c.want[i][0] || string(op.RangeBytes()) != c.want[i][1] {
				t.Errorf("%+v op %d: [%q, %q), want [%q, %q)", c.sp, i, op.KeyBytes(), op.RangeBytes(), c.want[i][0], c.want[i][1])
			}
			if op.Rev() != 7 {
				t.Errorf("%+v op %d: rev %d, want 7", c.sp, i, op.Rev())
			}
		}
	}
}

func TestSpanContainsRespectsPathBoundaries(t *testing.T) {
	self := span{prefix: "/app", self: true}
	below := span{prefix: "/app"}
	root := span{prefix: "/"}
	cases := []struct {
		key              string
		self, below, all bool
	}{
		{"/app", true, false, true},
		{"/app/", true, true, true},
		{"/app/x", true, true, true},
		{"/app/x/y", true, true, true},
		{"/apple", false, false, true},
		{"/app-x", false, false, true},
		{"/app.x", false, false, true},
		{"/ap", false, false, true},
		{"app/x", false, false, false},
	}
	for _, c := range cases {
		if got := self.contains(c.key); got != c.self {
			t.Errorf("span /app (with key) contains %q = %v, want %v", c.key, got, c.self)
		}
		if got := below.contains(c.key); got != c.below {
			t.Errorf("span /app (below only) contains %q = %v, want %v", c.key, got, c.below)
		}
		if got := root.contains(c.key); got != c.all {
			t.Errorf("span / contains %q = %v, want %v", c.key, got, c.all)
		}
	}
	// The watch range of a span must hold every key the span contains.
	for _, sp := range []span{self, below, root} {
		k, end := sp.watchRange()
		for _, c := range cases {
			if sp.contains(c.key) && !(c.key >= k && c.key < end) {
				t.Errorf("%+v: watch range [%q, %q) misses %q", sp, k, end, c.key)
			}
		}
	}
}

func TestBatchSpansStaysWithinTxnLimit(t *testing.T) {
	var spans []span
	for i := range 200 {
		spans = append(spans, span{prefix: "/p" + strconv.Itoa(i), self: i%3 != 0})
	}
	batches := batchSpans(spans)
	total := 0
	for _, b := range batches {
		ops := 0
		for _, sp := range b {
			ops += len(sp.ops(0))
		}
		if ops > maxTxnOps {
			t.Errorf("batch of %d ops exceeds %d", ops, maxTxnOps)
		}
		total += len(b)
	}
	if total != len(spans) {
		t.Errorf("batches hold %d spans, want %d", total, len(spans))
	}
	if len(batches) < 3 {
		t.Errorf("%d batches for 333 ops", len(batches))
	}
	if got := batchSpans(nil); len(got) != 0 {
		t.Errorf("no spans: %d batches", len(got))
	}
}

func TestBackoffDelayIsBoundedAndJittered(t *testing.T) {
	seen := map[time.Duration]bool{}
	bo := newBackoff()
	for n := range 40 {
		d := bo.Next()
		if d <= 0 || d > maxBackoff {
			t.Fatalf("retry %d waits %v, want (0, %v]", n, d, maxBackoff)
		}
		if n == 0 && d > 100*time.Millisecond {
			t.Errorf("first retry waits %v", d)
		}
		seen[d] = true
	}
	if len(seen) < 20 {
		t.Errorf("only %d distinct delays in 40 draws: no jitter?", len(seen))
	}
	for range 1000 {
		bo.Next()
	}
	if d := bo.Next(); d < maxBackoff/2 {
		t.Errorf("retry 1000 waits %v, want >= %v", d, maxBackoff/2)
	}
}

func put(key, val string, rev int64) *clientv3.Event {
	return &clientv3.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte(key), Value: []byte(val), ModRevision: rev}}
}

func del(key string, rev int64) *clientv3.Event {
	return &clientv3.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte(key), ModRevision: rev}}
}

func TestFollowerApplyPrefix(t *testing.T) {
	s, err := New(backends.Config{}, backends.Endpoint{Scheme: "etcd", Hosts: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f, err := s.newFollower(backends.PrefixTarget("/app"))
	if err != nil {
		t.Fatal(err)
	}
	sp := f.span()
	ev, ok := f.apply(sp, []*clientv3.Event{
		put("/app/a", "1", 5),
		put("/apple", "no", 5), // outside the prefix, inside the watched range? no, but filtered anyway
		put("/app-x", "no", 6), // inside [/app, /app0): must be filtered
		put("/app/b", "1", 6),
		del("/app/a", 7),
		put("/app/c", "1", 7),
		del("/app/c", 8),
		put("/app/c", "2", 9),
	}, 9)
	if !ok {
		t.Fatal("no event")
	}
	want := backends.Event{Target: backends.PrefixTarget("/app"), Revision: 9,
		KVs: map[string]string{"/app/b": "1", "/app/c": "2"}, Deleted: []string{"/app/a"}}
	if !reflect.DeepEqual(ev, want) {
		t.Errorf("event\n got %+v\nwant %+v", ev, want)
	}
	if _, ok := f.apply(sp, []*clientv3.Event{put("/app-x", "1", 10), put("/apps", "1", 10)}, 10); ok {
		t.Error("events outside the prefix produced an event")
	}
}

// The catalog follower parses each instance once and sends a new catalog only when a
// name or a tag set moved: an instance's new address is no catalog change.
func TestFollowerCatalog(t *testing.T) {
	s, err := New(backends.Config{}, backends.Endpoint{Scheme: "etcd", Hosts: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f, err := s.newFollower(backends.Target{ServiceNames: true})
	if err != nil {
		t.Fatal(err)
	}
	f.base(map[string]string{"/services/web/1": `{"address":"10.0.0.1","port":80,"tags":["a"]}`, "/services/db/1": "10.0.0.9:5432"})
	sp := f.span()
	names := func(ev backends.Event) string {
		var out []string
		for _, n := range ev.Names {
			out = append(out, n.Name+strings.Join(n.Tags, "+"))
		}
		return strings.Join(out, " ")
	}
	for _, step := range []struct {
		evs  []*clientv3.Event
		want string // "" for no event
	}{
		{[]*clientv3.Event{put("/services/web/1", `{"address":"10.0.0.2","port":81,"tags":["a"]}`, 2)}, ""},
		{[]*clientv3.Event{put("/services/web/2", `{"address":"10.0.0.3","port":80,"tags":["b"]}`, 3)}, "db weba+b"},
		{[]*clientv3.Event{put("/services/db/1", "10.0.0.8:5432", 4)}, ""},
		{[]*clientv3.Event{put("/services/web/1", `{"address":"10.0.0.2","port":81}`, 5)}, "db webb"},
		{[]*clientv3.Event{put("/services/web/2", "not an instance", 6)}, "db web"},
		{[]*clientv3.Event{del("/services/db/1", 7)}, "web"},
		{[]*clientv3.Event{put("/services/api/1", "10.0.0.5:80", 8)}, "api web"},
	} {
		ev, ok := f.apply(sp, step.evs, step.evs[0].Kv.ModRevision)
		if got := names(ev); ok != (step.want != "") || got != step.want {
			t.Fatalf("after %s: event %v %q, want %q", step.evs[0].Kv.Key, ok, got, step.want)
		}
	}
}

func TestOutboxMergesIntoARealState(t *testing.T) {
	tgt := backends.PrefixTarget("/app")
	out := make(chan backends.Event, 1)
	o := newOutbox(out, 0)
	o.add(backends.Event{Target: tgt, Revision: 3, KVs: map[string]string{"/app/a": "1", "/app/b": "1"}})
	o.add(backends.Event{Target: tgt, Revision: 4, Deleted: []string{"/app/a"}})
	o.add(backends.Event{Target: tgt, Revision: 5, KVs: map[string]string{"/app/c": "1"}, Deleted: []string{"/app/b"}})
	o.add(backends.Event{Target: tgt, Revision: 6, KVs: map[string]string{"/app/b": "2"}})
	want := backends.Event{Target: tgt, Revision: 6,
		KVs: map[string]string{"/app/b": "2", "/app/c": "1"}, Deleted: []string{"/app/a"}}
	if !reflect.DeepEqual(o.ev(), want) {
		t.Errorf("merged\n got %+v\nwant %+v", o.ev(), want)
	}
	if o.ch() == nil {
		t.Fatal("pending event not offered")
	}
	o.sent()
	if o.ch() != nil {
		t.Error("offers an event after sending it")
	}

	// A Full event replaces what is pending; later changes fold into it.
	o.add(backends.Event{Target: tgt, Revision: 7, KVs: map[string]string{"/app/x": "1"}})
	o.add(backends.Event{Target: tgt, Revision: 9, Full: true, KVs: map[string]string{"/app/y": "1", "/app/z": "1"}})
	o.add(backends.Event{Target: tgt, Revision: 10, Deleted: []string{"/app/y"}, KVs: map[string]string{"/app/w": "1"}})
	want = backends.Event{Target: tgt, Revision: 10, Full: true, KVs: map[string]string{"/app/z": "1", "/app/w": "1"}}
	if !reflect.DeepEqual(o.ev(), want) {
		t.Errorf("merged into Full\n got %+v\nwant %+v", o.ev(), want)
	}
}

func TestOutboxMinGap(t *testing.T) {
	tgt := backends.PrefixTarget("/app")
	out := make(chan backends.Event, 10)
	o := newOutbox(out, 50*time.Millisecond)
	defer o.stop()
	o.add(backends.Event{Target: tgt, Revision: 1, KVs: map[string]string{"/app/a": "1"}})
	if o.ch() == nil {
		t.Fatal("first event held back")
	}
	o.sent()
	sentAt := time.Now()
	o.add(backends.Event{Target: tgt, Revision: 2, KVs: map[string]string{"/app/a": "2"}})
	if o.ch() != nil {
		t.Fatal("second event offered before MinGap")
	}
	select {
	case <-o.wake():
		o.woke()
	case <-time.After(time.Second):
		t.Fatal("MinGap timer never fired")
	}
	if since := time.Since(sentAt); since < 50*time.Millisecond {
		t.Errorf("woke after %v", since)
	}
	if o.ch() == nil {
		t.Error("event not offered after MinGap")
	}
}

func TestEncodeInstance(t *testing.T) {
	_, b, err := backends.EncodeRegistration(backends.Service{Name: "web", ID: "w1", Address: "::1", Port: 80}, "", false, 1)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"name", "id", "address", "port", "tags", "meta", "status"} {
		if _, ok := m[k]; !ok {
			t.Errorf("value %s lacks %q", b, k)
		}
	}
	if m["status"] != "passing" || m["address"] != "::1" || m["port"] != float64(80) {
		t.Errorf("value %s", b)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	ep := backends.Endpoint{Scheme: "etcd", Hosts: []string{"127.0.0.1:2379"}}
	cases := []struct {
		name string
		cfg  backends.Config
		ep   backends.Endpoint
		want string
	}{
		{"wrong scheme", backends.Config{}, backends.Endpoint{Scheme: "consul", Hosts: ep.Hosts}, "scheme"},
		{"no hosts", backends.Config{}, backends.Endpoint{Scheme: "etcd"}, "no endpoints"},
		{"path", backends.Config{}, backends.Endpoint{Scheme: "etcd", Hosts: ep.Hosts, Path: "/x"}, "path"},
		{"user without password", backends.Config{Username: "u"}, ep, "password"},
		{"password without user", backends.Config{Password: "hunter2"}, ep, "username"},
	}
	for _, c := range cases {
		_, err := New(c.cfg, c.ep)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one mentioning %q", c.name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: error shows the password: %v", c.name, err)
		}
	}
}

// closedPort returns a loopback port that nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// With nothing listening, New returns at once, and Get fails when ctx ends with an
// error that names the endpoint and why it cannot connect: the state says down.
func TestEtcdDownGetFailsWithCause(t *testing.T) {
	for _, auth := range []bool{false, true} {
		addr := closedPort(t)
		cfg := backends.Config{DialTimeout: 300 * time.Millisecond}
		if auth {
			cfg.Username, cfg.Password = "alice", "s3cret-pw"
		}
		begin := time.Now()
		s, err := New(cfg, backends.Endpoint{Scheme: "etcd", Hosts: []string{addr}})
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(begin); d > 50*time.Millisecond {
			t.Errorf("New took %v", d)
		}
		if st := s.State(); st.Conn != backends.Connecting {
			t.Errorf("state before any call: %v", st.Conn)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
		begin = time.Now()
		_, _, err = s.Get(ctx, []string{"/app"})
		cancel()
		took := time.Since(begin)
		if err == nil {
			t.Fatal("Get succeeded with nothing listening")
		}
		if took < 700*time.Millisecond || took > 2*time.Second {
			t.Errorf("auth=%v: Get failed after %v, want about the 800ms deadline", auth, took)
		}
		msg := err.Error()
		t.Logf("auth=%v: %s", auth, msg)
		for _, want := range []string{addr, "/app", "connection refused"} {
			if !strings.Contains(msg, want) {
				t.Errorf("auth=%v: error %q does not mention %q", auth, msg, want)
			}
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("auth=%v: error %v does not wrap context.DeadlineExceeded", auth, err)
		}
		if strings.Contains(msg, "s3cret-pw") {
			t.Errorf("error shows the password: %s", msg)
		}
		st := s.State()
		if st.Conn != backends.Down || st.Endpoint != addr || st.Err == nil || !strings.Contains(st.Err.Error(), "connection refused") {
			t.Errorf("auth=%v: state = %+v, want down at %s with connection refused", auth, st, addr)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if st := s.State(); st.Conn != backends.Down {
			t.Errorf("state after Close: %v", st.Conn)
		}
		if _, _, err := s.Get(context.Background(), []string{"/app"}); !errors.Is(err, errClosed) {
			t.Errorf("Get after Close: %v", err)
		}
	}
}

func TestWatchRejectsBadTargets(t *testing.T) {
	s, err := New(backends.Config{}, backends.Endpoint{Scheme: "etcd", Hosts: []string{closedPort(t)}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out := make(chan backends.Event)
	for _, tgt := range []backends.Target{{}, backends.ServiceTarget(backends.ServiceQuery{Name: "a/b"})} {
		if err := s.Watch(context.Background(), tgt, 0, out); err == nil {
			t.Errorf("Watch(%v) accepted", tgt)
		}
	}
}

// A watch with etcd down waits (and keeps retrying) until ctx ends, then returns
// ctx.Err() promptly.
func TestWatchWaitsWhileDownAndStopsWithCtx(t *testing.T) {
	s, err := New(backends.Config{DialTimeout: 200 * time.Millisecond}, backends.Endpoint{Scheme: "etcd", Hosts: []string{closedPort(t)}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	begin := time.Now()
	err = s.Watch(ctx, backends.PrefixTarget("/app"), 0, make(chan backends.Event))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Watch returned %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(begin); d > 2500*time.Millisecond {
		t.Errorf("Watch returned %v after ctx ended", d-1500*time.Millisecond)
	}
}

func TestQuietRepeatsPassesEachRecordOnce(t *testing.T) {
	var buf strings.Builder
	log := slog.New(newQuietRepeats(slog.NewTextHandler(&buf, nil))).With("backend", "etcd")
	for range 3 {
		log.Warn("skipping malformed service instance", "key", "/services/web/bad", "err", "no port")
	}
	log.Warn("skipping malformed service instance", "key", "/services/web/bad", "err", "bad port")
	log.Warn("skipping malformed service instance", "key", "/services/web/other", "err", "no port")
	if n := strings.Count(buf.String(), "\n"); n != 3 {
		t.Errorf("%d lines, want 3 (one per distinct record):\n%s", n, buf.String())
	}
}

// The state follows connection events: down with the cause while no endpoint is
// connected, up while one is, down again when a call fails on a live connection (no
// leader), and one warning per outage rather than one per reconnect attempt.
func TestStateFollowsConnections(t *testing.T) {
	var logs strings.Builder
	cfg := backends.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	a, b := "127.0.0.1:1", "127.0.0.1:2"
	s, err := New(cfg, backends.Endpoint{Scheme: "etcd", Hosts: []string{a, b}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check := func(step string, conn backends.ConnState, ep, errPart string) {
		t.Helper()
		st := s.State()
		if st.Conn != conn || st.Endpoint != ep || (errPart == "") != (st.Err == nil) ||
			(st.Err != nil && !strings.Contains(st.Err.Error(), errPart)) {
			t.Errorf("%s: state %v at %q (err %v), want %v at %q with %q", step, st.Conn, st.Endpoint, st.Err, conn, ep, errPart)
		}
	}
	check("start", backends.Connecting, a, "")
	refused := errors.New("dial tcp: connection refused")
	for range 5 {
		s.track.failed(a, refused)
		s.track.failed(b, refused)
	}
	check("both refused", backends.Down, b, "refused")
	connA := &trackedConn{t: s.track, ep: a}
	connA.up()
	check("a connected", backends.Up, a, "")
	s.track.failed(b, refused)
	check("b still refused", backends.Up, a, "")
	s.rpcFailed(errors.New("etcdserver: no leader"))
	check("no leader", backends.Down, a, "no leader")
	s.rpcOK()
	check("leader back", backends.Up, a, "")
	connA.mu.Lock()
	connA.readErr = errors.New("read: connection reset by peer")
	connA.mu.Unlock()
	s.track.closed(a, errors.New("connection lost: reset"))
	check("a lost", backends.Down, a, "connection lost")
	if n := strings.Count(logs.String(), "etcd unavailable"); n != 3 {
		t.Errorf("%d 'unavailable' warnings for 3 outages (one of 10 failed attempts):\n%s", n, logs.String())
	}

	_, cause, at := s.track.lastFailure()
	if msg := describe(a, cause, at.Add(-2*time.Minute)); !strings.Contains(msg, a+": ") || !strings.Contains(msg, "ago") {
		t.Errorf("describe of an old error without the address: %q", msg)
	}
	if msg := describe(a, fmt.Errorf("dial tcp %s: refused", a), time.Now()); strings.Count(msg, a) != 1 {
		t.Errorf("describe repeats the address: %q", msg)
	}
}
