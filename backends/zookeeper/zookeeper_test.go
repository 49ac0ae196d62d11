package zookeeper

// Unit tests: everything that needs no ZooKeeper server. Behaviour against real servers
// (watches, sessions, registrations, formats, auth) is tested in integration/.

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/backends"
)

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func open(t *testing.T, url string, cfg backends.Config) (*Store, error) {
	t.Helper()
	ep, err := backends.ParseURL(url)
	if err != nil {
		t.Fatalf("ParseURL(%s): %v", url, err)
	}
	s, err := New(cfg, ep)
	if s != nil {
		t.Cleanup(func() { s.Close() })
	}
	return s, err
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestNewRefusesBadSettingsWithoutEchoingThePassword(t *testing.T) {
	const secret = "pa55-word"
	tests := []struct {
		name string
		url  string
		cfg  backends.Config
		want string
	}{
		{"password without user", "zk://127.0.0.1:1", backends.Config{Password: secret}, "needs a user"},
		{"user without password", "zk://127.0.0.1:1", backends.Config{Username: "bob"}, "empty password"},
		{"colon in user", "zk://127.0.0.1:1", backends.Config{Username: "b:ob", Password: secret}, "must not contain"},
		{"empty user in user:password", "zk://127.0.0.1:1", backends.Config{Password: ":" + secret}, "needs a user"},
		{"unknown option", "zk://127.0.0.1:1?chroot=/x", backends.Config{}, `unknown URL option "chroot"`},
		{"bad keys option", "zk://127.0.0.1:1?keys=all", backends.Config{}, "?keys=all"},
		{"valid", "zk://127.0.0.1:1,127.0.0.1:2/chroot?keys=leaves", backends.Config{Password: "bob:" + secret}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := open(t, tt.url, tt.cfg)
			if tt.want == "" {
				if err != nil || s == nil {
					t.Fatalf("New = %v, %v", s, err)
				}
				return
			}
			if err == nil || s != nil {
				t.Fatalf("New = %v, %v; want an error", s, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
	ep, _ := backends.ParseURL("zk://127.0.0.1:1")
	ep.TLS = true
	if s, err := New(backends.Config{}, ep); err != nil {
		t.Errorf("New with TLS = %v; it connects in the background and must not fail", err)
	} else {
		s.Close()
	}
	ep.TLS = false
	ep.Scheme = "etcd"
	if _, err := New(backends.Config{}, ep); err == nil {
		t.Errorf("New accepted an etcd endpoint")
	}
}

func TestCredentialForms(t *testing.T) {
	for _, tt := range []struct {
		user, pass, wantUser, wantAuth string
	}{
		{"", "", "", ""},
		{"alice", "pw", "alice", "alice:pw"},
		{"", "alice:pw", "alice", "alice:pw"},
		{"", "alice:p:w", "alice", "alice:p:w"}, // the password may hold colons
		{"alice", "p:w", "alice", "alice:p:w"},
	} {
		s := &Store{}
		if err := s.setAuth(tt.user, tt.pass); err != nil {
			t.Errorf("setAuth(%q, %q): %v", tt.user, tt.pass, err)
			continue
		}
		if s.user != tt.wantUser || string(s.auth) != tt.wantAuth {
			t.Errorf("setAuth(%q, %q) = user %q auth %q; want %q %q", tt.user, tt.pass, s.user, s.auth, tt.wantUser, tt.wantAuth)
		}
	}
}

// With the server down, New returns at once, the first read fails after its context's
// deadline naming the server and the cause, a watch waits quietly and ends with its
// context, and Close leaves no goroutine behind.
func TestServerDown(t *testing.T) {
	before := runtime.NumGoroutine()
	dead := deadAddr(t)
	logs := &logBuf{}
	begin := time.Now()
	s, err := open(t, "zookeeper://"+dead+"/chroot", backends.Config{
		DialTimeout: 200 * time.Millisecond,
		Username:    "alice", Password: "s3cret",
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d > 100*time.Millisecond {
		t.Errorf("New took %v", d)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	begin = time.Now()
	_, _, err = s.Get(ctx, []string{"/a"})
	if d := time.Since(begin); d < 600*time.Millisecond || d > 2*time.Second {
		t.Errorf("Get returned after %v, want about its 700ms deadline", d)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), dead) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Get = %v; want a deadline error naming %s and the cause", err, dead)
	}
	st := s.State()
	if st.Conn != backends.Down || st.Endpoint != dead || st.Err == nil {
		t.Errorf("State = %+v; want down at %s with the error", st, dead)
	}

	wctx, wcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	out := make(chan backends.Event, 1)
	attempts := func() int { return strings.Count(logs.String(), "zookeeper client") }
	tried := attempts()
	go func() { done <- s.Watch(wctx, backends.PrefixTarget("/a"), 0, out) }()
	// Two more failed connection attempts while the watch runs prove it had the time to
	// send or end, had it been going to.
	for deadline := time.Now().Add(10 * time.Second); attempts() < tried+2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no connection attempts logged while the watch runs:\n%s", logs)
		}
	}
	select {
	case ev := <-out:
		t.Errorf("watch sent %+v while the server is down", ev)
	case err := <-done:
		t.Errorf("watch ended while the server is down: %v", err)
	default:
	}
	wcancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Watch returned %v, want context.Canceled", err)
	}

	// Services, the catalog and Register fail the same way.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if _, _, err := s.Services(ctx2, backends.ServiceQuery{Name: "web"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Services = %v", err)
	}
	if _, err := s.Register(ctx2, backends.Service{Name: "web", ID: "w1", Address: "10.0.0.1", Port: 80}, backends.RegisterOptions{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Register = %v", err)
	}

	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, _, err := s.Get(context.Background(), []string{"/a"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close = %v, want ErrClosed", err)
	}
	if err := s.Watch(context.Background(), backends.PrefixTarget("/a"), 0, out); !errors.Is(err, ErrClosed) {
		t.Errorf("Watch after Close = %v, want ErrClosed", err)
	}
	if strings.Contains(logs.String(), "s3cret") || strings.Contains(st.Err.Error(), "s3cret") {
		t.Errorf("the password shows in logs or state")
	}
	// The library's own goroutines end a moment after Close.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestBadTargetsAndQueries(t *testing.T) {
	s, err := open(t, "zk://"+deadAddr(t), backends.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	out := make(chan backends.Event)
	for _, q := range []backends.ServiceQuery{{Name: "a/b"}, {Name: ".."}, {Name: "web", Datacenter: "dc1"}} {
		if _, _, err := s.Services(ctx, q); err == nil {
			t.Errorf("Services(%+v) succeeded", q)
		}
		if err := s.Watch(ctx, backends.ServiceTarget(q), 0, out); err == nil || errors.Is(err, context.Canceled) {
			t.Errorf("Watch(%+v) = %v, want an error at once", q, err)
		}
	}
	for _, svc := range []backends.Service{
		{Name: "", ID: "x", Address: "10.0.0.1"},
		{Name: "web", ID: "a/b", Address: "10.0.0.1"},
		{Name: "web", ID: "x", Address: ""},
		{Name: "web", ID: "x", Address: "10.0.0.1", Port: -1},
		{Name: "web", ID: "x", Address: "10.0.0.1", Status: "sick"},
	} {
		if _, err := s.Register(ctx, svc, backends.RegisterOptions{}); err == nil {
			t.Errorf("Register(%+v) succeeded", svc)
		}
	}
}

func TestPathsAndChroot(t *testing.T) {
	for _, tt := range []struct {
		chroot, key, path string
	}{
		{"", "/", "/"},
		{"", "/a/b", "/a/b"},
		{"", "a//b/", "/a/b"},
		{"/herald", "/", "/herald"},
		{"/herald", "/a/b", "/herald/a/b"},
		{"/x/y", "/a", "/x/y/a"},
	} {
		s := &Store{chroot: tt.chroot}
		if got := s.serverPath(tt.key); got != tt.path {
			t.Errorf("chroot %q: serverPath(%q) = %q, want %q", tt.chroot, tt.key, got, tt.path)
		}
		if got := s.keyOf(tt.path); got != backends.CleanKey(tt.key) {
			t.Errorf("chroot %q: keyOf(%q) = %q, want %q", tt.chroot, tt.path, got, backends.CleanKey(tt.key))
		}
	}
	s := &Store{}
	if !s.hidden("/", "zookeeper") || s.hidden("/app", "zookeeper") || s.hidden("/", "zoo") {
		t.Errorf("hidden: only /zookeeper at the absolute root is ZooKeeper's own")
	}
	if join("/", "a") != "/a" || join("/a", "b") != "/a/b" || parentOf("/a") != "/" || parentOf("/a/b") != "/a" || baseName("/a/b") != "b" {
		t.Errorf("path helpers")
	}
	// Chroots given as URL paths are cleaned; "/" means none.
	for url, want := range map[string]string{"zk://127.0.0.1:1": "", "zk://127.0.0.1:1/": "", "zk://127.0.0.1:1/a/b/": "/a/b", "zk://127.0.0.1:1//a": "/a"} {
		s, err := open(t, url, backends.Config{})
		if err != nil {
			t.Fatal(err)
		}
		if s.chroot != want {
			t.Errorf("%s: chroot %q, want %q", url, s.chroot, want)
		}
	}
}

func TestKeyRules(t *testing.T) {
	herald, confd := &Store{}, &Store{leaves: true}
	for _, tt := range []struct {
		val                 string
		children            bool
		wantHerald, wantCfd bool
	}{
		{"", false, true, true},  // empty leaf: a key, as in confd
		{"v", false, true, true}, // leaf
		{"v", true, true, false}, // intermediate with data: herald only
		{"", true, false, false}, // empty directory: never
		{" ", true, true, false}, // whitespace is data
	} {
		if got := herald.isKey(tt.val, tt.children); got != tt.wantHerald {
			t.Errorf("herald isKey(%q, children=%v) = %v", tt.val, tt.children, got)
		}
		if got := confd.isKey(tt.val, tt.children); got != tt.wantCfd {
			t.Errorf("keys=leaves isKey(%q, children=%v) = %v", tt.val, tt.children, got)
		}
	}
}

// newTestTree is a tree mirror with no server behind it, for the publishing logic.
func newTestTree(s *Store, prefix string) *tree {
	return &tree{
		s: s, key: prefix, path: s.serverPath(prefix),
		nodes: make(map[string]*znode),
		kv:    make(map[string]string),
		subs:  make(map[*sub]struct{}),
	}
}

func (t *tree) set(p, val string, kids ...string) {
	n := &znode{val: val}
	for _, k := range kids {
		if n.children == nil {
			n.children = map[string]struct{}{}
		}
		n.children[k] = struct{}{}
	}
	t.nodes[p] = n
}

func touch(ps ...string) map[string]struct{} {
	m := map[string]struct{}{}
	for _, p := range ps {
		m[p] = struct{}{}
	}
	return m
}

func newSub(target backends.Target, from uint64) *sub {
	return &sub{target: target, from: from, kick: make(chan struct{}, 1)}
}

// The mirror's changes become the key changes a cache needs: an intermediate znode's
// data is a key, a leaf that gets a child stops being one (unless it holds data), a
// directory that loses its last child becomes an empty-leaf key.
func TestPublishKeyChanges(t *testing.T) {
	s := &Store{chroot: "/c", log: slog.New(slog.DiscardHandler)}
	tr := newTestTree(s, "/app")
	tr.set("/c/app", "", "a", "dir")
	tr.set("/c/app/a", "1")
	tr.set("/c/app/dir", "", "b")
	tr.set("/c/app/dir/b", "2")
	tr.publish(touch("/c/app", "/c/app/a", "/c/app/dir", "/c/app/dir/b"), 10)
	if want := map[string]string{"/app/a": "1", "/app/dir/b": "2"}; !mapsEqual(tr.kv, want) {
		t.Fatalf("kv = %v, want %v", tr.kv, want)
	}
	sb := newSub(backends.PrefixTarget("/app"), 0)
	tr.loaded = true
	tr.attach(sb)
	ev, ok := sb.take(tr)
	if !ok || !ev.Full || !mapsEqual(ev.KVs, tr.kv) || ev.Revision != 10 {
		t.Fatalf("first event %+v, want Full with the state at 10", ev)
	}

	// Data on the directory; its child goes; /app/a gets a child.
	tr.nodes["/c/app/dir"].val = "dirdata"
	tr.publish(touch("/c/app/dir"), 11)
	delete(tr.nodes, "/c/app/dir/b")
	delete(tr.nodes["/c/app/dir"].children, "b")
	tr.nodes["/c/app/a"].val = ""
	tr.nodes["/c/app/a"].children = map[string]struct{}{"x": {}}
	tr.set("/c/app/a/x", "")
	tr.publish(touch("/c/app/dir/b", "/c/app/dir", "/c/app/a", "/c/app/a/x"), 12)
	ev, ok = sb.take(tr)
	if !ok || ev.Full || ev.Revision != 12 {
		t.Fatalf("event %+v, want incremental at 12", ev)
	}
	if want := map[string]string{"/app/dir": "dirdata", "/app/a/x": ""}; !mapsEqual(ev.KVs, want) {
		t.Errorf("upserts %v, want %v", ev.KVs, want)
	}
	if want := []string{"/app/a", "/app/dir/b"}; !slices.Equal(ev.Deleted, want) {
		t.Errorf("deleted %v, want %v", ev.Deleted, want)
	}
	// Nothing pending now; an unchanged value publishes nothing.
	tr.publish(touch("/c/app/dir"), 13)
	if _, ok := sb.take(tr); ok {
		t.Errorf("an event for a change that changed no key")
	}
}

// A subscriber that reads slower than changes come gets them merged: the last value of
// each key, deletions that cancel earlier upserts and the other way round.
func TestSubscriberMerging(t *testing.T) {
	s := &Store{log: slog.New(slog.DiscardHandler)}
	tr := newTestTree(s, "/p")
	tr.kv = map[string]string{"/p/a": "1"}
	tr.rev, tr.loaded = 5, true

	// From the revision the caller read at: no initial Full.
	quiet := newSub(backends.PrefixTarget("/p"), 5)
	tr.attach(quiet)
	if ev, ok := quiet.take(tr); ok {
		t.Errorf("initial event %+v for a subscriber already at revision 5", ev)
	}
	// From an older revision: the whole state.
	behind := newSub(backends.PrefixTarget("/p"), 4)
	tr.attach(behind)
	if ev, ok := behind.take(tr); !ok || !ev.Full {
		t.Errorf("subscriber behind the tree got %+v, want Full", ev)
	}

	tr.rev = 6
	quiet.offer(tr, map[string]string{"/p/a": "2", "/p/b": "x"}, nil)
	tr.rev = 7
	quiet.offer(tr, map[string]string{"/p/a": "3"}, []string{"/p/b"})
	tr.rev = 8
	quiet.offer(tr, map[string]string{"/p/b": "again"}, []string{"/p/c"})
	ev, ok := quiet.take(tr)
	if !ok || ev.Full || ev.Revision != 8 {
		t.Fatalf("merged event %+v", ev)
	}
	if want := map[string]string{"/p/a": "3", "/p/b": "again"}; !mapsEqual(ev.KVs, want) || !slices.Equal(ev.Deleted, []string{"/p/c"}) {
		t.Errorf("merged event KVs %v Deleted %v", ev.KVs, ev.Deleted)
	}
	// A Full pending absorbs later increments and stays Full.
	tr.kv = map[string]string{"/p/a": "3", "/p/z": "1"}
	quiet.offerFull(tr)
	quiet.offer(tr, map[string]string{"/p/y": "2"}, []string{"/p/z"})
	ev, _ = quiet.take(tr)
	if want := map[string]string{"/p/a": "3", "/p/y": "2"}; !ev.Full || !mapsEqual(ev.KVs, want) || len(ev.Deleted) != 0 {
		t.Errorf("Full then increments = %+v", ev)
	}
	select {
	case <-quiet.kick:
	default:
	}
	if _, ok := quiet.take(tr); ok {
		t.Errorf("event with nothing pending")
	}
}

// Service subscribers get the complete filtered list, only when it changed (except the
// Full after a re-read); malformed instances are skipped with a warning naming the key,
// once per value.
func TestServiceIndex(t *testing.T) {
	logs := &logBuf{}
	layout, _ := backends.ParseLayout("/services")
	s := &Store{log: slog.New(slog.NewTextHandler(logs, nil)), layout: layout}
	tr := newTestTree(s, "/services/web")
	tr.kv = map[string]string{
		"/services/web/a":          `{"address":"10.0.0.1","port":80,"tags":["x"]}`,
		"/services/web/b":          `{"address":"10.0.0.2","port":80,"status":"critical"}`,
		"/services/web/bad":        `{"address":`,
		"/services/web/10.0.0.3:8": ``,
		"/services/web/member_1":   `{"serviceEndpoint":{"host":"10.0.0.4","port":1},"status":"DEAD"}`,
	}
	tr.loaded, tr.rev = true, 3
	q := backends.ServiceQuery{Name: "web"}
	sb := newSub(backends.ServiceTarget(q), 0)
	tr.attach(sb)
	ev, ok := sb.take(tr)
	if !ok || !ev.Full || got(ev.Services) != "10.0.0.1:80,10.0.0.3:8" {
		t.Fatalf("first list %q (%+v)", got(ev.Services), ev)
	}
	for _, sv := range ev.Services {
		if sv.Backend != "zookeeper" {
			t.Errorf("Backend %q", sv.Backend)
		}
	}
	if n := strings.Count(logs.String(), "key=/services/web/bad"); n != 1 {
		t.Errorf("%d warnings naming /services/web/bad, want 1:\n%s", n, logs)
	}
	if strings.Contains(logs.String(), "member_1") {
		t.Errorf("a DEAD ServerSet member is not malformed: %s", logs)
	}

	anyStatus := newSub(backends.ServiceTarget(backends.ServiceQuery{Name: "web", Statuses: []string{"passing", "warning", "critical", "maintenance"}}), 0)
	tr.attach(anyStatus)
	if ev, _ := anyStatus.take(tr); got(ev.Services) != "10.0.0.1:80,10.0.0.2:80,10.0.0.3:8" {
		t.Errorf("any-status list %q", got(ev.Services))
	}

	// b recovers: the passing list changes. bad changes but stays bad: one more warning,
	// no event for a list that did not change.
	tr.rev = 4
	tr.publish2(map[string]string{"/services/web/b": `{"address":"10.0.0.2","port":80}`})
	if ev, ok := sb.take(tr); !ok || got(ev.Services) != "10.0.0.1:80,10.0.0.2:80,10.0.0.3:8" || ev.Revision != 4 {
		t.Errorf("after b recovered: %q %v", got(ev.Services), ok)
	}
	tr.publish2(map[string]string{"/services/web/bad": `{"port":`})
	if ev, ok := sb.take(tr); ok {
		t.Errorf("event %q for an unchanged list", got(ev.Services))
	}
	if n := strings.Count(logs.String(), "key=/services/web/bad"); n != 2 {
		t.Errorf("%d warnings naming /services/web/bad, want 2", n)
	}
	tr.mu.Lock()
	tr.rebuildIndexLocked()
	tr.mu.Unlock()
	if n := strings.Count(logs.String(), "key=/services/web/bad"); n != 2 {
		t.Errorf("re-read warned again about an unchanged bad value")
	}

	names := newSub(backends.Target{ServiceNames: true}, 0)
	tr.attach(names)
	if ev, _ := names.take(tr); len(ev.Names) != 1 || ev.Names[0].Name != "web" || !slices.Equal(ev.Names[0].Tags, []string{"x"}) {
		t.Errorf("catalog %+v", ev.Names)
	}
}

// publish2 applies key changes the way publish does after a re-read.
func (t *tree) publish2(upserts map[string]string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, v := range upserts {
		t.kv[k] = v
		t.indexLocked(k, v)
	}
	for sb := range t.subs {
		sb.offer(t, upserts, nil)
	}
}

func got(ss []backends.Service) string {
	var out []string
	for _, s := range ss {
		out = append(out, s.HostPort())
	}
	return strings.Join(out, ",")
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// The store-wide watch table: a kind is set once per session, given back when its
// request fails, cleared by the event that consumes it, forgotten with the session.
func TestWatchTable(t *testing.T) {
	s := &Store{watches: map[string]*armed{}, wsess: 7}
	if need, sess := s.claim("/a", wData); !need || sess != 7 {
		t.Fatalf("first claim = %v %d", need, sess)
	}
	if need, _ := s.claim("/a", wData); need {
		t.Errorf("a data watch was set twice")
	}
	if need, _ := s.claim("/a", wChild); !need {
		t.Errorf("child watch refused: kinds are separate")
	}
	s.disarm("/a", 3) // EventNodeDataChanged
	if need, _ := s.claim("/a", wData); !need {
		t.Errorf("data watch not set again after it fired")
	}
	s.unclaim("/a", wData, 7)
	if need, _ := s.claim("/a", wData); !need {
		t.Errorf("a failed request's claim was not given back")
	}
	s.disarm("/a", 2) // EventNodeDeleted clears every kind
	if s.watchCount() != 0 {
		t.Errorf("%d entries after the znode was deleted", s.watchCount())
	}
	s.claim("/b", wExist)
	s.wsess = 8 // a new session: old watches are gone
	if need, sess := s.claim("/b", wExist); !need || sess != 8 {
		t.Errorf("watch of the old session counted as set")
	}
}

func TestHostListRoundRobin(t *testing.T) {
	h := &hostList{}
	_ = h.Init([]string{"a:1", "b:1", "c:1"})
	var seen []string
	retries := 0
	for range 6 {
		s, retry := h.Next()
		seen = append(seen, s)
		if retry {
			retries++
		}
	}
	slices.Sort(seen)
	if !slices.Equal(seen, []string{"a:1", "a:1", "b:1", "b:1", "c:1", "c:1"}) {
		t.Errorf("two rounds gave %v", seen)
	}
	if retries != 1 {
		t.Errorf("%d retryStart signals in two rounds without a connection, want 1", retries)
	}
	h.Connected()
	if _, retry := h.Next(); retry {
		t.Errorf("retryStart right after a connection")
	}
}

// A hung server that accepts TCP must not hold the handshake for the library's seven
// session timeouts: the first deadline is capped; later ones (the session's) are not.
func TestHandshakeDeadlineCapped(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &handshakeConn{Conn: a, limit: 100 * time.Millisecond}
	begin := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(time.Hour))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read from a silent peer succeeded")
	}
	if d := time.Since(begin); d > time.Second {
		t.Errorf("handshake read waited %v, want about 100ms", d)
	}
	begin = time.Now()
	_ = c.SetReadDeadline(time.Now().Add(400 * time.Millisecond))
	_, _ = c.Read(make([]byte, 1))
	if d := time.Since(begin); d < 350*time.Millisecond {
		t.Errorf("a later deadline was capped too: %v", d)
	}
}

func TestBackoffBounded(t *testing.T) {
	var d time.Duration
	bo := newBackoff()
	for range 20 {
		d = bo.Next()
		if d <= 0 || d > maxBackoff {
			t.Fatalf("backoff %v out of (0, %v]", d, maxBackoff)
		}
	}
	if d < maxBackoff/2 {
		t.Errorf("backoff stays at %v, want it to reach about %v", d, maxBackoff)
	}
}

func TestCallHonoursContext(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	begin := time.Now()
	_, err := call(ctx, func() (int, error) { <-release; return 1, nil })
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(begin) > time.Second {
		t.Errorf("call = %v after %v", err, time.Since(begin))
	}
	if v, err := call(context.Background(), func() (int, error) { return 42, nil }); v != 42 || err != nil {
		t.Errorf("call = %v, %v", v, err)
	}
}

// A store that cannot reach ZooKeeper warns at once, then again every warnEvery while
// that lasts, without waiting for a first connection (which may never come).
func TestUnreachableWarnsAtOnceAndPeriodically(t *testing.T) {
	dead := deadAddr(t)
	logs := &logBuf{}
	begin := time.Now()
	s, err := open(t, "zookeeper://"+dead, backends.Config{
		DialTimeout: 200 * time.Millisecond,
		Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.warnEvery = 1500 * time.Millisecond
	s.mu.Unlock()
	warnings := func() int { return strings.Count(logs.String(), "zookeeper unreachable") }
	for warnings() < 1 {
		if time.Since(begin) > 3*time.Second {
			t.Fatalf("no warning %v after starting with the server down; log:\n%s", time.Since(begin), logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	first := time.Since(begin)
	if !strings.Contains(logs.String(), dead) || !strings.Contains(logs.String(), "connection refused") {
		t.Errorf("the warning names neither the server nor the cause:\n%s", logs)
	}
	// The library retries about once a second; the second warning comes one warnEvery
	// later, not at each retry.
	for warnings() < 2 {
		if time.Since(begin) > 8*time.Second {
			t.Fatalf("no second warning within 8 s; log:\n%s", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	second := time.Since(begin)
	if gap := second - first; gap < 1500*time.Millisecond {
		t.Errorf("second warning %v after the first; want at least warnEvery (1.5s)", gap)
	}
	t.Logf("warnings at %v and %v", first.Round(time.Millisecond), second.Round(time.Millisecond))
}
