package integration

// Tests and benchmarks of the Consul backend against a real `consul agent -dev`.
// Helpers here are prefixed with "consul" so they never collide with the other test
// files of this package.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/backends/consul"
	"github.com/heraldhq/herald/integration/harness"
)

// consulStore opens the backend on c's agent with c's token (if any); mod adjusts the
// configuration.
func consulStore(t testing.TB, c *harness.Consul, mod ...func(*backends.Config)) *consul.Store {
	t.Helper()
	return consulStoreURL(t, "consul://"+c.Addr+"?dc="+c.Datacenter, c.Token, mod...)
}

func consulStoreURL(t testing.TB, raw, token string, mod ...func(*backends.Config)) *consul.Store {
	t.Helper()
	ep, err := backends.ParseURL(raw)
	if err != nil {
		t.Fatalf("ParseURL(%s): %v", raw, err)
	}
	cfg := backends.Config{Token: token}
	for _, m := range mod {
		m(&cfg)
	}
	s, err := consul.New(cfg, ep)
	if err != nil {
		t.Fatalf("consul.New(%s): %v", raw, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func consulCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// consulWatch runs Watch in the background; at cleanup it cancels it and checks that it
// returned ctx's error (and so left no goroutine behind).
func consulWatch(t testing.TB, s *consul.Store, target backends.Target, from uint64) <-chan backends.Event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan backends.Event, 1024)
	done := make(chan error, 1)
	go func() { done <- s.Watch(ctx, target, from, ch) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Watch(%s) returned %v after cancel, want context.Canceled", target, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Watch(%s) did not return within 10s of cancel", target)
		}
	})
	return ch
}

// consulNext waits for an event that satisfies ok, skipping earlier ones (intermediate
// states are allowed); it fails the test after d.
func consulNext(t testing.TB, ch <-chan backends.Event, d time.Duration, what string, ok func(backends.Event) bool) backends.Event {
	t.Helper()
	deadline := time.After(d)
	var last *backends.Event
	for {
		select {
		case ev := <-ch:
			if !ev.Full {
				t.Fatalf("%s: got an incremental event %+v; Consul watches send Full events", what, ev)
			}
			if ok(ev) {
				return ev
			}
			last = &ev
		case <-deadline:
			t.Fatalf("%s: no matching event within %v (last: %+v)", what, d, last)
		}
	}
}

// consulNone asserts that no event arrives for d.
func consulNone(t testing.TB, ch <-chan backends.Event, d time.Duration, what string) {
	t.Helper()
	select {
	case ev := <-ch:
		t.Fatalf("%s: unexpected event %+v", what, ev)
	case <-time.After(d):
	}
}

func consulPut(t testing.TB, kv *api.KV, k, v string) {
	t.Helper()
	if _, err := kv.Put(&api.KVPair{Key: k, Value: []byte(v)}, nil); err != nil {
		t.Fatalf("put %s: %v", k, err)
	}
}

func consulQuery(t testing.TB, spec string, filters ...string) backends.ServiceQuery {
	t.Helper()
	q, err := backends.ParseServiceQuery(spec, filters...)
	if err != nil {
		t.Fatalf("ParseServiceQuery(%q, %q): %v", spec, filters, err)
	}
	return q
}

// consulIDs spells a service list as "id:status,..." in its order.
func consulIDs(ss []backends.Service) string {
	var b []string
	for _, s := range ss {
		b = append(b, s.ID+":"+s.Status)
	}
	return strings.Join(b, ",")
}

func consulRegister(t testing.TB, ag *api.Agent, r *api.AgentServiceRegistration) {
	t.Helper()
	if err := ag.ServiceRegister(r); err != nil {
		t.Fatalf("register %s: %v", r.ID, err)
	}
}

// consulEventually polls fn every 50ms until it returns nil or d passes.
func consulEventually(t testing.TB, d time.Duration, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %v: %v", what, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestConsulKVGetAndWatch(t *testing.T) {
	t.Parallel()
	c := harness.StartConsul(t)
	kv := c.Client(t).KV()
	consulPut(t, kv, "app/a", "1")
	consulPut(t, kv, "app/b/c", "2")
	consulPut(t, kv, "app/folder/", "") // a UI folder placeholder
	consulPut(t, kv, "apple", "neighbour")
	consulPut(t, kv, "db/host", "db.local")
	// A deleted key under /app leaves a tombstone newer than every key read below: the
	// watch must not mistake the index it moved for a change.
	consulPut(t, kv, "app/old", "x")
	if _, err := kv.Delete("app/old", nil); err != nil {
		t.Fatal(err)
	}

	s := consulStore(t, c)
	ctx := consulCtx(t, 20*time.Second)
	got, rev, err := s.Get(ctx, []string{"/app", "/db/host", "/missing", "/app/b"})
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	want := map[string]string{"/app/a": "1", "/app/b/c": "2", "/app/folder": "", "/db/host": "db.local"}
	if !maps.Equal(got, want) {
		t.Fatalf("Get = %v, want %v (Consul key a/b is /a/b, prefixes match on path boundaries)", got, want)
	}
	if rev == 0 {
		t.Error("Get returned revision 0 for a non-empty read")
	}
	all, _, err := s.Get(ctx, []string{"/"})
	if err != nil {
		t.Fatalf("Get /: %v", err)
	}
	if all["/apple"] != "neighbour" || all["/app/a"] != "1" || len(all) != 5 {
		t.Errorf("Get / = %v, want every key", all)
	}

	// A watch started where Get left off sends nothing until something changes.
	ch := consulWatch(t, s, backends.PrefixTarget("/app"), rev)
	consulNone(t, ch, 800*time.Millisecond, "watch from Get's revision, nothing changed")
	consulPut(t, kv, "apple", "changed")
	consulPut(t, kv, "db/host", "elsewhere")
	consulNone(t, ch, 500*time.Millisecond, "a neighbour (apple) and another prefix changed")

	start := time.Now()
	consulPut(t, kv, "app/a", "3")
	ev := consulNext(t, ch, 5*time.Second, "put app/a", func(backends.Event) bool { return true })
	t.Logf("put-to-event: %v", time.Since(start))
	want = map[string]string{"/app/a": "3", "/app/b/c": "2", "/app/folder": ""}
	if !maps.Equal(ev.KVs, want) || ev.Target.Prefix != "/app" || ev.Revision <= rev {
		t.Fatalf("event after put = %+v, want Full %v at a revision above %d", ev, want, rev)
	}
	if _, err := kv.Delete("app/b/c", nil); err != nil {
		t.Fatal(err)
	}
	ev = consulNext(t, ch, 5*time.Second, "delete app/b/c", func(backends.Event) bool { return true })
	delete(want, "/app/b/c")
	if !maps.Equal(ev.KVs, want) {
		t.Fatalf("event after delete = %v, want %v", ev.KVs, want)
	}
	if _, err := kv.DeleteTree("app/", nil); err != nil {
		t.Fatal(err)
	}
	ev = consulNext(t, ch, 5*time.Second, "delete tree", func(backends.Event) bool { return true })
	if len(ev.KVs) != 0 || ev.KVs == nil {
		t.Fatalf("event after deleting the tree = %#v, want an empty (non-nil) map", ev.KVs)
	}

	// A watch from 0 (the caller has nothing) sends the current state first.
	ch0 := consulWatch(t, s, backends.PrefixTarget("/db"), 0)
	ev = consulNext(t, ch0, 5*time.Second, "watch from 0", func(backends.Event) bool { return true })
	if !maps.Equal(ev.KVs, map[string]string{"/db/host": "elsewhere"}) {
		t.Fatalf("first event of a watch from 0 = %v", ev.KVs)
	}
	if st := s.State(); st.Conn != backends.Up || st.Endpoint != c.Addr || st.Err != nil {
		t.Errorf("State = %+v, want up at %s", st, c.Addr)
	}
}

