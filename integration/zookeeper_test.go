package integration

// Tests of the ZooKeeper backend against real ZooKeeper servers (Debian's zookeeper 3.8,
// started by the harness). Helpers here are prefixed with "zk".

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/backends/zookeeper"
	"github.com/heraldhq/herald/integration/harness"
)

// ---------------------------------------------------------------------------
// helpers

func zkCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// zkLogs collects a store's log lines, to check warnings and that no secret shows.
type zkLogs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *zkLogs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *zkLogs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// zkOpen opens a store on servers (with an optional chroot and URL options) through the
// same URL parsing that --backend uses.
func zkOpen(t testing.TB, servers []string, suffix string, mod func(*backends.Config)) (*zookeeper.Store, *zkLogs) {
	t.Helper()
	logs := &zkLogs{}
	cfg := backends.Config{
		URL:            "zookeeper://" + strings.Join(servers, ",") + suffix,
		SessionTimeout: 4 * time.Second,
		DialTimeout:    time.Second,
		Logger:         slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&cfg)
	}
	ep, err := backends.ParseURL(cfg.URL)
	if err != nil {
		t.Fatalf("parse %s: %v", cfg.URL, err)
	}
	s, err := zookeeper.New(cfg, ep)
	if err != nil {
		t.Fatalf("zookeeper.New(%s): %v", cfg.URL, err)
	}
	t.Cleanup(func() { s.Close() })
	return s, logs
}

type zkNopLogger struct{}

func (zkNopLogger) Printf(string, ...any) {}

// zkClient is a plain go-zookeeper client, standing in for the other writers (Curator,
// Finagle, zc.zk, scripts). It waits for its session.
func zkClient(t testing.TB, servers []string, timeout time.Duration) *zk.Conn {
	t.Helper()
	c, events, err := zk.Connect(servers, timeout, zk.WithLogger(zkNopLogger{}))
	if err != nil {
		t.Fatalf("zk.Connect: %v", err)
	}
	t.Cleanup(c.Close)
	deadline := time.After(20 * time.Second)
	for {
		select {
		case ev := <-events:
			if ev.State == zk.StateHasSession {
				// The library drops events nobody reads; nothing else is needed.
				return c
			}
		case <-deadline:
			t.Fatalf("zk client: no session from %v within 20s", servers)
		}
	}
}

