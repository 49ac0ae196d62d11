package consul

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/heraldhq/herald/backends"
)

func TestInstanceStatusIsTheWorstCheck(t *testing.T) {
	chk := func(id, status string) *api.HealthCheck { return &api.HealthCheck{CheckID: id, Status: status} }
	tests := []struct {
		name   string
		checks api.HealthChecks
		want   string
	}{
		{"no checks", nil, "passing"},
		{"all passing", api.HealthChecks{chk("serfHealth", "passing"), chk("service:w1", "passing")}, "passing"},
		{"one warning", api.HealthChecks{chk("serfHealth", "passing"), chk("service:w1", "warning")}, "warning"},
		{"critical beats warning", api.HealthChecks{chk("a", "warning"), chk("b", "critical"), chk("c", "passing")}, "critical"},
		{"node check critical", api.HealthChecks{chk("serfHealth", "critical"), chk("service:w1", "passing")}, "critical"},
		{"service maintenance", api.HealthChecks{chk("service:w1", "passing"), chk("_service_maintenance:w1", "critical")}, "maintenance"},
		{"node maintenance", api.HealthChecks{chk("_node_maintenance", "critical"), chk("service:w1", "passing")}, "maintenance"},
		{"maintenance beats critical", api.HealthChecks{chk("service:w1", "critical"), chk("_node_maintenance", "critical")}, "maintenance"},
		// Another instance's maintenance check is not this one's (Consul sends only the
		// instance's own, but the ID must match to count).
		{"other service's maintenance", api.HealthChecks{chk("_service_maintenance:w2", "critical")}, "critical"},
		{"unknown status counts as critical", api.HealthChecks{chk("x", "bogus")}, "critical"},
		{"nil check ignored", api.HealthChecks{nil, chk("x", "passing")}, "passing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := instanceStatus("w1", tt.checks); got != tt.want {
				t.Fatalf("instanceStatus = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNextIndex(t *testing.T) {
	tests := []struct {
		prev, got, want uint64
	}{
		{0, 0, 1},    // a zero index in an answer must not turn into index=0 (no blocking: a spin)
		{0, 17, 17},  // first read
		{17, 17, 17}, // wait ran out, nothing changed
		{17, 42, 42}, // a change
		{42, 5, 0},   // went backwards (agent lost its state): plain read next
		{5, 0, 0},    // backwards to zero: reset, not 1
		{1, 1, 1},
	}
	for _, tt := range tests {
		if got := nextIndex(tt.prev, tt.got); got != tt.want {
			t.Errorf("nextIndex(%d, %d) = %d, want %d", tt.prev, tt.got, got, tt.want)
		}
	}
}

func TestAddPairsPathBoundariesAndFolders(t *testing.T) {
	pairs := []kvPair{
		{Key: "app", Value: []byte("root"), ModifyIndex: 3},
		{Key: "app/a", Value: []byte("1"), ModifyIndex: 9},
		{Key: "app/b", Value: []byte("real"), ModifyIndex: 4},
		{Key: "app/b/", Value: nil, ModifyIndex: 12}, // UI folder after its real twin
		{Key: "app/c/", Value: nil, ModifyIndex: 5},  // folder alone
		{Key: "app/c/d", Value: []byte("deep"), ModifyIndex: 6},
		{Key: "apple", Value: []byte("neighbour"), ModifyIndex: 20},
		{Key: "apple/x", Value: []byte("neighbour"), ModifyIndex: 21},
	}
	kvs := map[string]string{}
	top := addPairs(kvs, map[string]bool{}, pairs, []string{"/app"})
	want := map[string]string{"/app": "root", "/app/a": "1", "/app/b": "real", "/app/c": "", "/app/c/d": "deep"}
	if len(kvs) != len(want) {
		t.Fatalf("got %v, want %v", kvs, want)
	}
	for k, v := range want {
		if kvs[k] != v {
			t.Errorf("%s = %q, want %q (all: %v)", k, kvs[k], v, kvs)
		}
	}
	// The neighbours "apple..." do not count towards the revision either.
	if top != 12 {
		t.Errorf("top index = %d, want 12", top)
	}

	// A folder seen first is overwritten by the real key that follows.
	kvs = map[string]string{}
	addPairs(kvs, map[string]bool{}, []kvPair{{Key: "x/y/"}, {Key: "x/y", Value: []byte("v")}}, []string{"/x"})
	if kvs["/x/y"] != "v" {
		t.Errorf("real key after folder: /x/y = %q, want v", kvs["/x/y"])
	}
}

func TestToServiceNormalizes(t *testing.T) {
	node := &api.Node{Node: "n1", Address: "10.0.0.1", Datacenter: "dc1"}
	e := &api.ServiceEntry{
		Node: node,
		Service: &api.AgentService{ID: "web-1", Service: "web", Port: 8080, Tags: []string{"v1"},
			Meta: map[string]string{"zone": "a"}, Weights: api.AgentWeights{Passing: 3, Warning: 1},
			TaggedAddresses: map[string]api.ServiceAddress{"lan_ipv6": {Address: "[::1]", Port: 8080}}},
		Checks: api.HealthChecks{{CheckID: "service:web-1", Status: "warning"}},
	}
	s, ok := toService(e)
	if !ok {
		t.Fatal("toService rejected a complete entry")
	}
	if s.Address != "10.0.0.1" {
		t.Errorf("empty service address: Address = %q, want the node's 10.0.0.1", s.Address)
	}
	if s.Status != "warning" || s.Healthy {
		t.Errorf("Status/Healthy = %q/%v, want warning/false", s.Status, s.Healthy)
	}
	if s.Key != "n1/web-1" || s.Node != "n1" || s.Datacenter != "dc1" || s.Weight != 3 || s.Backend != "consul" || s.Format != "consul" {
		t.Errorf("record fields wrong: %+v", s)
	}
	if hp := s.Endpoints["lan_ipv6"]; hp.Host != "::1" || hp.String() != "[::1]:8080" {
		t.Errorf("tagged address = %+v (%s), want ::1 unbracketed", hp, hp)
	}

	e.Service.Address = "[2001:db8::5]"
	s, _ = toService(e)
	if s.Address != "2001:db8::5" || s.HostPort() != "[2001:db8::5]:8080" {
		t.Errorf("IPv6 service address: Address=%q HostPort=%q", s.Address, s.HostPort())
	}

	for _, bad := range []*api.ServiceEntry{nil, {Node: node}, {Service: e.Service}} {
		if _, ok := toService(bad); ok {
			t.Errorf("toService(%+v) accepted an entry without node or service", bad)
		}
	}
}

func TestFilterEntriesAppliesHeraldFilters(t *testing.T) {
	entry := func(node, id, addr string, port int, status string, tags ...string) *api.ServiceEntry {
		return &api.ServiceEntry{
			Node:    &api.Node{Node: node, Address: "10.0.0.9"},
			Service: &api.AgentService{ID: id, Service: "web", Address: addr, Port: port, Tags: tags},
			Checks:  api.HealthChecks{{CheckID: "service:" + id, Status: status}},
		}
	}
	entries := []*api.ServiceEntry{
		entry("n2", "a", "10.0.0.2", 80, "passing", "blue"),
		entry("n1", "a", "10.0.0.2", 80, "passing", "green"), // same ID on another node: a distinct instance
		entry("n1", "b", "10.0.0.1", 80, "critical", "blue"),
		entry("n1", "c", "10.0.0.3", 80, "warning"),
		nil,
	}
	mustQ := func(spec string, f ...string) backends.ServiceQuery {
		q, err := backends.ParseServiceQuery(spec, f...)
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	keys := func(ss []backends.Service) string {
		var out []string
		for _, s := range ss {
			out = append(out, s.Key)
		}
		return strings.Join(out, ",")
	}
	log := backends.Config{}.Log()
	tests := []struct {
		q    backends.ServiceQuery
		want string
	}{
		{mustQ("web"), "n1/a,n2/a"}, // passing only, sorted; ties on (addr,port,id) broken by node
		{mustQ("web", "any"), "n1/b,n1/a,n2/a,n1/c"},
		{mustQ("web", "passing,warning"), "n1/a,n2/a,n1/c"},
		{mustQ("web", "critical"), "n1/b"},
		// tag.name spellings resolve against the catalog before a backend sees them
		// (backends.ResolveQuery); here the tag is explicit.
		{mustQ("web", "tag=blue,any"), "n1/b,n2/a"},
		{mustQ("web", "tag=blue"), "n2/a"},
		{mustQ("web", "tag=nosuchtag,any"), ""},
	}
	for _, tt := range tests {
		if got := keys(filterEntries(tt.q, entries, log)); got != tt.want {
			t.Errorf("%s: got %s, want %s", tt.q, got, tt.want)
		}
	}
}

func TestSummariesSortedWithUniqueTags(t *testing.T) {
	got := summaries(map[string][]string{"web": {"b", "a", "b"}, "consul": nil, "db": {}})
	if len(got) != 3 || got[0].Name != "consul" || got[1].Name != "db" || got[2].Name != "web" {
		t.Fatalf("order: %+v", got)
	}
	if strings.Join(got[2].Tags, ",") != "a,b" {
		t.Errorf("web tags = %v, want [a b]", got[2].Tags)
	}
	if got[0].Tags == nil {
		t.Error("nil tags: want an empty list so that equal catalogs compare equal")
	}
}

func TestNewValidatesWithoutTouchingTheNetwork(t *testing.T) {
	bad := []string{
		"consul://127.0.0.1:8500/some/path",
		"consul://127.0.0.1:8500?datacenter=dc1",
	}
	for _, raw := range bad {
		ep, err := backends.ParseURL(raw)
		if err != nil {
			t.Fatalf("ParseURL(%s): %v", raw, err)
		}
		if _, err := New(backends.Config{}, ep); err == nil {
			t.Errorf("New(%s) accepted it", raw)
		}
	}
	if _, err := New(backends.Config{}, backends.Endpoint{Scheme: "etcd", Hosts: []string{"h:1"}}); err == nil {
		t.Error("New accepted an etcd endpoint")
	}

	// A port nothing listens on: New still succeeds, at once, and reports connecting.
	addr := deadAddr(t)
	ep, _ := backends.ParseURL("consul://" + addr + "?dc=dc7")
	start := time.Now()
	s, err := New(backends.Config{}, ep)
	if err != nil {
		t.Fatalf("New with the agent down: %v", err)
	}
	defer s.Close()
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("New took %v; it must not touch the network", d)
	}
	if st := s.State(); st.Conn != backends.Connecting || st.Endpoint != addr {
		t.Errorf("State = %+v, want connecting to %s", st, addr)
	}
	if s.dc != "dc7" || s.scheme != "http" || s.minGap != defaultMinGap || s.wait != defaultWait {
		t.Errorf("defaults: dc=%q scheme=%q minGap=%v wait=%v", s.dc, s.scheme, s.minGap, s.wait)
	}

	ep, _ = backends.ParseURL("consuls://" + addr)
	s2, _ := New(backends.Config{MinGap: -1}, ep)
	defer s2.Close()
	if s2.scheme != "https" || s2.minGap != 0 {
		t.Errorf("consuls://: scheme=%q minGap=%v, want https and no gap", s2.scheme, s2.minGap)
	}
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestReadsFailAfterTheDeadlineNamingEveryAgentAndCause(t *testing.T) {
	a1, a2 := deadAddr(t), deadAddr(t)
	ep, _ := backends.ParseURL("consul://" + a1 + "," + a2)
	const token = "s3cr3t-token-value"
	s, err := New(backends.Config{Token: token}, ep)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	reads := map[string]func(ctx context.Context) error{
		"Get":   func(ctx context.Context) error { _, _, err := s.Get(ctx, []string{"/app", "/db"}); return err },
		"Get /": func(ctx context.Context) error { _, _, err := s.Get(ctx, []string{"/"}); return err },
		"Services": func(ctx context.Context) error {
			_, _, err := s.Services(ctx, backends.ServiceQuery{Name: "web"})
			return err
		},
		"ServiceNames": func(ctx context.Context) error { _, _, err := s.ServiceNames(ctx); return err },
		"Register": func(ctx context.Context) error {
			_, err := s.Register(ctx, backends.Service{Name: "web", Port: 80}, backends.RegisterOptions{})
			return err
		},
	}
	for name, read := range reads {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
			defer cancel()
			start := time.Now()
			err := read(ctx)
			el := time.Since(start)
			if err == nil {
				t.Fatal("read succeeded with no agent up")
			}
			// It kept retrying until the deadline, then gave up promptly.
			if el < 600*time.Millisecond || el > 3*time.Second {
				t.Errorf("failed after %v, want about the 700ms deadline", el)
			}
			msg := err.Error()
			for _, want := range []string{a1, a2, "connection refused", "/v1/"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not name %q", msg, want)
				}
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("error does not wrap the deadline: %v", err)
			}
			if strings.Contains(msg, token) {
				t.Errorf("error leaks the token: %s", msg)
			}
		})
	}
	st := s.State()
	if st.Conn != backends.Down || st.Err == nil || !strings.Contains(st.Err.Error(), "connection refused") {
		t.Errorf("State = %+v, want down with the cause", st)
	}
	if strings.Contains(st.Err.Error(), token) {
		t.Error("State leaks the token")
	}
}

func TestWatchWithTheAgentDownRetriesUntilCanceledAndReportsDown(t *testing.T) {
	ep, _ := backends.ParseURL("consul://" + deadAddr(t))
	s, _ := New(backends.Config{}, ep)
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
	defer cancel()
	out := make(chan backends.Event, 1)
	err := s.Watch(ctx, backends.PrefixTarget("/app"), 0, out)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Watch returned %v, want ctx's error", err)
	}
	if len(out) != 0 {
		t.Errorf("Watch sent %+v with no agent", <-out)
	}
	if st := s.State(); st.Conn != backends.Down {
		t.Errorf("State = %+v, want down", st)
	}
}