// More prefixes than one transaction holds are read in batches, and nothing is lost at
// the seams.
func TestConsulKVGetManyPrefixes(t *testing.T) {
	t.Parallel()
	c := harness.StartConsul(t)
	var prefixes []string
	want := map[string]string{}
	ops := api.TxnOps{}
	txn := c.Client(t).Txn()
	flush := func() {
		if ok, resp, _, err := txn.Txn(ops, nil); err != nil || !ok {
			t.Fatalf("seed txn: ok=%v err=%v resp=%+v", ok, err, resp)
		}
		ops = ops[:0]
	}
	for i := range 150 {
		k := fmt.Sprintf("many/%03d/key", i)
		ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVSet, Key: k, Value: []byte(strconv.Itoa(i))}})
		if len(ops) == 64 {
			flush()
		}
		prefixes = append(prefixes, fmt.Sprintf("/many/%03d", i))
		want["/"+k] = strconv.Itoa(i)
	}
	flush()
	s := consulStore(t, c)
	got, rev, err := s.Get(consulCtx(t, 20*time.Second), prefixes)
	if err != nil {
		t.Fatalf("Get of %d prefixes: %v", len(prefixes), err)
	}
	if !maps.Equal(got, want) || rev == 0 {
		t.Fatalf("Get of %d prefixes returned %d keys at %d, want %d", len(prefixes), len(got), rev, len(want))
	}
	// Watches of the first and last batch, from the one revision Get returned, follow on
	// from there.
	first := consulWatch(t, s, backends.PrefixTarget("/many/000"), rev)
	last := consulWatch(t, s, backends.PrefixTarget("/many/149"), rev)
	consulNone(t, first, 500*time.Millisecond, "first batch, nothing changed")
	consulNone(t, last, 10*time.Millisecond, "last batch, nothing changed")
	consulPut(t, c.Client(t).KV(), "many/000/key", "x")
	consulPut(t, c.Client(t).KV(), "many/149/key", "y")
	consulNext(t, first, 5*time.Second, "first batch changed", func(ev backends.Event) bool { return ev.KVs["/many/000/key"] == "x" })
	consulNext(t, last, 5*time.Second, "last batch changed", func(ev backends.Event) bool { return ev.KVs["/many/149/key"] == "y" })
}