// zkRetry runs op until it succeeds; the writer side of a test rides out the same
// outages the store under test does.
func zkRetry(t testing.TB, what string, op func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := op()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// zkPut creates (with parents) or sets a znode.
func zkPut(t testing.TB, c *zk.Conn, p, v string) {
	t.Helper()
	zkRetry(t, "put "+p, func() error { return zkPutErr(c, p, []byte(v), 0, zk.WorldACL(zk.PermAll)) })
}

func zkPutErr(c *zk.Conn, p string, v []byte, flags int32, acl []zk.ACL) error {
	if _, err := c.Set(p, v, -1); err == nil {
		return nil
	} else if !errors.Is(err, zk.ErrNoNode) {
		return err
	}
	if err := zkMkdirs(c, zkParentOf(p)); err != nil {
		return err
	}
	_, err := c.Create(p, v, flags, acl)
	return err
}

// zkMkdirs creates dir and its ancestors as empty persistent znodes.
func zkMkdirs(c *zk.Conn, dir string) error {
	parts := strings.Split(strings.Trim(dir, "/"), "/")
	for i := 1; i <= len(parts); i++ {
		d := "/" + strings.Join(parts[:i], "/")
		if d == "/" {
			continue
		}
		if _, err := c.Create(d, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			return err
		}
	}
	return nil
}

// zkDelete deletes a znode and everything below it.
func zkDelete(t testing.TB, c *zk.Conn, p string) {
	t.Helper()
	zkRetry(t, "delete "+p, func() error { return zkDeleteErr(c, p) })
}

func zkDeleteErr(c *zk.Conn, p string) error {
	kids, _, err := c.Children(p)
	if errors.Is(err, zk.ErrNoNode) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, k := range kids {
		if err := zkDeleteErr(c, strings.TrimSuffix(p, "/")+"/"+k); err != nil {
			return err
		}
	}
	if err := c.Delete(p, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
		return err
	}
	return nil
}

// zkWatch runs Store.Watch in the background and collects its events.
type zkWatch struct {
	events chan backends.Event
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func zkStartWatch(t testing.TB, s *zookeeper.Store, tgt backends.Target, from uint64) *zkWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &zkWatch{events: make(chan backends.Event, 1<<16), cancel: cancel, done: make(chan error, 1)}
	go func() { w.done <- s.Watch(ctx, tgt, from, w.events) }()
	t.Cleanup(func() { w.stop(t) })
	return w
}

// stop ends the watch and checks that Watch returned ctx's error.
func (w *zkWatch) stop(t testing.TB) {
	t.Helper()
	w.once.Do(func() {
		w.cancel()
		select {
		case err := <-w.done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Watch returned %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Watch did not return within 10s of its context ending")
		}
	})
}

func (w *zkWatch) next(t testing.TB, d time.Duration, what string) backends.Event {
	t.Helper()
	select {
	case ev := <-w.events:
		return ev
	case err := <-w.done:
		t.Fatalf("waiting for %s: Watch returned %v", what, err)
	case <-time.After(d):
		t.Fatalf("no event within %v: %s", d, what)
	}
	return backends.Event{}
}

func (w *zkWatch) none(t testing.TB, d time.Duration, what string) {
	t.Helper()
	select {
	case ev := <-w.events:
		t.Fatalf("%s: unexpected event %+v", what, ev)
	case <-time.After(d):
	}
}

// zkView is what a cache fed by one prefix watch holds.
type zkView map[string]string

func (v zkView) apply(ev backends.Event) {
	if ev.Full {
		clear(v)
	}
	maps.Copy(v, ev.KVs)
	for _, k := range ev.Deleted {
		delete(v, k)
	}
}

// zkFollow applies events until the view equals want, and returns the events seen.
func zkFollow(t testing.TB, w *zkWatch, view, want zkView, d time.Duration) []backends.Event {
	t.Helper()
	var evs []backends.Event
	deadline := time.After(d)
	for !maps.Equal(view, want) {
		select {
		case ev := <-w.events:
			evs = append(evs, ev)
			view.apply(ev)
		case err := <-w.done:
			t.Fatalf("Watch returned %v", err)
		case <-deadline:
			t.Fatalf("after %v and %d events the view is\n%v\nwant\n%v", d, len(evs), zkShow(view), zkShow(want))
		}
	}
	return evs
}

func zkShow(v map[string]string) string {
	keys := slices.Sorted(maps.Keys(v))
	var b strings.Builder
	for i, k := range keys {
		if i == 20 {
			fmt.Fprintf(&b, "  ... (%d keys)\n", len(keys))
			break
		}
		fmt.Fprintf(&b, "  %s = %q\n", k, v[k])
	}
	return b.String()
}

func zkGet(t testing.TB, s *zookeeper.Store, prefixes ...string) (zkView, uint64) {
	t.Helper()
	kvs, rev, err := s.Get(zkCtx(t, 20*time.Second), prefixes)
	if err != nil {
		t.Fatalf("Get %v: %v", prefixes, err)
	}
	return kvs, rev
}

// zkServerWatches is the number of watches the server holds (mntr's zk_watch_count):
// one per znode and kind per connection, however often a client asked for it.
func zkServerWatches(t testing.TB, addr string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := harness.ZooKeeperFourLetter(ctx, addr, "mntr")
	if err != nil {
		t.Fatalf("mntr %s: %v", addr, err)
	}
	m := regexp.MustCompile(`(?m)^zk_watch_count\s+(\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("mntr %s: no zk_watch_count in %q", addr, out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func zkEventually(t testing.TB, d time.Duration, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, d, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func zkUp(t testing.TB, s *zookeeper.Store, d time.Duration) {
	t.Helper()
	zkEventually(t, d, "store connected", func() error {
		if st := s.State(); st.Conn != backends.Up {
			return fmt.Errorf("state %v (%v)", st.Conn, st.Err)
		}
		return nil
	})
}

func zkIDs(ss []backends.Service) string {
	var ids []string
	for _, s := range ss {
		ids = append(ids, s.ID)
	}
	return strings.Join(ids, ",")
}

// ---------------------------------------------------------------------------
// reads

func TestZooKeeperGetKeysPrefixesAndChroot(t *testing.T) {
	z := harness.StartZooKeeper(t)
	c := zkClient(t, z.Servers, 10*time.Second)
	// Written through a plain client, below the chroot the store is given.
	zkPut(t, c, "/herald/app/db", "dbconf") // intermediate znode holding data
	zkPut(t, c, "/herald/app/db/host", "10.0.0.1")
	zkPut(t, c, "/herald/app/db/port", "5432")
	zkPut(t, c, "/herald/app/empty", "")         // empty leaf: a key, value ""
	zkPut(t, c, "/herald/app/dir/sub/leaf", "x") // empty intermediates: not keys
	zkPut(t, c, "/herald/apple/x", "not under /app")
	zkPut(t, c, "/outside/chroot", "never seen")

	s, _ := zkOpen(t, z.Servers, "/herald", nil)
	got, rev := zkGet(t, s, "/app")
	want := map[string]string{
		"/app/db":           "dbconf",
		"/app/db/host":      "10.0.0.1",
		"/app/db/port":      "5432",
		"/app/empty":        "",
		"/app/dir/sub/leaf": "x",
	}
	if !maps.Equal(got, want) {
		t.Fatalf("Get /app =\n%v\nwant\n%v", zkShow(got), zkShow(want))
	}
	if rev == 0 {
		t.Errorf("revision 0; want the highest zxid read")
	}

	// Several prefixes, overlapping and missing ones, in one read.
	got, _ = zkGet(t, s, "/app/db", "/app/db/host", "/apple", "/missing/prefix")
	want = map[string]string{"/app/db": "dbconf", "/app/db/host": "10.0.0.1", "/app/db/port": "5432", "/apple/x": "not under /app"}
	if !maps.Equal(got, want) {
		t.Fatalf("Get of several prefixes =\n%v\nwant\n%v", zkShow(got), zkShow(want))
	}
	// A key is its own prefix.
	got, _ = zkGet(t, s, "/app/db/port")
	if !maps.Equal(got, map[string]string{"/app/db/port": "5432"}) {
		t.Fatalf("Get /app/db/port = %v", got)
	}
	// The whole chroot, and nothing outside it.
	got, _ = zkGet(t, s, "/")
	if len(got) != 6 || got["/apple/x"] == "" {
		t.Fatalf("Get / under the chroot =\n%v", zkShow(got))
	}

	// confd's rule: only leaves are keys.
	leaves, _ := zkOpen(t, z.Servers, "/herald?keys=leaves", nil)
	got, _ = zkGet(t, leaves, "/app")
	delete(want, "/app/db")
	want = map[string]string{"/app/db/host": "10.0.0.1", "/app/db/port": "5432", "/app/empty": "", "/app/dir/sub/leaf": "x"}
	if !maps.Equal(got, want) {
		t.Fatalf("keys=leaves: Get /app =\n%v\nwant\n%v", zkShow(got), zkShow(want))
	}

	// Without a chroot, ZooKeeper's own /zookeeper subtree is not data.
	root, _ := zkOpen(t, z.Servers, "", nil)
	got, _ = zkGet(t, root, "/")
	for k := range got {
		if backends.UnderPrefix(k, "/zookeeper") {
			t.Errorf("Get / lists ZooKeeper's internal %s", k)
		}
	}
	if got["/outside/chroot"] != "never seen" || got["/herald/app/db"] != "dbconf" {
		t.Errorf("Get / without chroot =\n%v", zkShow(got))
	}

	// Bad URL options are refused at New, naming the option.
	for _, raw := range []string{"?keys=all", "?sessiontimeout=3"} {
		ep, err := backends.ParseURL("zookeeper://" + z.Servers[0] + raw)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := zookeeper.New(backends.Config{}, ep); err == nil || !strings.Contains(err.Error(), strings.Split(strings.TrimPrefix(raw, "?"), "=")[0]) {
			t.Errorf("New(%s) = %v, want an error naming the option", raw, err)
		}
	}
}

// Get of several prefixes returns them as they were at one moment: a writer changes two
// znodes together in one multi-op, and no read may ever see them apart.
func TestZooKeeperGetIsOneMomentUnderWrites(t *testing.T) {
	z := harness.StartZooKeeper(t)
	c := zkClient(t, z.Servers, 10*time.Second)
	zkPut(t, c, "/inv/a/n", "0")
	zkPut(t, c, "/inv/b/n", "0")
	for i := range 50 {
		zkPut(t, c, fmt.Sprintf("/inv/a/pad/%02d", i), strings.Repeat("x", 100))
	}
	s, _ := zkOpen(t, z.Servers, "", nil)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var writes atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; ctx.Err() == nil; i++ {
			v := []byte(strconv.Itoa(i))
			if _, err := c.Multi(&zk.SetDataRequest{Path: "/inv/a/n", Data: v, Version: -1}, &zk.SetDataRequest{Path: "/inv/b/n", Data: v, Version: -1}); err != nil {
				return
			}
			writes.Add(1)
			// A few hundred atomic updates a second: far more than configuration sees.
			time.Sleep(2 * time.Millisecond)
		}
	}()
	reads, failures := 0, 0
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		got, _, err := s.Get(zkCtx(t, 10*time.Second), []string{"/inv/b", "/inv/a"})
		if err != nil {
			// Allowed under a write storm, but it must say why.
			if !strings.Contains(err.Error(), "kept changing") {
				t.Fatalf("Get: %v", err)
			}
			failures++
			continue
		}
		reads++
		if got["/inv/a/n"] != got["/inv/b/n"] {
			t.Fatalf("torn read: /inv/a/n=%s /inv/b/n=%s", got["/inv/a/n"], got["/inv/b/n"])
		}
	}
	cancel()
	wg.Wait()
	t.Logf("%d consistent reads (%d gave up after retries) during %d multi-op writes", reads, failures, writes.Load())
	if reads < 5 || reads < failures || writes.Load() < 300 {
		t.Fatalf("reads=%d writes=%d: the test did not exercise concurrent reads and writes", reads, writes.Load())
	}

	// A storm on exactly the znodes being read, as fast as the server takes it: there
	// may be no quiet moment at all. Get then gives up after its bounded re-reads, saying
	// so; it never hangs and never returns a torn view.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; ctx.Err() == nil; i++ {
				v := []byte(strconv.Itoa(i))
				if _, err := c.Multi(&zk.SetDataRequest{Path: "/inv/a/n", Data: v, Version: -1}, &zk.SetDataRequest{Path: "/inv/b/n", Data: v, Version: -1}); err != nil {
					return
				}
			}
		}()
	}
	reads, failures = 0, 0
	for range 5 {
		begin := time.Now()
		got, _, err := s.Get(zkCtx(t, 10*time.Second), []string{"/inv/a", "/inv/b"})
		if d := time.Since(begin); d > 3*time.Second {
			t.Errorf("Get under a storm took %v", d)
		}
		switch {
		case errors.Is(err, zookeeper.ErrKeptChanging):
			failures++
			if !strings.Contains(err.Error(), "/inv/a") || !strings.Contains(err.Error(), z.Servers[0]) {
				t.Errorf("error %q does not name the prefixes and the server", err)
			}
		case err != nil:
			t.Fatalf("Get under a storm: %v", err)
		case got["/inv/a/n"] != got["/inv/b/n"]:
			t.Fatalf("torn read under a storm: /inv/a/n=%s /inv/b/n=%s", got["/inv/a/n"], got["/inv/b/n"])
		default:
			reads++
		}
	}
	cancel()
	wg.Wait()
	t.Logf("under an unthrottled storm: %d consistent reads, %d gave up", reads, failures)
}

// A watch re-reads znode by znode (one-shot watches), yet every state it publishes is
// one the registry had: each transaction here adds a child under /inv/a and sets
// /inv/b/n to the number of children, so a child list read before a transaction and a
// value read after it would show the mismatch.
func TestZooKeeperWatchPublishesOnlyWholeStates(t *testing.T) {
	z := harness.StartZooKeeper(t)
	c := zkClient(t, z.Servers, 10*time.Second)
	zkPut(t, c, "/inv/a/c0000", "x")
	zkPut(t, c, "/inv/b/n", "1")
	s, _ := zkOpen(t, z.Servers, "", nil)
	view, rev := zkGet(t, s, "/inv")
	w := zkStartWatch(t, s, backends.PrefixTarget("/inv"), rev)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	writes := make(chan int, 1)
	go func() {
		i := 1
		defer func() { writes <- i }()
		for end := time.Now().Add(3 * time.Second); time.Now().Before(end) && ctx.Err() == nil; i++ {
			if _, err := c.Multi(
				&zk.CreateRequest{Path: fmt.Sprintf("/inv/a/c%04d", i), Data: []byte("x"), Acl: zk.WorldACL(zk.PermAll)},
				&zk.SetDataRequest{Path: "/inv/b/n", Data: []byte(strconv.Itoa(i + 1)), Version: -1},
			); err != nil {
				t.Errorf("multi %d: %v", i, err)
				return
			}
			// Now and then a pause, so that quiet moments exist for the watch to publish in.
			if i%20 == 0 {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
	check := func(when string) {
		t.Helper()
		children := 0
		for k := range view {
			if strings.HasPrefix(k, "/inv/a/") {
				children++
			}
		}
		if view["/inv/b/n"] != strconv.Itoa(children) {
			t.Fatalf("%s: published a state the registry never had: %d children under /inv/a, /inv/b/n = %s", when, children, view["/inv/b/n"])
		}
	}
	published := 0
	var total int
	for done := false; !done; {
		select {
		case ev := <-w.events:
			view.apply(ev)
			published++
			check(fmt.Sprintf("event %d", published))
		case total = <-writes:
			done = true
		}
	}
	want, _ := zkGet(t, s, "/inv")
	zkFollow(t, w, view, want, 10*time.Second)
	check("final")
	t.Logf("%d transactions, %d events published, each a whole state", total-1, published)
	if total < 200 || published < 5 {
		t.Fatalf("%d transactions, %d events: the test did not exercise a watch under writes", total-1, published)
	}
}

// New never blocks or fails when ZooKeeper is down; the first read fails after its
// context's deadline naming the servers and the cause, and the store connects by itself
// once a server comes up.
func TestZooKeeperDownAtStartThenUp(t *testing.T) {
	dead := "127.0.0.1:" + strconv.Itoa(harness.FreePort(t))
	begin := time.Now()
	s, _ := zkOpen(t, []string{dead}, "", nil)
	if d := time.Since(begin); d > 200*time.Millisecond {
		t.Errorf("New took %v with the server down", d)
	}
	if st := s.State(); st.Conn == backends.Up {
		t.Errorf("state %v with the server down", st.Conn)
	}
	begin = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	_, _, err := s.Get(ctx, []string{"/x"})
	cancel()
	d := time.Since(begin)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), dead) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Get with the server down = %v; want a deadline error naming %s and the cause", err, dead)
	}
	if d < 1400*time.Millisecond || d > 3*time.Second {
		t.Errorf("Get returned after %v, want about its 1.5s deadline", d)
	}
	if st := s.State(); st.Conn != backends.Down || st.Err == nil || !strings.Contains(st.Err.Error(), "connection refused") {
		t.Errorf("State = %+v, want down with the dial error", st)
	}
	// A watch started while down keeps waiting without error.
	w := zkStartWatch(t, s, backends.PrefixTarget("/x"), 0)
	w.none(t, 300*time.Millisecond, "watch while down")

	// The real server comes up; the store, given it and the dead address, uses it.
	z := harness.StartZooKeeper(t)
	c := zkClient(t, z.Servers, 10*time.Second)
	zkPut(t, c, "/x/k", "v")
	s2, _ := zkOpen(t, []string{dead, z.Servers[0]}, "", nil)
	got, _ := zkGet(t, s2, "/x")
	if got["/x/k"] != "v" {
		t.Fatalf("Get via the live member = %v", got)
	}

	// Stop it, open a store while it is down, then bring it back on the same port.
	z.Members[0].Stop(t)
	s3, _ := zkOpen(t, z.Servers, "", nil)
	w3 := zkStartWatch(t, s3, backends.PrefixTarget("/x"), 0)
	time.Sleep(500 * time.Millisecond)
	z.Members[0].Restart(t)
	ev := w3.next(t, 20*time.Second, "initial state after the server came up")
	if !ev.Full || ev.KVs["/x/k"] != "v" {
		t.Fatalf("first event after the server came up = %+v, want Full with /x/k", ev)
	}
	zkUp(t, s3, 10*time.Second)
}

// ---------------------------------------------------------------------------
// watches

func TestZooKeeperWatchPrefix(t *testing.T) {
	z := harness.StartZooKeeper(t)
	c := zkClient(t, z.Servers, 10*time.Second)
	zkPut(t, c, "/app/a", "1")
	zkPut(t, c, "/app/dir/b", "2")
	zkPut(t, c, "/apple", "elsewhere")
	s, _ := zkOpen(t, z.Servers, "", nil)

	view, rev := zkGet(t, s, "/app")
	w := zkStartWatch(t, s, backends.PrefixTarget("/app"), rev)
	// Nothing changed since the read: no event, not even a Full.
	w.none(t, 500*time.Millisecond, "watch from the revision just read")

	check := func(what string, change func()) {
		t.Helper()
		change()
		want, _ := zkGet(t, s, "/app")
		evs := zkFollow(t, w, view, want, 10*time.Second)
		for _, ev := range evs {
			if ev.Full {
				t.Errorf("%s: Full event without a reconnect: %+v", what, ev)
			}
			for k := range ev.KVs {
				if !backends.UnderPrefix(k, "/app") {
					t.Errorf("%s: event carries %s, outside /app", what, k)
				}
			}
		}
	}
	check("set", func() { zkPut(t, c, "/app/a", "1b") })
	check("create deep", func() { zkPut(t, c, "/app/new/deep/k", "3") })
	check("data on an intermediate znode", func() { zkPut(t, c, "/app/dir", "dirdata") })
	check("intermediate loses its children: becomes a leaf key", func() { zkDelete(t, c, "/app/dir/b") })
	check("empty leaf gets a child: stops being a key", func() {
		zkPut(t, c, "/app/leaf", "")
		zkPut(t, c, "/app/leaf/child", "c")
	})
	check("delete subtree", func() { zkDelete(t, c, "/app/new") })
	check("outside the prefix", func() { zkPut(t, c, "/apple", "changed") })
	check("many at once", func() {
		for i := range 30 {
			zkPut(t, c, fmt.Sprintf("/app/many/%02d", i), strconv.Itoa(i))
		}
	})
	check("delete the prefix itself", func() { zkDelete(t, c, "/app") })
	check("re-create the prefix", func() { zkPut(t, c, "/app/again", "yes") })
	w.none(t, 300*time.Millisecond, "after the last change")

	// A watch from revision 0 starts with the full state.
	w2 := zkStartWatch(t, s, backends.PrefixTarget("/app"), 0)
	ev := w2.next(t, 10*time.Second, "initial Full")
	if !ev.Full || ev.KVs["/app/again"] != "yes" || ev.Revision == 0 {
		t.Fatalf("initial event = %+v, want Full with the state and a revision", ev)
	}
	// A watch on a prefix that does not exist yet reports its creation.
	w3 := zkStartWatch(t, s, backends.PrefixTarget("/later/on"), 0)
	ev = w3.next(t, 10*time.Second, "initial Full of a missing prefix")
	if !ev.Full || len(ev.KVs) != 0 {
		t.Fatalf("initial event of a missing prefix = %+v", ev)
	}
	// (The writer creates /later/on before its child: for a moment it is an empty leaf,
	// hence a key, and the watch may report that on the way.)
	zkPut(t, c, "/later/on/k", "v")
	zkFollow(t, w3, zkView{}, zkView{"/later/on/k": "v"}, 10*time.Second)
}

// Many Watch calls on one prefix share one mirror: the store adds one goroutine for
// the prefix, whatever the number of subscribers, and every one of them gets each
// change. When they stop, everything the store started for them is gone.
func TestZooKeeperWatchSharedPerPrefixAndNoLeak(t *testing.T) {
	z := harness.StartZooKeeper(t)
	c := zkClient(t, z.Servers, 10*time.Second)
	for i := range 200 {
		zkPut(t, c, fmt.Sprintf("/shared/%03d", i), "0")
	}
	owned := goroutineScope(t)
	s, _ := zkOpen(t, z.Servers, "", nil)
	zkGet(t, s, "/shared")
	time.Sleep(200 * time.Millisecond)
	before := owned()

	const n = 40
	ws := make([]*zkWatch, n)
	for i := range ws {
		ws[i] = zkStartWatch(t, s, backends.PrefixTarget("/shared"), 0)
	}
	for i, w := range ws {
		if ev := w.next(t, 10*time.Second, "initial Full"); !ev.Full || len(ev.KVs) != 200 {
			t.Fatalf("watch %d: initial event has %d keys, full=%v", i, len(ev.KVs), ev.Full)
		}
	}
	time.Sleep(300 * time.Millisecond)
	during := owned()
	// n Watch goroutines of the test, plus one for the prefix.
	if extra := during - before - n; extra > 3 {
		t.Errorf("%d goroutines for %d watches on one prefix: %d more than one per Watch call", during-before, n, extra)
	}
	// One data and one child watch per znode, whatever the number of subscribers.
	if n := zkServerWatches(t, z.Servers[0]); n != 2*201 {
		t.Errorf("server holds %d watches for 201 znodes watched by %d subscribers, want %d", n, len(ws), 2*201)
	}
	zkPut(t, c, "/shared/007", "changed")
	for i, w := range ws {
		ev := w.next(t, 10*time.Second, "the change")
		if ev.Full || ev.KVs["/shared/007"] != "changed" || len(ev.KVs) != 1 {
			t.Fatalf("watch %d: event %+v, want exactly the one change", i, ev)
		}
	}
	for _, w := range ws {
		w.stop(t)
	}
	waitGoroutines(t, owned, before, "after every watch stopped")
	s.Close()
	waitGoroutines(t, owned, 1, "after the store closed")
}

// 10,000 changes through one watch: every final value arrives, and neither the
// goroutine count nor the heap grows with the number of changes.
func TestZooKeeperWatch10000ChangesStayFlat(t *testing.T) {
	z := harness.StartZooKeeper(t)
	c := zkClient(t, z.Servers, 10*time.Second)
	const keys, changes = 100, 10000
	for i := range keys {
		zkPut(t, c, fmt.Sprintf("/flat/%03d", i), "0")
	}
	s, _ := zkOpen(t, z.Servers, "", nil)
	view, rev := zkGet(t, s, "/flat")
	w := zkStartWatch(t, s, backends.PrefixTarget("/flat"), rev)

	churn := func(from, to int) zkView {
		want := maps.Clone(view)
		// Pipelined writes: the writer never waits for the watch.
		var wg sync.WaitGroup
		sem := make(chan struct{}, 16)
		for i := from; i < to; i++ {
			k := fmt.Sprintf("/flat/%03d", i%keys)
			want[k] = strconv.Itoa(i)
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				zkRetry(t, "set "+k, func() error { _, err := c.Set(k, []byte(strconv.Itoa(i)), -1); return err })
			}()
		}
		wg.Wait()
		// Concurrent sets of one key may land in any order: the truth is the server's.
		got, _ := zkGet(t, s, "/flat")
		return got
	}
	measure := func() (int, uint64) {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return runtime.NumGoroutine(), ms.HeapAlloc
	}

	// follow applies events until the view is want, keeping none of them.
	follow := func(want zkView, fullOK bool) (events int) {
		deadline := time.After(60 * time.Second)
		for !maps.Equal(view, want) {
			select {
			case ev := <-w.events:
				events++
				if ev.Full && !fullOK {
					t.Fatalf("Full event without a reconnect")
				}
				view.apply(ev)
			case <-deadline:
				t.Fatalf("after %d events the view is\n%v\nwant\n%v", events, zkShow(view), zkShow(want))
			}
		}
		return events
	}

	// Warm-up. The watch may still be reading when the writes begin; it then starts
	// with a Full event.
	follow(churn(0, 1000), true)
	time.Sleep(200 * time.Millisecond)
	g0, h0 := measure()
	var gs [2]int
	var hs [2]uint64
	for round := range 2 {
		begin := time.Now()
		events := follow(churn(1000+round*changes, 1000+(round+1)*changes), false)
		took := time.Since(begin)
		time.Sleep(200 * time.Millisecond)
		gs[round], hs[round] = measure()
		t.Logf("round %d: %d changes to %d keys applied in %v through %d events; goroutines %d -> %d; heap %.2f MiB -> %.2f MiB",
			round+1, changes, keys, took.Round(time.Millisecond), events, g0, gs[round], float64(h0)/(1<<20), float64(hs[round])/(1<<20))
		// Every znode is still watched: each fired watch was set again, once.
		if n := zkServerWatches(t, z.Servers[0]); n != 2*(keys+1) {
			t.Errorf("server holds %d watches after %d changes, want %d", n, changes, 2*(keys+1))
		}
	}
	if gs[0] > g0+2 || gs[1] > g0+2 {
		t.Errorf("goroutines grew: %d, then %d and %d after each 10,000 changes", g0, gs[0], gs[1])
	}
	if hs[0] > h0+2<<20 || hs[1] > hs[0]+1<<20 {
		t.Errorf("heap grew: %d, then %d and %d bytes after each 10,000 changes", h0, hs[0], hs[1])
	}
}

// ---------------------------------------------------------------------------
// connection loss

// A 3-member ensemble: the member the store uses is killed while updates flow; the
// store moves to another member with its session, and the watch delivers every final
// value, never going back to an older one.
func TestZooKeeperEnsembleMemberKilledWhileUpdatesFlow(t *testing.T) {
	z := harness.StartZooKeeperEnsemble(t, 3)
	c := zkClient(t, z.Servers, 10*time.Second)
	zkPut(t, c, "/flow/n", "0")
	zkPut(t, c, "/flow/other", "start")
	s, logs := zkOpen(t, z.Servers, "", nil)
	view, rev := zkGet(t, s, "/flow")
	w := zkStartWatch(t, s, backends.PrefixTarget("/flow"), rev)
	zkUp(t, s, 10*time.Second)
	// Once this change arrives the watch is armed: any Full from now on is a re-read.
	zkPut(t, c, "/flow/other", "x")
	zkFollow(t, w, view, zkView{"/flow/n": "0", "/flow/other": "x"}, 10*time.Second)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var last atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := int64(1); ctx.Err() == nil; i++ {
			for ctx.Err() == nil {
				if _, err := c.Set("/flow/n", []byte(strconv.FormatInt(i, 10)), -1); err == nil {
					last.Store(i)
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()

	seen := int64(0)
	fulls := 0
	follow := func(until time.Time) {
		for time.Now().Before(until) {
			select {
			case ev := <-w.events:
				if ev.Full {
					fulls++
				}
				view.apply(ev)
				if v, ok := view["/flow/n"]; ok {
					n, _ := strconv.ParseInt(v, 10, 64)
					if n < seen {
						t.Fatalf("the watch went back from %d to %d (event %+v)", seen, n, ev)
					}
					seen = n
				}
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	follow(time.Now().Add(time.Second))
	if seen == 0 {
		t.Fatalf("no update arrived before the kill")
	}
	used := s.State().Endpoint
	idx := slices.Index(z.Servers, used)
	if idx < 0 {
		t.Fatalf("State().Endpoint = %q, not one of %v", used, z.Servers)
	}
	if fulls != 0 {
		t.Fatalf("%d Full events before any reconnect", fulls)
	}
	z.Members[idx].Kill(t)
	killedAt := seen
	follow(time.Now().Add(4 * time.Second))
	if seen <= killedAt {
		t.Fatalf("no update arrived after killing %s (last seen %d)", used, seen)
	}
	// After the reconnect the prefix is read again in full.
	if fulls == 0 {
		t.Errorf("no Full event after the store moved to another member")
	}
	if st := s.State(); st.Conn != backends.Up || st.Endpoint == used {
		t.Errorf("state after the kill = %+v; want up on another member", st)
	}
	cancel()
	wg.Wait()
	final := strconv.FormatInt(last.Load(), 10)
	zkEventually(t, 10*time.Second, "final value", func() error {
		follow(time.Now().Add(100 * time.Millisecond))
		if view["/flow/n"] != final {
			return fmt.Errorf("view has %s, want %s", view["/flow/n"], final)
		}
		return nil
	})
	if view["/flow/other"] != "x" {
		t.Errorf("unrelated key lost: %v", view)
	}
	if strings.Contains(logs.String(), "session replaced") {
		t.Errorf("the session was replaced although a member was up: %s", logs)
	}
	z.Members[idx].Restart(t)
}

// A network partition longer than the session timeout: ZooKeeper expires the session.
// After it heals the store opens a new session, re-reads and re-arms every watch,
// delivers what changed meanwhile and re-creates its ephemeral registration.
func TestZooKeeperSessionExpiryRecovers(t *testing.T) {
	z := harness.StartZooKeeper(t)
	c := zkClient(t, z.Servers, 10*time.Second)
	zkPut(t, c, "/exp/keep", "1")
	zkPut(t, c, "/exp/gone", "1")
	proxy := harness.StartProxy(t, "", z.Servers[0])
	s, logs := zkOpen(t, []string{proxy.Addr}, "", func(cfg *backends.Config) { cfg.SessionTimeout = 2 * time.Second })

	reg, err := s.Register(zkCtx(t, 10*time.Second), backends.Service{Name: "api", ID: "api-1", Address: "10.1.1.1", Port: 80}, backends.RegisterOptions{})
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	defer reg.Deregister(context.Background())
	_, st, err := c.Get("/services/api/api-1")
	if err != nil || st.EphemeralOwner == 0 {
		t.Fatalf("registration znode: %v %+v", err, st)
	}
	oldOwner := st.EphemeralOwner

	view, rev := zkGet(t, s, "/exp")
	w := zkStartWatch(t, s, backends.PrefixTarget("/exp"), rev)
	q := backends.ServiceQuery{Name: "api"}
	svcs, srev, err := s.Services(zkCtx(t, 10*time.Second), q)
	if err != nil || zkIDs(svcs) != "api-1" {
		t.Fatalf("Services(api) = %v, %v", svcs, err)
	}
	sw := zkStartWatch(t, s, backends.ServiceTarget(q), srev)
	time.Sleep(300 * time.Millisecond)

	proxy.Cut()
	zkEventually(t, 10*time.Second, "registration expired on the server", func() error {
		if ok, _, _ := c.Exists("/services/api/api-1"); ok {
			return errors.New("still there")
		}
		return nil
	})
	if st := s.State(); st.Conn == backends.Up {
		t.Errorf("state during the partition = %+v", st)
	}
	// Changes the store cannot see while cut off.
	zkPut(t, c, "/exp/keep", "2")
	zkDelete(t, c, "/exp/gone")
	zkPut(t, c, "/exp/new", "3")
	proxy.Restore(t)

	want := zkView{"/exp/keep": "2", "/exp/new": "3"}
	evs := zkFollow(t, w, view, want, 20*time.Second)
	if !slices.ContainsFunc(evs, func(ev backends.Event) bool { return ev.Full }) {
		t.Errorf("no Full event after the session expired: %+v", evs)
	}
	zkUp(t, s, 10*time.Second)
	zkEventually(t, 10*time.Second, "registration re-created in the new session", func() error {
		ok, st, err := c.Exists("/services/api/api-1")
		switch {
		case err != nil:
			return err
		case !ok:
			return errors.New("missing")
		case st.EphemeralOwner == 0 || st.EphemeralOwner == oldOwner:
			return fmt.Errorf("owner %x, old %x", st.EphemeralOwner, oldOwner)
		}
		return nil
	})
	// The service watch saw it vanish with the old session (or not, if the list was
	// re-read after it was back) and ends with it present.
	zkEventually(t, 10*time.Second, "service watch shows the instance again", func() error {
		var ev backends.Event
		select {
		case ev = <-sw.events:
		default:
			return errors.New("no event yet")
		}
		if zkIDs(ev.Services) != "api-1" {
			return fmt.Errorf("services %q", zkIDs(ev.Services))
		}
		return nil
	})
	// Watches work in the new session: a later change still arrives.
	zkPut(t, c, "/exp/keep", "4")
	want["/exp/keep"] = "4"
	zkFollow(t, w, view, want, 10*time.Second)
	// All re-armed in the new session: /exp, keep, new; /services/api and api-1.
	zkEventually(t, 10*time.Second, "watches re-armed", func() error {
		if n := zkServerWatches(t, z.Servers[0]); n != 2*5 {
			return fmt.Errorf("server holds %d watches, want %d", n, 2*5)
		}
		return nil
	})
	if !strings.Contains(logs.String(), "session replaced") {
		t.Errorf("no log line about the new session:\n%s", logs)
	}
}

// A paused server (SIGSTOP) longer than the session timeout: whether ZooKeeper expires
// the session on resume or revives it, the store ends up connected with every change.
func TestZooKeeperPausedServerRecovers(t *testing.T) {
	z := harness.StartZooKeeper(t)
	c := zkClient(t, z.Servers, 30*time.Second)
	zkPut(t, c, "/pause/k", "1")
	s, logs := zkOpen(t, z.Servers, "", func(cfg *backends.Config) { cfg.SessionTimeout = 2 * time.Second })
	reg, err := s.Register(zkCtx(t, 10*time.Second), backends.Service{Name: "p", ID: "p1", Address: "10.2.2.2", Port: 1}, backends.RegisterOptions{})
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	defer reg.Deregister(context.Background())
	view, rev := zkGet(t, s, "/pause")
	w := zkStartWatch(t, s, backends.PrefixTarget("/pause"), rev)

	z.Members[0].Pause(t)
	zkEventually(t, 10*time.Second, "store notices the hung server", func() error {
		if st := s.State(); st.Conn == backends.Up {
			return errors.New("still up")
		}
		return nil
	})
	time.Sleep(3 * time.Second)
	z.Members[0].Resume(t)
	zkPut(t, c, "/pause/k", "2")
	zkFollow(t, w, view, zkView{"/pause/k": "2"}, 30*time.Second)
	zkUp(t, s, 10*time.Second)
	zkEventually(t, 15*time.Second, "registration present", func() error {
		ok, st, err := c.Exists("/services/p/p1")
		if err != nil || !ok || st.EphemeralOwner == 0 {
			return fmt.Errorf("exists=%v err=%v", ok, err)
		}
		return nil
	})
	t.Logf("session replaced on resume: %v", strings.Contains(logs.String(), "session replaced"))
}

// ---------------------------------------------------------------------------
// services

// Each writer's format, written exactly as that writer writes it, read back as the same
// normalized records; a malformed instance is skipped with a warning naming its key;
// ephemeral instances vanish with their writer's session.
func TestZooKeeperServiceFormatsAsTheirWritersWriteThem(t *testing.T) {
	z := harness.StartZooKeeper(t)
	c := zkClient(t, z.Servers, 10*time.Second)
	eph := zkClient(t, z.Servers, 10*time.Second) // a writer that will go away
	create := func(c *zk.Conn, p, v string, flags int32) string {
		t.Helper()
		var got string
		zkRetry(t, "create "+p, func() error {
			if err := zkMkdirs(c, zkParentOf(p)); err != nil {
				return err
			}
			var err error
			got, err = c.Create(p, []byte(v), flags, zk.WorldACL(zk.PermAll))
			return err
		})
		return got
	}

	// herald's own JSON.
	create(c, "/services/web/web-1", `{"name":"web","id":"web-1","address":"10.0.0.1","port":8080,"tags":["blue","v2"],"meta":{"zone":"a"},"status":"passing"}`, zk.FlagEphemeral)
	// A plain host:port value.
	create(c, "/services/web/web-2", `10.0.0.2:8080`, zk.FlagEphemeral)
	// zc.zk: the node name is the address, the data Python's json.dumps of the properties.
	create(eph, "/services/web/10.0.0.3:8080", `{"pid": 4242}`, zk.FlagEphemeral)
	create(eph, "/services/web/10.0.0.4:8081", ``, zk.FlagEphemeral)
	// Apache Curator's JsonInstanceSerializer (ServiceDiscoveryImpl writes
	// <base>/<name>/<id>, ephemeral).
	create(c, "/services/web/6c4b8c1e-2b5e-4f3b-9a57-4bd3c0a0f0a1", `{"name":"web","id":"6c4b8c1e-2b5e-4f3b-9a57-4bd3c0a0f0a1","address":"10.0.0.5","port":8080,"sslPort":null,"payload":null,"registrationTimeUTC":1700000000000,"serviceType":"DYNAMIC","uriSpec":null}`, zk.FlagEphemeral)
	// Spring Cloud Zookeeper: Curator's document with a ZookeeperInstance payload.
	create(c, "/services/web/2f0e1c9a-0d4e-4c57-8a57-1b2c3d4e5f60", `{"name":"web","id":"2f0e1c9a-0d4e-4c57-8a57-1b2c3d4e5f60","address":"10.0.0.6","port":9090,"sslPort":null,"payload":{"@class":"org.springframework.cloud.zookeeper.discovery.ZookeeperInstance","id":"web-app","name":"web","metadata":{"instance_status":"UP","version":"1.2"}},"registrationTimeUTC":1700000000001,"serviceType":"DYNAMIC","uriSpec":{"parts":[{"value":"scheme","variable":true},{"value":"://","variable":false},{"value":"address","variable":true},{"value":":","variable":false},{"value":"port","variable":true}]}}`, zk.FlagEphemeral)
	// Finagle/Aurora ServerSet members: ephemeral sequential "member_" nodes.
	alive := create(c, "/services/web/member_", `{"serviceEndpoint":{"host":"10.0.0.7","port":31337},"additionalEndpoints":{"http":{"host":"10.0.0.7","port":8080},"admin":{"host":"10.0.0.7","port":9990}},"status":"ALIVE","shard":3}`, zk.FlagEphemeralSequential)
	create(c, "/services/web/member_", `{"serviceEndpoint":{"host":"10.0.0.8","port":31337},"additionalEndpoints":{},"status":"STARTING"}`, zk.FlagEphemeralSequential)
	// Malformed: skipped with a warning naming the key, never fatal to the list.
	create(c, "/services/web/broken", `{"address":"10.0.0.9","port":"eighty"}`, zk.FlagEphemeral)
	create(c, "/services/web/not-an-address", ``, zk.FlagEphemeral)
	// Another service, and a node deeper than <name>/<id> (ignored).
	create(c, "/services/db/db-1", `{"address":"10.0.1.1","port":5432,"tags":["primary"]}`, zk.FlagEphemeral)
	create(c, "/services/db/db-1x/deeper", `10.0.1.2:5432`, 0)

	s, logs := zkOpen(t, z.Servers, "", nil)
	q := backends.ServiceQuery{Name: "web"}
	got, rev, err := s.Services(zkCtx(t, 10*time.Second), q)
	if err != nil {
		t.Fatalf("Services(web): %v", err)
	}
	type row struct{ id, addr, format string }
	var rows []row
	for _, sv := range got {
		if sv.Backend != "zookeeper" || sv.Name != "web" || !sv.Healthy {
			t.Errorf("instance %+v: want Backend zookeeper, Name web, healthy", sv)
		}
		rows = append(rows, row{sv.ID, sv.HostPort(), sv.Format})
	}
	want := []row{
		{"web-1", "10.0.0.1:8080", "herald"},
		{"web-2", "10.0.0.2:8080", "hostport"},
		{"10.0.0.3:8080", "10.0.0.3:8080", "hostport"},
		{"10.0.0.4:8081", "10.0.0.4:8081", "hostport"},
		{"6c4b8c1e-2b5e-4f3b-9a57-4bd3c0a0f0a1", "10.0.0.5:8080", "curator"},
		{"2f0e1c9a-0d4e-4c57-8a57-1b2c3d4e5f60", "10.0.0.6:9090", "curator"},
		{zkBaseOf(alive), "10.0.0.7:31337", "serverset"},
	}
	sort.Slice(want, func(i, j int) bool { return want[i].addr < want[j].addr })
	if !slices.Equal(rows, want) {
		t.Fatalf("Services(web) =\n%v\nwant\n%v", rows, want)
	}
	byID := map[string]backends.Service{}
	for _, sv := range got {
		byID[sv.ID] = sv
	}
	if sv := byID["web-1"]; !slices.Equal(sv.Tags, []string{"blue", "v2"}) || sv.Meta["zone"] != "a" {
		t.Errorf("herald instance = %+v", sv)
	}
	if sv := byID["10.0.0.3:8080"]; sv.Meta["pid"] != "4242" {
		t.Errorf("zc.zk instance meta = %v, want pid 4242", sv.Meta)
	}
	if sv := byID["2f0e1c9a-0d4e-4c57-8a57-1b2c3d4e5f60"]; sv.Meta["version"] != "1.2" {
		t.Errorf("Spring Cloud instance meta = %v", sv.Meta)
	}
	if sv := byID[zkBaseOf(alive)]; sv.Endpoints["http"] != (backends.HostPort{Host: "10.0.0.7", Port: 8080}) || sv.Meta["shard"] != "3" {
		t.Errorf("ServerSet instance = %+v", sv)
	}
	for _, key := range []string{"/services/web/broken", "/services/web/not-an-address"} {
		if !regexp.MustCompile(`level=WARN msg="skipping malformed service instance" .*key=` + regexp.QuoteMeta(key)).MatchString(logs.String()) {
			t.Errorf("no warning naming %s in:\n%s", key, logs)
		}
	}

	// Tag filter; the catalog.
	if blue, _, err := s.Services(zkCtx(t, 10*time.Second), backends.ServiceQuery{Name: "web", Tag: "blue"}); err != nil || zkIDs(blue) != "web-1" {
		t.Errorf("Services(blue.web) = %q, %v", zkIDs(blue), err)
	}
	names, _, err := s.ServiceNames(zkCtx(t, 10*time.Second))
	if err != nil || len(names) != 2 || names[0].Name != "db" || !slices.Equal(names[0].Tags, []string{"primary"}) || names[1].Name != "web" {
		t.Errorf("ServiceNames = %+v, %v", names, err)
	}
	// Missing service: empty, not an error. Datacenters do not exist in ZooKeeper.
	if none, _, err := s.Services(zkCtx(t, 10*time.Second), backends.ServiceQuery{Name: "nosuch"}); err != nil || len(none) != 0 {
		t.Errorf("Services(nosuch) = %v, %v", none, err)
	}
	if _, _, err := s.Services(zkCtx(t, 10*time.Second), backends.ServiceQuery{Name: "web", Datacenter: "dc1"}); err == nil {
		t.Errorf("Services(web@dc1) succeeded")
	}

	// The watch: the zc.zk writer's session ends, its ephemeral instances vanish.
	sw := zkStartWatch(t, s, backends.ServiceTarget(q), rev)
	nw := zkStartWatch(t, s, backends.Target{ServiceNames: true}, 0)
	if ev := nw.next(t, 10*time.Second, "catalog"); len(ev.Names) != 2 {
		t.Errorf("catalog event = %+v", ev)
	}
	warnings := strings.Count(logs.String(), "skipping malformed")
	eph.Close()
	for {
		ev := sw.next(t, 15*time.Second, "zc.zk instances gone with their session")
		if !ev.Full {
			t.Fatalf("service watch sent a non-Full event: %+v", ev)
		}
		if !slices.ContainsFunc(ev.Services, func(sv backends.Service) bool { return strings.HasPrefix(sv.ID, "10.0.0.") }) {
			if len(ev.Services) != 5 {
				t.Fatalf("after the zc.zk writer left: %q", zkIDs(ev.Services))
			}
			break
		}
	}
	// The STARTING member becomes ALIVE, then the list changes again.
	zkRetry(t, "set member", func() error {
		kids, _, err := c.Children("/services/web")
		if err != nil {
			return err
		}
		for _, k := range kids {
			if strings.HasPrefix(k, "member_") && "/services/web/"+k != alive {
				_, err := c.Set("/services/web/"+k, []byte(`{"serviceEndpoint":{"host":"10.0.0.8","port":31337},"additionalEndpoints":{},"status":"ALIVE"}`), -1)
				return err
			}
		}
		return errors.New("no second member")
	})
	ev := sw.next(t, 10*time.Second, "member turned ALIVE")
	if len(ev.Services) != 6 {
		t.Fatalf("after the member turned ALIVE: %q", zkIDs(ev.Services))
	}
	// A change under the service that does not change the list sends nothing; a change
	// elsewhere neither.
	zkPut(t, c, "/services/web/broken", `{"address":"10.0.0.9","port":"still bad"}`)
	zkPut(t, c, "/services/other/o1", `10.9.9.9:1`)
	sw.none(t, 500*time.Millisecond, "irrelevant changes")
	if n := strings.Count(logs.String(), "skipping malformed"); n <= warnings {
		t.Errorf("no warning about the new bad value of /services/web/broken")
	}
	// A malformed instance is warned about when its value changes, not on every event.
	warnings = strings.Count(logs.String(), "skipping malformed")
	for i := range 5 {
		zkPut(t, c, "/services/web/web-2", fmt.Sprintf("10.0.0.2:%d", 8090+i))
		if ev := sw.next(t, 10*time.Second, "web-2 moved"); len(ev.Services) != 6 {
			t.Fatalf("after web-2 moved: %q", zkIDs(ev.Services))
		}
	}
	if n := strings.Count(logs.String(), "skipping malformed"); n != warnings {
		t.Errorf("%d more malformed warnings over 5 unrelated changes", n-warnings)
	}
}

func zkParentOf(p string) string { return p[:strings.LastIndexByte(p, '/')] }
func zkBaseOf(p string) string   { return p[strings.LastIndexByte(p, '/')+1:] }

// ---------------------------------------------------------------------------
// registration

func TestZooKeeperRegister(t *testing.T) {
	z := harness.StartZooKeeper(t)
	c := zkClient(t, z.Servers, 10*time.Second)
	s, _ := zkOpen(t, z.Servers, "/chroot", nil)
	ctx := zkCtx(t, 30*time.Second)

	svc := backends.Service{Name: "api", ID: "api-1", Address: "10.3.3.3", Port: 8443, Tags: []string{"tls"}, Meta: map[string]string{"v": "7"}}
	reg, err := s.Register(ctx, svc, backends.RegisterOptions{})
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	data, st, err := c.Get("/chroot/services/api/api-1")
	if err != nil || st.EphemeralOwner == 0 {
		t.Fatalf("znode: %v, owner %x", err, st.EphemeralOwner)
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("znode data %q: %v", data, err)
	}
	for _, k := range []string{"name", "id", "address", "port", "tags", "meta", "status"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("herald JSON %s lacks %q", data, k)
		}
	}
	// Parents are persistent; the instance reads back through the shared parser.
	if _, pst, _ := c.Get("/chroot/services/api"); pst.EphemeralOwner != 0 {
		t.Errorf("parent is ephemeral")
	}
	got, _, err := s.Services(ctx, backends.ServiceQuery{Name: "api"})
	if err != nil || len(got) != 1 || got[0].HostPort() != "10.3.3.3:8443" || got[0].Meta["v"] != "7" || !got[0].HasTag("tls") || got[0].Format != "herald" {
		t.Fatalf("Services(api) = %+v, %v", got, err)
	}

	// Nor can this one, twice.
	if _, err := s.Register(ctx, svc, backends.RegisterOptions{}); !errors.Is(err, zookeeper.ErrTaken) {
		t.Fatalf("registering the same ID twice in one store = %v, want ErrTaken", err)
	}
	// Another process cannot take the ID, unless it asks to replace it.
	other, _ := zkOpen(t, z.Servers, "/chroot", nil)
	if _, err := other.Register(ctx, svc, backends.RegisterOptions{}); !errors.Is(err, zookeeper.ErrTaken) || !strings.Contains(err.Error(), "/services/api/api-1") {
		t.Fatalf("second Register = %v, want ErrTaken naming the key", err)
	}
	// A persistent znode someone wrote by hand is not taken over silently either.
	zkPut(t, c, "/chroot/services/api/static", `10.0.0.1:1`)
	if _, err := s.Register(ctx, backends.Service{Name: "api", ID: "static", Address: "10.0.0.2", Port: 2}, backends.RegisterOptions{}); !errors.Is(err, zookeeper.ErrTaken) {
		t.Fatalf("Register over a persistent znode = %v, want ErrTaken", err)
	}
	reg2, err := other.Register(ctx, svc, backends.RegisterOptions{Replace: true})
	if err != nil {
		t.Fatalf("Register with Replace: %v", err)
	}
	_, st2, _ := c.Get("/chroot/services/api/api-1")
	if st2.EphemeralOwner == st.EphemeralOwner {
		t.Fatalf("Replace left the znode with the old owner")
	}
	// The first registration, replaced, must not delete the new owner's znode.
	if err := reg.Deregister(ctx); err != nil {
		t.Fatalf("Deregister of the replaced registration: %v", err)
	}
	if ok, _, _ := c.Exists("/chroot/services/api/api-1"); !ok {
		t.Fatalf("deregistering the replaced registration deleted the new owner's znode")
	}

	// Withdraw while unhealthy, back when healthy.
	if err := reg2.SetHealthy(ctx, false, "check failed"); err != nil {
		t.Fatalf("SetHealthy(false): %v", err)
	}
	if ok, _, _ := c.Exists("/chroot/services/api/api-1"); ok {
		t.Fatalf("unhealthy instance still registered")
	}
	if err := reg2.SetHealthy(ctx, true, "ok"); err != nil {
		t.Fatalf("SetHealthy(true): %v", err)
	}
	if ok, _, _ := c.Exists("/chroot/services/api/api-1"); !ok {
		t.Fatalf("healthy instance not re-registered")
	}
	if err := reg2.Deregister(ctx); err != nil {
		t.Fatalf("Deregister: %v", err)
	}
	if ok, _, _ := c.Exists("/chroot/services/api/api-1"); ok {
		t.Fatalf("deregistered instance still there")
	}

	// Sequential: ServerSet-style member_ names.
	seq, err := s.Register(ctx, backends.Service{Name: "finagle", ID: "member_", Address: "10.4.4.4", Port: 9}, backends.RegisterOptions{Sequential: true})
	if err != nil {
		t.Fatalf("sequential Register: %v", err)
	}
	kids, _, _ := c.Children("/chroot/services/finagle")
	if len(kids) != 1 || !regexp.MustCompile(`^member_\d{10}$`).MatchString(kids[0]) {
		t.Fatalf("sequential znode names %v", kids)
	}
	if p, ok := seq.(interface{ Path() string }); !ok || p.Path() != "/services/finagle/"+kids[0] {
		t.Errorf("registration path %v", seq)
	}

	// Register's context ending withdraws the instance.
	rctx, cancel := context.WithCancel(context.Background())
	if _, err := s.Register(rctx, backends.Service{Name: "short", ID: "s1", Address: "10.5.5.5", Port: 1}, backends.RegisterOptions{}); err != nil {
		t.Fatalf("Register: %v", err)
	}
	cancel()
	zkEventually(t, 10*time.Second, "registration withdrawn when its context ended", func() error {
		if ok, _, _ := c.Exists("/chroot/services/short/s1"); ok {
			return errors.New("still there")
		}
		return nil
	})

	// Closing the store ends the session: its ephemeral znodes go at once.
	s.Close()
	if ok, _, _ := c.Exists("/chroot/services/finagle/" + kids[0]); ok {
		t.Fatalf("sequential znode still there after Close")
	}

	// Bad input.
	for _, bad := range []backends.Service{
		{Name: "", ID: "x", Address: "1.1.1.1"},
		{Name: "a/b", ID: "x", Address: "1.1.1.1"},
		{Name: "a", ID: "", Address: "1.1.1.1"},
		{Name: "a", ID: "x/y", Address: "1.1.1.1"},
		{Name: "a", ID: "x", Address: ""},
		{Name: "a", ID: "x", Address: "1.1.1.1", Port: 70000},
	} {
		if _, err := other.Register(ctx, bad, backends.RegisterOptions{}); err == nil {
			t.Errorf("Register(%+v) succeeded", bad)
		}
	}
}

// ---------------------------------------------------------------------------
// auth

func TestZooKeeperDigestAuth(t *testing.T) {
	z := harness.StartZooKeeper(t)
	admin := zkClient(t, z.Servers, 10*time.Second)
	if err := admin.AddAuth("digest", []byte("alice:s3cret-pw")); err != nil {
		t.Fatal(err)
	}
	zkPut(t, admin, "/secure", "")
	zkRetry(t, "create secret", func() error {
		_, err := admin.Create("/secure/db-password", []byte("hunter2"), 0, zk.DigestACL(zk.PermAll, "alice", "s3cret-pw"))
		return err
	})

	const secret = "s3cret-pw"
	// User and password from separate settings, and as user:password in one.
	for i, mod := range []func(*backends.Config){
		func(c *backends.Config) { c.Username, c.Password = "alice", secret },
		func(c *backends.Config) { c.Password = "alice:" + secret },
	} {
		s, logs := zkOpen(t, z.Servers, "", mod)
		got, _ := zkGet(t, s, "/secure")
		if got["/secure/db-password"] != "hunter2" {
			t.Fatalf("authenticated Get = %v", got)
		}
		// Its registrations: only alice may change them, everyone may read them.
		if _, err := s.Register(zkCtx(t, 10*time.Second), backends.Service{Name: "sec", ID: fmt.Sprint("sec-", i), Address: "10.6.6.6", Port: 1}, backends.RegisterOptions{}); err != nil {
			t.Fatalf("Register with auth: %v", err)
		}
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the password appears in the logs:\n%s", logs)
		}
	}
	anon := zkClient(t, z.Servers, 10*time.Second)
	kids, _, err := anon.Children("/services/sec")
	if err != nil || len(kids) != 2 {
		t.Fatalf("anonymous list of registrations: %v %v", kids, err)
	}
	if _, _, err := anon.Get("/services/sec/" + kids[0]); err != nil {
		t.Errorf("anonymous read of a registration: %v", err)
	}
	// (Deleting is governed by the parent's ACL in ZooKeeper; the shared parent stays open.)
	if _, err := anon.Set("/services/sec/"+kids[0], []byte("10.6.6.6:666"), -1); !errors.Is(err, zk.ErrNoAuth) {
		t.Errorf("anonymous overwrite of a registration = %v, want not authenticated", err)
	}

	// No credentials, or wrong ones: the read fails as a whole, naming the znode, and
	// never showing the password.
	for name, mod := range map[string]func(*backends.Config){
		"none":  nil,
		"wrong": func(c *backends.Config) { c.Username, c.Password = "alice", "wrong-"+secret },
	} {
		s, logs := zkOpen(t, z.Servers, "", mod)
		_, _, err := s.Get(zkCtx(t, 10*time.Second), []string{"/secure"})
		if err == nil || !strings.Contains(err.Error(), "/secure/db-password") || !errors.Is(err, zk.ErrNoAuth) {
			t.Errorf("%s credentials: Get = %v; want not authenticated, naming the znode", name, err)
		}
		for _, text := range []string{fmt.Sprint(err), fmt.Sprint(s.State()), logs.String()} {
			if strings.Contains(text, secret) {
				t.Errorf("%s credentials: the password shows in %q", name, text)
			}
		}
	}
	// A watch on a prefix it may not read sends nothing, warns naming the znode, keeps
	// retrying, and delivers the data once the ACL lets it.
	s, logs := zkOpen(t, z.Servers, "", nil)
	w := zkStartWatch(t, s, backends.PrefixTarget("/secure"), 0)
	zkEventually(t, 10*time.Second, "warning about the unreadable znode", func() error {
		if !regexp.MustCompile(`level=WARN .*/secure/db-password.*not authenticated`).MatchString(logs.String()) {
			return errors.New("no warning yet")
		}
		return nil
	})
	w.none(t, 200*time.Millisecond, "watch of an unreadable prefix")
	zkRetry(t, "open the ACL", func() error {
		_, err := admin.SetACL("/secure/db-password", zk.WorldACL(zk.PermRead), -1)
		return err
	})
	if ev := w.next(t, 15*time.Second, "data once readable"); !ev.Full || ev.KVs["/secure/db-password"] != "hunter2" {
		t.Fatalf("event after the ACL opened = %+v", ev)
	}

	// Unusable settings are refused at New, without echoing the password.
	for _, cfg := range []backends.Config{
		{Password: secret},                     // no user
		{Username: "alice"},                    // no password
		{Username: "al:ice", Password: secret}, // ':' in the user
	} {
		ep, _ := backends.ParseURL("zookeeper://" + z.Servers[0])
		_, err := zookeeper.New(cfg, ep)
		if err == nil || strings.Contains(err.Error(), secret) {
			t.Errorf("New(%q) = %v; want an error without the password", cfg.Username, err)
		}
	}
}

// ---------------------------------------------------------------------------
// benchmarks

// BenchmarkZooKeeperSetToEvent measures the time from a write acknowledged by
// ZooKeeper to the change arriving through Watch.
func BenchmarkZooKeeperSetToEvent(b *testing.B) {
	z := harness.StartZooKeeper(b)
	c := zkClient(b, z.Servers, 10*time.Second)
	for i := range 100 {
		zkPut(b, c, fmt.Sprintf("/bench/%03d", i), "0")
	}
	s, _ := zkOpen(b, z.Servers, "", nil)
	_, rev := zkGet(b, s, "/bench")
	w := zkStartWatch(b, s, backends.PrefixTarget("/bench"), rev)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := fmt.Sprintf("/bench/%03d", i%100)
		v := "v" + strconv.Itoa(i)
		start := time.Now()
		if _, err := c.Set(k, []byte(v), -1); err != nil {
			b.Fatal(err)
		}
		for {
			ev := w.next(b, 10*time.Second, "the change")
			if ev.KVs[k] == v {
				break
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