func TestWatchEndsWhenTheStoreCloses(t *testing.T) {
	ep, _ := backends.ParseURL("consul://" + deadAddr(t))
	s, _ := New(backends.Config{}, ep)
	done := make(chan error, 1)
	go func() {
		done <- s.Watch(context.Background(), backends.ServiceTarget(backends.ServiceQuery{Name: "web"}), 0, make(chan backends.Event))
	}()
	time.Sleep(300 * time.Millisecond)
	s.Close()
	select {
	case err := <-done:
		if !errors.Is(err, errClosed) {
			t.Errorf("Watch after Close returned %v, want errClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not end after Close")
	}
}

func TestBackoffStaysWithinBounds(t *testing.T) {
	b := newBackoff()
	prevMax := time.Duration(0)
	for i := range 20 {
		d := b.Next()
		if d < 125*time.Millisecond || d > 5*time.Second {
			t.Fatalf("step %d: %v out of [125ms, 5s]", i, d)
		}
		prevMax = max(prevMax, d)
	}
	if prevMax < 2500*time.Millisecond {
		t.Errorf("backoff never grew past %v", prevMax)
	}
	b.Reset()
	if d := b.Next(); d > 250*time.Millisecond {
		t.Errorf("after reset: %v, want <= 250ms", d)
	}
}

func TestWatchRejectsServiceWithoutName(t *testing.T) {
	ep, _ := backends.ParseURL("consul://" + deadAddr(t))
	s, _ := New(backends.Config{}, ep)
	defer s.Close()
	err := s.Watch(context.Background(), backends.ServiceTarget(backends.ServiceQuery{}), 0, make(chan backends.Event))
	if err == nil {
		t.Fatal("Watch accepted a service query without a name")
	}
}

func TestSameData(t *testing.T) {
	a := backends.Event{KVs: map[string]string{"/a": "1"}, Revision: 1}
	b := backends.Event{KVs: map[string]string{"/a": "1"}, Revision: 2}
	if !sameData(a, b) {
		t.Error("same keys at different revisions differ")
	}
	b.KVs["/a"] = "2"
	if sameData(a, b) {
		t.Error("different values compare equal")
	}
	s1 := backends.Event{Services: []backends.Service{{ID: "x", Status: "passing"}}}
	s2 := backends.Event{Services: []backends.Service{{ID: "x", Status: "critical"}}}
	if sameData(s1, s2) {
		t.Error("a status change compares equal")
	}
}

func TestRegistrationBody(t *testing.T) {
	svc := backends.Service{Name: "api", Address: "10.0.0.1", Port: 80, Tags: []string{"a"}, Meta: map[string]string{"k": "v"}, Weight: 4}
	b := registrationBody(svc, "api-1", "service:api-1", 9*time.Second, backends.RegisterOptions{DeregisterAfter: 90 * time.Second})
	if b.ID != "api-1" || b.Name != "api" || b.Address != "10.0.0.1" || b.Port != 80 || b.Weights == nil || b.Weights.Passing != 4 {
		t.Errorf("service part = %+v", b)
	}
	c := b.Check
	if c.CheckID != "service:api-1" || c.TTL != "9s" || c.Status != "passing" || c.HTTP != "" || c.DeregisterCriticalServiceAfter != "1m30s" {
		t.Errorf("TTL check = %+v", c)
	}
	b = registrationBody(svc, "api-1", "service:api-1", 9*time.Second, backends.RegisterOptions{CheckHTTP: "http://x/health", CheckTimeout: 2 * time.Second})
	c = b.Check
	if c.HTTP != "http://x/health" || c.TTL != "" || c.Interval != "10s" || c.Timeout != "2s" || c.DeregisterCriticalServiceAfter != "" || c.Status != "" {
		t.Errorf("HTTP check = %+v", c)
	}
	b = registrationBody(backends.Service{Name: "db"}, "db", "service:db", time.Second, backends.RegisterOptions{CheckTCP: "h:5432", CheckInterval: 3 * time.Second})
	if c := b.Check; c.TCP != "h:5432" || c.Interval != "3s" || b.Weights != nil {
		t.Errorf("TCP check = %+v weights=%v", c, b.Weights)
	}
}

// The pacer lets a change after a quiet moment, and a burst of changes, through at once,
// and holds a target changing without pause to one query per gap.
func TestPacer(t *testing.T) {
	const gap = 50 * time.Millisecond
	t0 := time.Unix(1000, 0)
	p := newPacer(gap, 3)
	// A burst of three back to back: no wait.
	for i := range 3 {
		if w := p.take(t0); w != 0 {
			t.Fatalf("query %d of the burst waits %v", i, w)
		}
	}
	// The fourth, still at t0, waits one gap; the fifth, right after it, another one.
	if w := p.take(t0); w != gap {
		t.Fatalf("fourth query waits %v, want %v", w, gap)
	}
	if w := p.take(t0.Add(gap)); w != gap {
		t.Fatalf("fifth query waits %v, want %v", w, gap)
	}
	// A flapping target: 100 queries asked for over 1 s of wall time start no faster
	// than one per gap once the burst is spent.
	now := t0.Add(2 * gap)
	for range 100 {
		now = now.Add(10*time.Millisecond + p.take(now))
	}
	if el := now.Sub(t0.Add(2 * gap)); el < 99*gap {
		t.Fatalf("100 flapping queries took %v, want at least %v", el, 99*gap)
	}
	// After a quiet moment the bucket is full again: changes 50 ms apart (one per gap)
	// never wait, however many.
	now = now.Add(time.Minute)
	for i := range 200 {
		if w := p.take(now); w != 0 {
			t.Fatalf("change %d, one per gap after a quiet minute, waits %v", i, w)
		}
		now = now.Add(gap)
	}
	// No gap: no pacing.
	if w := newPacer(0, 1).take(t0); w != 0 {
		t.Fatalf("gap 0 waits %v", w)
	}
}

// decode sizes its buffer by the last answer to the same path: answers that grow, shrink
// or differ by path all decode whole.
func TestDecodeAnswersOfChangingSize(t *testing.T) {
	s, err := New(backends.Config{}, backends.Endpoint{Scheme: "consul", Hosts: []string{"127.0.0.1:8500"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	answer := func(n int) string {
		var b strings.Builder
		b.WriteString("[")
		for i := range n {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `{"Key":"app/k%04d","Value":"%s","ModifyIndex":%d}`, i, base64.StdEncoding.EncodeToString([]byte(fmt.Sprint("v", i))), i+1)
		}
		return b.String() + "]"
	}
	for _, c := range []struct {
		path string
		n    int
	}{{"/v1/kv/app", 1000}, {"/v1/kv/app", 10}, {"/v1/kv/app", 3000}, {"/v1/kv/other", 1}, {"/v1/kv/app", 3000}, {"/v1/kv/app", 0}} {
		var pairs []kvPair
		if err := s.decode(c.path, strings.NewReader(answer(c.n)), &pairs); err != nil {
			t.Fatalf("%s, %d pairs: %v", c.path, c.n, err)
		}
		if len(pairs) != c.n {
			t.Fatalf("%s: %d pairs decoded, want %d", c.path, len(pairs), c.n)
		}
		if c.n > 0 {
			if last := pairs[c.n-1]; last.Key != fmt.Sprintf("app/k%04d", c.n-1) || string(last.Value) != fmt.Sprint("v", c.n-1) || last.ModifyIndex != uint64(c.n) {
				t.Errorf("%s: last pair %+v", c.path, last)
			}
		}
	}
	if err := s.decode("/v1/kv/app", strings.NewReader(`[{"Key":`), new([]kvPair)); err == nil {
		t.Error("a truncated answer decoded without an error")
	}
}