func TestConsulServicesHealthTagsAndFilters(t *testing.T) {
	t.Parallel()
	c := harness.StartConsul(t)
	ag := c.Client(t).Agent()
	ttl := func(id, status string) *api.AgentServiceCheck {
		return &api.AgentServiceCheck{CheckID: "chk-" + id, TTL: "1h", Status: status}
	}
	consulRegister(t, ag, &api.AgentServiceRegistration{ID: "web-1", Name: "web", Address: "10.0.0.1", Port: 8080,
		Tags: []string{"blue", "v1"}, Meta: map[string]string{"zone": "a"}, Weights: &api.AgentWeights{Passing: 5, Warning: 1},
		Check: ttl("web-1", "passing")})
	// No service address: the instance is reached at its node's address.
	consulRegister(t, ag, &api.AgentServiceRegistration{ID: "web-2", Name: "web", Port: 8081, Tags: []string{"green"},
		Check: ttl("web-2", "passing")})
	consulRegister(t, ag, &api.AgentServiceRegistration{ID: "web-3", Name: "web", Address: "10.0.0.3", Port: 8082,
		Tags: []string{"blue"}, Check: ttl("web-3", "warning")})
	// No check at all: passing, as Consul itself counts it.
	consulRegister(t, ag, &api.AgentServiceRegistration{ID: "web-4", Name: "web", Address: "10.0.0.4", Port: 8083})
	// Two checks, one critical: the instance is critical (the worst check).
	consulRegister(t, ag, &api.AgentServiceRegistration{ID: "web-5", Name: "web", Address: "10.0.0.5", Port: 8084,
		Checks: api.AgentServiceChecks{ttl("web-5a", "passing"), ttl("web-5b", "critical")}})

	s := consulStore(t, c)
	ctx := consulCtx(t, 30*time.Second)
	anyQ := consulQuery(t, "web", "any")
	var all []backends.Service
	var rev uint64
	consulEventually(t, 10*time.Second, "all five instances in the catalog", func() error {
		var err error
		all, rev, err = s.Services(ctx, anyQ)
		if err == nil && len(all) != 5 {
			err = fmt.Errorf("%d instances: %s", len(all), consulIDs(all))
		}
		return err
	})
	if got, want := consulIDs(all), "web-1:passing,web-3:warning,web-4:passing,web-5:critical,web-2:passing"; got != want {
		t.Fatalf("web|any = %s, want %s (sorted by address; 127.0.0.1 is web-2's node address)", got, want)
	}
	w1, w2 := all[0], all[4]
	if w1.Name != "web" || w1.Address != "10.0.0.1" || w1.Port != 8080 || !w1.Healthy || w1.Weight != 5 ||
		w1.Node != c.Node || w1.Datacenter != "dc1" || w1.Key != c.Node+"/web-1" || w1.Backend != "consul" || w1.Format != "consul" ||
		!slices.Equal(w1.Tags, []string{"blue", "v1"}) || w1.Meta["zone"] != "a" {
		t.Errorf("web-1 record = %+v", w1)
	}
	if w2.Address != "127.0.0.1" || w2.HostPort() != "127.0.0.1:8081" {
		t.Errorf("web-2 (no service address) = %s, want the node address 127.0.0.1", w2.HostPort())
	}

	tests := []struct {
		q    backends.ServiceQuery
		want string
	}{
		{consulQuery(t, "web"), "web-1:passing,web-4:passing,web-2:passing"},
		{consulQuery(t, "web", "passing,warning"), "web-1:passing,web-3:warning,web-4:passing,web-2:passing"},
		{consulQuery(t, "web", "warning"), "web-3:warning"},
		{consulQuery(t, "web|critical"), "web-5:critical"},
		{consulQuery(t, "blue.web"), "web-1:passing"},
		{consulQuery(t, "blue.web", "any"), "web-1:passing,web-3:warning"},
		{consulQuery(t, "web@dc1"), "web-1:passing,web-4:passing,web-2:passing"},
		{consulQuery(t, "Blue.web", "any"), ""}, // tags match exactly
		{consulQuery(t, "nosuch"), ""},
	}
	// A Store reads q.Name exactly; a dotted spec is first resolved against the catalog,
	// as the template functions and `herald services` do ("blue.web" is tag blue of web).
	names, _, err := s.ServiceNames(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		got, _, err := s.Services(ctx, backends.ResolveQuery(tt.q, names))
		if err != nil {
			t.Errorf("Services(%s): %v", tt.q, err)
			continue
		}
		if consulIDs(got) != tt.want {
			t.Errorf("Services(%s) = %s, want %s", tt.q, consulIDs(got), tt.want)
		}
	}
	short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	_, _, err = s.Services(short, consulQuery(t, "web@nowhere"))
	cancel()
	if err == nil || !strings.Contains(err.Error(), "nowhere") || !strings.Contains(err.Error(), c.Addr) {
		t.Errorf("Services(web@nowhere) error = %v, want one naming the datacenter and the agent", err)
	}

	// Flip checks and watch: the passing list follows, one blocking query per target.
	passing := consulWatch(t, s, backends.ServiceTarget(consulQuery(t, "web")), rev)
	anyCh := consulWatch(t, s, backends.ServiceTarget(anyQ), rev)
	consulNone(t, passing, 500*time.Millisecond, "nothing changed since Services")
	if err := ag.UpdateTTL("chk-web-2", "boom", api.HealthCritical); err != nil {
		t.Fatal(err)
	}
	ev := consulNext(t, passing, 5*time.Second, "web-2 critical", func(ev backends.Event) bool {
		return consulIDs(ev.Services) == "web-1:passing,web-4:passing"
	})
	if ev.Target.Service == nil || ev.Target.ID() != backends.ServiceTarget(consulQuery(t, "web")).ID() {
		t.Errorf("event target = %s", ev.Target)
	}
	consulNext(t, anyCh, 5*time.Second, "web-2 critical in the any list", func(ev backends.Event) bool {
		return strings.Contains(consulIDs(ev.Services), "web-2:critical")
	})
	if err := ag.UpdateTTL("chk-web-2", "fine", api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	consulNext(t, passing, 5*time.Second, "web-2 passing again", func(ev backends.Event) bool {
		return consulIDs(ev.Services) == "web-1:passing,web-4:passing,web-2:passing"
	})
	if err := ag.EnableServiceMaintenance("web-1", "deploy"); err != nil {
		t.Fatal(err)
	}
	consulNext(t, anyCh, 5*time.Second, "web-1 in maintenance", func(ev backends.Event) bool {
		return strings.HasPrefix(consulIDs(ev.Services), "web-1:maintenance,")
	})
	consulNext(t, passing, 5*time.Second, "web-1 out of the passing list", func(ev backends.Event) bool {
		return consulIDs(ev.Services) == "web-4:passing,web-2:passing"
	})
	if err := ag.EnableNodeMaintenance("node work"); err != nil {
		t.Fatal(err)
	}
	consulNext(t, anyCh, 5*time.Second, "node maintenance", func(ev backends.Event) bool {
		return consulIDs(ev.Services) == "web-1:maintenance,web-3:maintenance,web-4:maintenance,web-5:maintenance,web-2:maintenance"
	})
	consulNext(t, passing, 5*time.Second, "node maintenance empties the passing list", func(ev backends.Event) bool {
		return len(ev.Services) == 0
	})
}

func TestConsulServiceNames(t *testing.T) {
	t.Parallel()
	c := harness.StartConsul(t)
	ag := c.Client(t).Agent()
	consulRegister(t, ag, &api.AgentServiceRegistration{ID: "w1", Name: "web", Port: 1, Tags: []string{"v2", "blue"}})
	consulRegister(t, ag, &api.AgentServiceRegistration{ID: "w2", Name: "web", Port: 2, Tags: []string{"blue"}})
	s := consulStore(t, c)
	ctx := consulCtx(t, 20*time.Second)
	var names []backends.ServiceSummary
	var rev uint64
	consulEventually(t, 10*time.Second, "web in the catalog", func() error {
		var err error
		names, rev, err = s.ServiceNames(ctx)
		if err == nil && len(names) != 2 {
			err = fmt.Errorf("names = %+v", names)
		}
		return err
	})
	if names[0].Name != "consul" || names[1].Name != "web" || !slices.Equal(names[1].Tags, []string{"blue", "v2"}) {
		t.Fatalf("ServiceNames = %+v, want consul and web [blue v2]", names)
	}
	ch := consulWatch(t, s, backends.Target{ServiceNames: true}, rev)
	consulNone(t, ch, 500*time.Millisecond, "catalog unchanged")
	consulRegister(t, ag, &api.AgentServiceRegistration{ID: "d1", Name: "db", Port: 3})
	ev := consulNext(t, ch, 5*time.Second, "db registered", func(ev backends.Event) bool { return len(ev.Names) == 3 })
	if ev.Names[1].Name != "db" || !ev.Target.ServiceNames {
		t.Fatalf("event = %+v", ev)
	}
}

// The agent goes away mid-watch and comes back empty (-dev keeps nothing): the watch says
// so in State, retries, and sends the new state as a Full event, then follows changes.
func TestConsulRestartedMidWatch(t *testing.T) {
	t.Parallel()
	c := harness.StartConsul(t)
	kv := c.Client(t).KV()
	consulPut(t, kv, "app/a", "before")
	var logs consulLogBuffer
	s := consulStore(t, c, func(cfg *backends.Config) { cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	ctx := consulCtx(t, 60*time.Second)
	_, rev, err := s.Get(ctx, []string{"/app"})
	if err != nil {
		t.Fatal(err)
	}
	kvCh := consulWatch(t, s, backends.PrefixTarget("/app"), rev)
	svcCh := consulWatch(t, s, backends.ServiceTarget(consulQuery(t, "web", "any")), 0)
	consulNext(t, svcCh, 5*time.Second, "initial service list", func(backends.Event) bool { return true })

	c.Proc.Stop(t)
	consulEventually(t, 15*time.Second, "State down", func() error {
		st := s.State()
		if st.Conn != backends.Down {
			return fmt.Errorf("state %v", st.Conn)
		}
		if st.Err == nil || !strings.Contains(st.Err.Error(), c.Addr) {
			return fmt.Errorf("state error %v does not name %s", st.Err, c.Addr)
		}
		return nil
	})
	c.Proc.Restart(t)
	ev := consulNext(t, kvCh, 20*time.Second, "full state after the restart", func(ev backends.Event) bool { return len(ev.KVs) == 0 })
	if !ev.Full {
		t.Fatal("recovery event is not Full")
	}
	consulPut(t, c.Client(t).KV(), "app/a", "after")
	consulNext(t, kvCh, 10*time.Second, "put after the restart", func(ev backends.Event) bool { return ev.KVs["/app/a"] == "after" })
	consulRegister(t, c.Client(t).Agent(), &api.AgentServiceRegistration{ID: "web-1", Name: "web", Port: 80})
	consulNext(t, svcCh, 10*time.Second, "service after the restart", func(ev backends.Event) bool {
		return consulIDs(ev.Services) == "web-1:passing"
	})
	if st := s.State(); st.Conn != backends.Up {
		t.Errorf("State after recovery = %+v", st)
	}
	if !strings.Contains(logs.String(), "consul reachable again") {
		t.Errorf("no recovery in the log:\n%s", logs.String())
	}
}

type consulLogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *consulLogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *consulLogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestConsulACL(t *testing.T) {
	t.Parallel()
	c := harness.StartConsul(t, harness.ConsulACL())
	admin := c.Client(t)
	consulPut(t, admin.KV(), "app/a", "1")
	consulPut(t, admin.KV(), "app/secret/k", "s")
	consulPut(t, admin.KV(), "apple/x", "neighbour")
	consulRegister(t, admin.Agent(), &api.AgentServiceRegistration{ID: "web-1", Name: "web", Port: 80})
	newToken := func(name, rules string) string {
		p, _, err := admin.ACL().PolicyCreate(&api.ACLPolicy{Name: name, Rules: rules}, nil)
		if err != nil {
			t.Fatalf("policy %s: %v", name, err)
		}
		tok, _, err := admin.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: p.ID}}}, nil)
		if err != nil {
			t.Fatalf("token %s: %v", name, err)
		}
		return tok.SecretID
	}
	appOnly := newToken("app-only", `key_prefix "app/" { policy = "read" }`)
	noSecret := newToken("no-secret", `key_prefix "app/" { policy = "read" }
key_prefix "app/secret/" { policy = "deny" }`)
	const badToken = "00000000-dead-beef-0000-000000000000"

	var logs consulLogBuffer
	logTo := func(cfg *backends.Config) {
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx := consulCtx(t, 30*time.Second)
	url := "consul://" + c.Addr
	tokens := []string{c.Token, appOnly, noSecret, badToken}

	checkDenied := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: no error", what)
			return
		}
		if !errors.Is(err, consul.ErrPermission) {
			t.Errorf("%s: error %v is not ErrPermission", what, err)
		}
		msg := err.Error()
		t.Logf("%s: %v", what, err)
		if !strings.Contains(msg, c.Addr) || !strings.Contains(msg, "permission denied") {
			t.Errorf("%s: error %q does not name the agent and the refusal", what, msg)
		}
		for _, tok := range tokens {
			if strings.Contains(msg, tok) {
				t.Errorf("%s: error leaks a token: %s", what, msg)
			}
		}
	}

	// Without a token Consul hides everything: a clear permission error, not an empty read.
	anon := consulStoreURL(t, url, "", logTo)
	_, _, err := anon.Get(ctx, []string{"/app"})
	checkDenied("Get without a token", err)
	_, _, err = anon.Services(ctx, consulQuery(t, "web"))
	checkDenied("Services without a token", err)
	if _, _, err := anon.ServiceNames(ctx); err != nil {
		t.Errorf("ServiceNames without a token: %v (a catalog shows what a token may see)", err)
	}

	// An unknown token: Consul refuses outright.
	bad := consulStoreURL(t, url, badToken, logTo)
	_, _, err = bad.Get(ctx, []string{"/app"})
	checkDenied("Get with an unknown token", err)
	if err != nil && !strings.Contains(err.Error(), "ACL not found") {
		t.Errorf("unknown token: error %q does not carry Consul's reason", err)
	}
	if st := bad.State(); st.Conn != backends.Up {
		t.Errorf("a refusal is not a connection problem: State = %+v", st)
	}

	// A token that may read app/ but not app/secret/: reading /app would be partial.
	ns := consulStoreURL(t, url, noSecret, logTo)
	_, _, err = ns.Get(ctx, []string{"/app"})
	checkDenied("Get /app with app/secret/ denied", err)
	if got, _, err := ns.Get(ctx, []string{"/app/a"}); err != nil || got["/app/a"] != "1" {
		t.Errorf("Get /app/a with app/ readable = %v, %v", got, err)
	}

	// A token for app/ only: "apple/x" is hidden, but it is a neighbour by string, not
	// under /app on a path boundary: the read is complete.
	ao := consulStoreURL(t, url, appOnly, logTo)
	got, _, err := ao.Get(ctx, []string{"/app"})
	if want := map[string]string{"/app/a": "1", "/app/secret/k": "s"}; err != nil || !maps.Equal(got, want) {
		t.Errorf("Get /app with an app/ token = %v, %v; want %v", got, err, want)
	}
	ch := consulWatch(t, ao, backends.PrefixTarget("/app"), 0)
	consulNext(t, ch, 5*time.Second, "watch with an app/ token", func(ev backends.Event) bool { return len(ev.KVs) == 2 })
	consulPut(t, admin.KV(), "app/a", "2")
	consulNext(t, ch, 5*time.Second, "change seen with an app/ token", func(ev backends.Event) bool { return ev.KVs["/app/a"] == "2" })

	// The management token reads everything.
	full := consulStore(t, c, logTo)
	if got, _, err := full.Get(ctx, []string{"/app", "/apple"}); err != nil || len(got) != 3 {
		t.Errorf("Get with the management token = %v, %v", got, err)
	}
	if svcs, _, err := full.Services(ctx, consulQuery(t, "web")); err != nil || consulIDs(svcs) != "web-1:passing" {
		t.Errorf("Services with the management token = %s, %v", consulIDs(svcs), err)
	}

	for _, tok := range tokens {
		if strings.Contains(logs.String(), tok) {
			t.Errorf("a token appears in the log")
		}
	}
}

func TestConsulTLS(t *testing.T) {
	t.Parallel()
	certs := harness.GenCerts(t)
	c := harness.StartConsul(t, harness.ConsulTLS(certs))
	consulPut(t, c.Client(t).KV(), "app/a", "tls")
	s := consulStoreURL(t, "consuls://"+c.Addr, "", func(cfg *backends.Config) { cfg.TLS = c.TLS(t) })
	got, _, err := s.Get(consulCtx(t, 10*time.Second), []string{"/app"})
	if err != nil || got["/app/a"] != "tls" {
		t.Fatalf("Get over TLS = %v, %v", got, err)
	}
	// The agent wants a client certificate (verify_incoming): without one, a clear error
	// naming the agent.
	noCert := consulStoreURL(t, "consuls://"+c.Addr, "", func(cfg *backends.Config) { cfg.TLS = certs.ClientTLSNoCert(t) })
	_, _, err = noCert.Get(consulCtx(t, time.Second), []string{"/app"})
	if err == nil || !strings.Contains(err.Error(), c.Addr) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("Get without a client certificate: %v", err)
	}
	t.Logf("without a client certificate: %v", err)
}

// The first agent is down: the next one in the list answers, for reads and watches.
func TestConsulFailsOverToTheNextAddress(t *testing.T) {
	t.Parallel()
	c := harness.StartConsul(t)
	consulPut(t, c.Client(t).KV(), "app/a", "1")
	dead := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	s := consulStoreURL(t, "consul://"+dead+","+c.Addr, "")
	got, rev, err := s.Get(consulCtx(t, 10*time.Second), []string{"/app"})
	if err != nil || got["/app/a"] != "1" {
		t.Fatalf("Get with the first agent down = %v, %v", got, err)
	}
	if st := s.State(); st.Conn != backends.Up || st.Endpoint != c.Addr {
		t.Errorf("State = %+v, want up at %s", st, c.Addr)
	}
	ch := consulWatch(t, s, backends.PrefixTarget("/app"), rev)
	consulPut(t, c.Client(t).KV(), "app/a", "2")
	consulNext(t, ch, 5*time.Second, "watch through the second agent", func(ev backends.Event) bool { return ev.KVs["/app/a"] == "2" })
}

// A hung agent (SIGSTOP: it accepts connections but never answers) does not hang a read
// past its deadline, and the error says which agent.
func TestConsulPausedAgentDoesNotHangReads(t *testing.T) {
	t.Parallel()
	c := harness.StartConsul(t)
	s := consulStore(t, c, func(cfg *backends.Config) { cfg.DialTimeout = 200 * time.Millisecond })
	c.Proc.Pause(t)
	// SIGSTOP takes effect asynchronously; a request sent before it lands is answered.
	consulEventually(t, 5*time.Second, "agent stopped", func() error {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Proc.PID()))
		if err != nil {
			return err
		}
		if f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:])); f[0] != "T" {
			return fmt.Errorf("state %s", f[0])
		}
		return nil
	})
	start := time.Now()
	_, _, err := s.Get(consulCtx(t, 1500*time.Millisecond), []string{"/app"})
	el := time.Since(start)
	c.Proc.Resume(t)
	if err == nil || !strings.Contains(err.Error(), c.Addr) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get from a hung agent: %v", err)
	}
	if el > 3*time.Second {
		t.Errorf("Get from a hung agent took %v, want about its 1.5s deadline", el)
	}
	if _, _, err := s.Get(consulCtx(t, 10*time.Second), []string{"/app"}); err != nil {
		t.Fatalf("Get after resume: %v", err)
	}
}

// A service flapping 100 times a second must not make the watch spin: once its burst of
// 20 is spent, events stay under one per MinGap (50 ms), and the last state still
// arrives.
func TestConsulRateLimitHoldsWhileFlapping(t *testing.T) {
	t.Parallel()
	c := harness.StartConsul(t)
	ag := c.Client(t).Agent()
	consulRegister(t, ag, &api.AgentServiceRegistration{ID: "flap-1", Name: "flap", Port: 80,
		Check: &api.AgentServiceCheck{CheckID: "chk-flap", TTL: "1h", Status: "passing"}})
	s := consulStore(t, c)
	q := consulQuery(t, "flap", "any")
	consulEventually(t, 10*time.Second, "flap registered", func() error {
		svcs, _, err := s.Services(consulCtx(t, 5*time.Second), q)
		if err == nil && len(svcs) != 1 {
			err = fmt.Errorf("%d instances", len(svcs))
		}
		return err
	})
	ch := consulWatch(t, s, backends.ServiceTarget(q), 0)
	consulNext(t, ch, 5*time.Second, "initial", func(backends.Event) bool { return true })

	const flapFor = 3 * time.Second
	cpu0 := consulCPU()
	start := time.Now()
	var flips atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		// 100 flips a second on a schedule, each jittered by up to ±4 ms so that the
		// watch's reads, 50 ms apart, do not keep landing on the same phase of the
		// flapping and see one state only.
		for i := 0; time.Since(start) < flapFor; i++ {
			at := start.Add(time.Duration(i)*10*time.Millisecond + time.Duration(rand.IntN(9)-4)*time.Millisecond)
			time.Sleep(time.Until(at))
			st := api.HealthPassing
			if i%2 == 0 {
				st = api.HealthCritical
			}
			if err := ag.UpdateTTL("chk-flap", "flap "+strconv.Itoa(i), st); err == nil {
				flips.Add(1)
			}
		}
		// End on a known state.
		_ = ag.UpdateTTL("chk-flap", "settled", api.HealthPassing)
	}()
	var events []backends.Event
	deadline := time.After(flapFor + 1500*time.Millisecond)
collect:
	for {
		select {
		case ev := <-ch:
			events = append(events, ev)
		case <-deadline:
			break collect
		}
	}
	<-done
	window := time.Since(start)
	cpu := consulCPU() - cpu0
	limit := 20 + int(window/(50*time.Millisecond)) + 1
	t.Logf("%d status flips in %v -> %d events (limit %d); test process CPU %v (%.0f%% of one core, flapping client included)",
		flips.Load(), flapFor, len(events), limit, cpu, 100*cpu.Seconds()/window.Seconds())
	if flips.Load() < 250 {
		t.Fatalf("only %d flips happened; the test did not flap the service", flips.Load())
	}
	if len(events) > limit {
		t.Errorf("%d events in %v: the pacing (burst 20, then one per 50 ms) did not hold (limit %d)", len(events), window, limit)
	}
	if len(events) < 5 {
		t.Errorf("only %d events while flapping: the watch stopped following", len(events))
	}
	last := events[len(events)-1]
	if consulIDs(last.Services) != "flap-1:passing" {
		// The settling update may land after the window; it must still arrive.
		consulNext(t, ch, 5*time.Second, "settled state", func(ev backends.Event) bool { return consulIDs(ev.Services) == "flap-1:passing" })
	}
}

// consulCPU is this process's CPU time (user+system).
func consulCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func TestConsulRegisterTTL(t *testing.T) {
	t.Parallel()
	c := harness.StartConsul(t)
	admin := c.Client(t)
	s := consulStore(t, c)
	ctx := consulCtx(t, 60*time.Second)
	svc := backends.Service{Name: "api", ID: "api-1", Address: "127.0.0.1", Port: 9000, Tags: []string{"v1"},
		Meta: map[string]string{"owner": "herald"}, Weight: 3}
	reg, err := s.Register(ctx, svc, backends.RegisterOptions{TTL: time.Second, DeregisterAfter: 90 * time.Second})
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	q := consulQuery(t, "api", "any")
	status := func() string {
		svcs, _, err := s.Services(ctx, q)
		if err != nil {
			t.Fatalf("Services(api): %v", err)
		}
		return consulIDs(svcs)
	}
	consulEventually(t, 5*time.Second, "registered and passing", func() error {
		if got := status(); got != "api-1:passing" {
			return fmt.Errorf("%s", got)
		}
		return nil
	})
	svcs, _, _ := s.Services(ctx, q)
	if g := svcs[0]; g.Port != 9000 || g.Weight != 3 || !g.HasTag("v1") || g.Meta["owner"] != "herald" {
		t.Errorf("registered instance = %+v", g)
	}
	// (The agent does not show deregister_critical_service_after back; the request body
	// is checked in the package's unit tests.)
	checks, err := admin.Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	chk := consulServiceCheck(t, checks, "api-1")
	if chk.Type != "ttl" || !strings.HasPrefix(chk.CheckID, "service:api-1:herald-") {
		t.Errorf("check = %+v, want herald's TTL check on api-1", chk)
	}

	// Three TTLs later it is still passing: herald keeps the check alive.
	time.Sleep(3 * time.Second)
	if got := status(); got != "api-1:passing" {
		t.Fatalf("after 3 TTLs: %s, want passing", got)
	}

	if err := reg.SetHealthy(ctx, false, "database unreachable"); err != nil {
		t.Fatal(err)
	}
	if got := status(); got != "api-1:critical" {
		t.Errorf("after SetHealthy(false): %s", got)
	}
	checks, _ = admin.Agent().Checks()
	if out := consulServiceCheck(t, checks, "api-1").Output; out != "database unreachable" {
		t.Errorf("check output = %q, want the note", out)
	}
	time.Sleep(1200 * time.Millisecond) // the keepalive must keep it critical, not revive it
	if got := status(); got != "api-1:critical" {
		t.Errorf("keepalive revived an unhealthy instance: %s", got)
	}
	if err := reg.SetHealthy(ctx, true, ""); err != nil {
		t.Fatal(err)
	}
	if got := status(); got != "api-1:passing" {
		t.Errorf("after SetHealthy(true): %s", got)
	}

	// The same ID again: refused unless Replace.
	_, err = s.Register(ctx, svc, backends.RegisterOptions{TTL: time.Second})
	if !errors.Is(err, consul.ErrRegistered) || !strings.Contains(err.Error(), "api-1") || !strings.Contains(err.Error(), c.Addr) {
		t.Errorf("second Register of api-1: %v, want ErrRegistered naming the ID and agent", err)
	}

	// The agent restarts and forgets everything: herald registers again.
	c.Proc.Restart(t)
	consulEventually(t, 10*time.Second, "re-registered after the agent restart", func() error {
		svcs, _, err := s.Services(ctx, q)
		if err != nil {
			return err
		}
		if consulIDs(svcs) != "api-1:passing" {
			return fmt.Errorf("%s", consulIDs(svcs))
		}
		return nil
	})

	if err := reg.Deregister(ctx); err != nil {
		t.Fatalf("Deregister: %v", err)
	}
	if got := status(); got != "" {
		t.Errorf("after Deregister: %q", got)
	}
	if err := reg.Deregister(ctx); err != nil {
		t.Errorf("second Deregister: %v", err)
	}
	time.Sleep(1500 * time.Millisecond) // no keepalive brings it back
	if got := status(); got != "" {
		t.Errorf("after Deregister and a TTL: %q", got)
	}
	if err := reg.SetHealthy(ctx, true, ""); err == nil {
		t.Error("SetHealthy after Deregister succeeded")
	}

	// Taking over an ID someone else left behind.
	consulRegister(t, admin.Agent(), &api.AgentServiceRegistration{ID: "api-1", Name: "api", Port: 1})
	if _, err := s.Register(ctx, svc, backends.RegisterOptions{TTL: time.Second}); !errors.Is(err, consul.ErrRegistered) {
		t.Errorf("Register over a leftover: %v, want ErrRegistered", err)
	}
	reg2, err := s.Register(ctx, svc, backends.RegisterOptions{TTL: time.Second, Replace: true})
	if err != nil {
		t.Fatalf("Register with Replace: %v", err)
	}
	consulEventually(t, 5*time.Second, "replaced", func() error {
		svcs, _, err := s.Services(ctx, q)
		if err != nil || len(svcs) != 1 || svcs[0].Port != 9000 {
			return fmt.Errorf("%+v %v", svcs, err)
		}
		return nil
	})
	if err := reg2.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
}

// consulHealthEndpoint serves an HTTP health endpoint on 127.0.0.1 for Consul to check:
// 200 while healthy holds true (as it does at first), 503 otherwise.
func consulHealthEndpoint(t testing.TB) (net.Listener, *atomic.Bool) {
	t.Helper()
	healthy := new(atomic.Bool)
	healthy.Store(true)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l, healthy
}

// consulServiceCheck is the one check on service id among the agent's checks.
func consulServiceCheck(t testing.TB, checks map[string]*api.AgentCheck, id string) *api.AgentCheck {
	t.Helper()
	var found []*api.AgentCheck
	for _, c := range checks {
		if c.ServiceID == id {
			found = append(found, c)
		}
	}
	if len(found) != 1 {
		t.Fatalf("checks on %s: %d (%v), want 1", id, len(found), checks)
	}
	return found[0]
}

// A registration replaced by another process (Replace) stands down: it stops keeping the
// new holder's entry alive, and its Deregister leaves that entry in place. Checked with
// herald's TTL check (also under an ACL token that may only write the service) and with
// an HTTP check run by Consul.
func TestConsulRegisterReplacedHolderStandsDown(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"ttl", "ttl with a service-only ACL token", "http"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			var c *harness.Consul
			var s *consul.Store
			if strings.Contains(mode, "ACL") {
				c = harness.StartConsul(t, harness.ConsulACL())
				admin := c.Client(t)
				pol, _, err := admin.ACL().PolicyCreate(&api.ACLPolicy{Name: "web-only", Rules: `service "web" { policy = "write" }`}, nil)
				if err != nil {
					t.Fatal(err)
				}
				tok, _, err := admin.ACL().TokenCreate(&api.ACLToken{Policies: []*api.ACLTokenPolicyLink{{ID: pol.ID}}}, nil)
				if err != nil {
					t.Fatal(err)
				}
				s = consulStoreURL(t, "consul://"+c.Addr+"?dc="+c.Datacenter, tok.SecretID)
			} else {
				c = harness.StartConsul(t)
				s = consulStore(t, c)
			}
			admin := consulStore(t, c) // reads with the management token
			ctx := consulCtx(t, 60*time.Second)
			opts := backends.RegisterOptions{TTL: time.Second, DeregisterAfter: time.Hour}
			var healthy *atomic.Bool
			if mode == "http" {
				var l net.Listener
				l, healthy = consulHealthEndpoint(t)
				opts.CheckHTTP, opts.CheckInterval, opts.CheckTimeout = "http://"+l.Addr().String()+"/", 500*time.Millisecond, time.Second
			}
			q := consulQuery(t, "web", "any")
			want := func(what, ids string, port int) {
				t.Helper()
				consulEventually(t, 10*time.Second, what, func() error {
					svcs, _, err := admin.Services(ctx, q)
					if err == nil && (consulIDs(svcs) != ids || port > 0 && svcs[0].Port != port) {
						err = fmt.Errorf("%s %+v", consulIDs(svcs), svcs)
					}
					return err
				})
			}
			old, err := s.Register(ctx, backends.Service{Name: "web", ID: "web-1", Address: "127.0.0.1", Port: 1001}, opts)
			if err != nil {
				t.Fatalf("Register: %v", err)
			}
			want("first holder passing", "web-1:passing", 1001)
			newCtx, stopNew := context.WithCancel(ctx)
			opts.Replace = true
			cur, err := s.Register(newCtx, backends.Service{Name: "web", ID: "web-1", Address: "127.0.0.1", Port: 1002}, opts)
			if err != nil {
				t.Fatalf("Register with Replace: %v", err)
			}
			want("replaced", "web-1:passing", 1002)
			// Three periods of the old holder's loop: it must neither take the ID back
			// nor leave a second check on it.
			time.Sleep(1500 * time.Millisecond)
			want("still the new holder's", "web-1:passing", 1002)

			if mode == "http" {
				// The old holder cannot put the new one in maintenance either.
				if err := old.SetHealthy(ctx, false, "old"); err == nil || !strings.Contains(err.Error(), "another process") {
					t.Errorf("SetHealthy on the replaced registration: %v, want an error saying it was replaced", err)
				}
				want("not in maintenance", "web-1:passing", 1002)
				healthy.Store(false)
				want("Consul's own check still runs", "web-1:critical", 1002)
			} else {
				// The new holder stops (its keepalive ends without deregistering, as when
				// it is killed): nobody keeps the check passing any more.
				stopNew()
				want("critical once nobody keeps it alive", "web-1:critical", 1002)
				if err := old.SetHealthy(ctx, true, ""); err == nil || !strings.Contains(err.Error(), "another process") {
					t.Errorf("SetHealthy on the replaced registration: %v, want an error saying it was replaced", err)
				}
				time.Sleep(1500 * time.Millisecond)
				want("the old holder did not revive it", "web-1:critical", 1002)
			}
			if err := old.Deregister(ctx); err != nil {
				t.Fatalf("Deregister of the replaced registration: %v", err)
			}
			want("left in place by the old holder's Deregister", "web-1:critical", 1002)
			if err := cur.Deregister(ctx); err != nil {
				t.Fatalf("Deregister of the holder: %v", err)
			}
			want("gone", "", 0)
			stopNew()
		})
	}
}

// When the context given to Register ends, herald stops passing the TTL check and the
// instance turns critical: a dead herald does not leave a healthy-looking instance.
func TestConsulRegisterStopsWithItsContext(t *testing.T) {
	t.Parallel()
	c := harness.StartConsul(t)
	s := consulStore(t, c)
	ctx := consulCtx(t, 30*time.Second)
	regCtx, cancel := context.WithCancel(ctx)
	if _, err := s.Register(regCtx, backends.Service{Name: "job", ID: "job-1", Port: 7}, backends.RegisterOptions{TTL: time.Second}); err != nil {
		t.Fatal(err)
	}
	q := consulQuery(t, "job", "any")
	consulEventually(t, 5*time.Second, "passing", func() error {
		svcs, _, err := s.Services(ctx, q)
		if err == nil && consulIDs(svcs) != "job-1:passing" {
			err = fmt.Errorf("%s", consulIDs(svcs))
		}
		return err
	})
	cancel()
	consulEventually(t, 5*time.Second, "critical once the TTL lapses", func() error {
		svcs, _, err := s.Services(ctx, q)
		if err == nil && consulIDs(svcs) != "job-1:critical" {
			err = fmt.Errorf("%s", consulIDs(svcs))
		}
		return err
	})
}

// An HTTP check run by Consul itself follows the real endpoint; SetHealthy maps to
// maintenance mode, since herald cannot set the status of a check Consul runs.
func TestConsulRegisterHTTPCheck(t *testing.T) {
	t.Parallel()
	c := harness.StartConsul(t)
	l, healthy := consulHealthEndpoint(t)
	s := consulStore(t, c)
	ctx := consulCtx(t, 40*time.Second)
	port := l.Addr().(*net.TCPAddr).Port
	reg, err := s.Register(ctx, backends.Service{Name: "site", ID: "site-1", Address: "127.0.0.1", Port: port},
		backends.RegisterOptions{CheckHTTP: "http://" + l.Addr().String() + "/health", CheckInterval: time.Second, CheckTimeout: time.Second, TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	q := consulQuery(t, "site", "any")
	want := func(status string) {
		t.Helper()
		consulEventually(t, 8*time.Second, "site-1 "+status, func() error {
			svcs, _, err := s.Services(ctx, q)
			if err == nil && consulIDs(svcs) != "site-1:"+status {
				err = fmt.Errorf("%s", consulIDs(svcs))
			}
			return err
		})
	}
	want("passing")
	healthy.Store(false)
	want("critical")
	healthy.Store(true)
	want("passing")
	if err := reg.SetHealthy(ctx, false, "draining"); err != nil {
		t.Fatal(err)
	}
	want("maintenance")
	if err := reg.SetHealthy(ctx, true, ""); err != nil {
		t.Fatal(err)
	}
	want("passing")
	if _, err := s.Register(ctx, backends.Service{Name: "x"}, backends.RegisterOptions{CheckHTTP: "http://a", CheckTCP: "a:1"}); err == nil {
		t.Error("Register accepted both an HTTP and a TCP check")
	}
	if err := reg.Deregister(ctx); err != nil {
		t.Fatal(err)
	}
	if svcs, _, err := s.Services(ctx, q); err != nil || len(svcs) != 0 {
		t.Errorf("after Deregister: %s, %v", consulIDs(svcs), err)
	}
}

// ---- benchmarks ----

// consulPercentiles reports p50 and p99 of ds in milliseconds.
func consulPercentiles(b *testing.B, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	p := func(q float64) float64 {
		i := min(int(q*float64(len(ds))), len(ds)-1)
		return float64(ds[i].Microseconds()) / 1000
	}
	b.ReportMetric(p(0.50), "p50-ms")
	b.ReportMetric(p(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
}

// Time from a KV put returning to the watch's event holding the new value. Puts are
// spaced past the 100 ms minimum gap so that each measures one change on its own.
func BenchmarkConsulKVPutToEvent(b *testing.B) {
	c := harness.StartConsul(b)
	kv := c.Client(b).KV()
	consulPut(b, kv, "bench/k", "0")
	s := consulStore(b, c)
	ch := consulWatch(b, s, backends.PrefixTarget("/bench"), 0)
	consulNext(b, ch, 5*time.Second, "initial", func(backends.Event) bool { return true })
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		time.Sleep(120 * time.Millisecond)
		b.StartTimer()
		v := strconv.Itoa(i + 1)
		start := time.Now()
		consulPut(b, kv, "bench/k", v)
		consulNext(b, ch, 5*time.Second, "put "+v, func(ev backends.Event) bool { return ev.KVs["/bench/k"] == v })
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	consulPercentiles(b, lat)
}

// Time from a TTL check update returning to the watch's event with the new status.
func BenchmarkConsulHealthChangeToEvent(b *testing.B) {
	c := harness.StartConsul(b)
	ag := c.Client(b).Agent()
	consulRegister(b, ag, &api.AgentServiceRegistration{ID: "web-1", Name: "web", Port: 80,
		Check: &api.AgentServiceCheck{CheckID: "chk", TTL: "1h", Status: "passing"}})
	s := consulStore(b, c)
	q := consulQuery(b, "web", "any")
	ch := consulWatch(b, s, backends.ServiceTarget(q), 0)
	consulNext(b, ch, 10*time.Second, "initial", func(ev backends.Event) bool { return len(ev.Services) == 1 })
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		time.Sleep(120 * time.Millisecond)
		b.StartTimer()
		st := api.HealthCritical
		if i%2 == 1 {
			st = api.HealthPassing
		}
		start := time.Now()
		if err := ag.UpdateTTL("chk", "bench", st); err != nil {
			b.Fatal(err)
		}
		consulNext(b, ch, 5*time.Second, "status "+st, func(ev backends.Event) bool { return consulIDs(ev.Services) == "web-1:"+st })
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	consulPercentiles(b, lat)
}

// CPU of herald and of the agent while 1,000 services are watched (one blocking query
// each) and nothing changes. Consul allows 200 HTTP connections per client address by
// default; 1,000 concurrent blocking queries over plain HTTP need
// limits.http_max_conns_per_client raised, as they do for consul-template.
func BenchmarkConsulIdleWatches1000(b *testing.B) {
	const n = 1000
	c := harness.StartConsul(b)
	consulSetConnLimit(b, c, 2*n)
	cl := c.Client(b)
	cat := cl.Catalog()
	for i := range n {
		name := fmt.Sprintf("svc-%04d", i)
		// Catalog writes are cheaper than agent registrations. They go to a node of their
		// own: the agent's anti-entropy would remove services on its node it does not
		// know locally.
		_, err := cat.Register(&api.CatalogRegistration{Node: "bench-node", Address: "127.0.0.1",
			Service: &api.AgentService{ID: name + "-1", Service: name, Port: 1000 + i}}, nil)
		if err != nil {
			b.Fatalf("register %s: %v", name, err)
		}
	}
	s := consulStore(b, c)
	ch := make(chan backends.Event, n)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range n {
		q := backends.ServiceQuery{Name: fmt.Sprintf("svc-%04d", i)}
		wg.Go(func() { _ = s.Watch(ctx, backends.ServiceTarget(q), 0, ch) })
	}
	b.Cleanup(func() { cancel(); wg.Wait() })
	deadline := time.After(60 * time.Second)
	for got := 0; got < n; got++ {
		select {
		case <-ch:
		case <-deadline:
			b.Fatalf("only %d of %d watches delivered their first event in 60s (state %+v)", got, n, s.State())
		}
	}
	time.Sleep(2 * time.Second) // let every watch settle into its blocking query
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heapMB, goroutines := float64(ms.HeapInuse)/(1<<20), float64(runtime.NumGoroutine())
	b.ResetTimer()
	var selfCPU, agentCPU, wall time.Duration
	for range b.N {
		s0, a0, w0 := consulCPU(), consulProcCPU(b, c.Proc.PID()), time.Now()
		time.Sleep(10 * time.Second)
		selfCPU += consulCPU() - s0
		agentCPU += consulProcCPU(b, c.Proc.PID()) - a0
		wall += time.Since(w0)
	}
	b.StopTimer()
	select {
	case ev := <-ch:
		b.Errorf("an idle watch sent %+v", ev)
	default:
	}
	b.ReportMetric(heapMB, "heap-MB")
	b.ReportMetric(goroutines, "goroutines")
	b.ReportMetric(100*selfCPU.Seconds()/wall.Seconds(), "herald-cpu-%")
	b.ReportMetric(100*agentCPU.Seconds()/wall.Seconds(), "consul-cpu-%")
	b.ReportMetric(0, "ns/op")
}

// consulSetConnLimit rewrites the agent's configuration to allow max HTTP connections
// from one client address and restarts it (-dev: it comes back empty).
func consulSetConnLimit(b testing.TB, c *harness.Consul, max int) {
	raw, err := os.ReadFile(c.ConfigPath)
	if err != nil {
		b.Fatal(err)
	}
	s := strings.TrimSpace(string(raw))
	if !strings.HasSuffix(s, "}") {
		b.Fatalf("unexpected consul config %s", raw)
	}
	s = strings.TrimSuffix(s, "}") + fmt.Sprintf(`, "limits": {"http_max_conns_per_client": %d}}`, max)
	if err := os.WriteFile(c.ConfigPath, []byte(s), 0o600); err != nil {
		b.Fatal(err)
	}
	c.Proc.Restart(b)
}

// consulProcCPU is the CPU time (user+system) of a process we started, from /proc.
func consulProcCPU(b *testing.B, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (which may hold spaces) start past the last ')'.
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz
}
