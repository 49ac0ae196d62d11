package announce

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/backends"
)

// The announcer's decisions (when to register, withdraw, retry, give up) are tested here
// against a registrar that records calls; the real backends are exercised end to end by
// integration/register_test.go.

type recRegistrar struct {
	events chan string

	mu         sync.Mutex
	register   func(ctx context.Context, n int, opts backends.RegisterOptions) error // nil: succeed
	setHealthy func(n int, healthy bool) error
	deregister func(ctx context.Context) error
	regCalls   int
	setCalls   int
	regCtx     context.Context // of the successful Register
	opts       []backends.RegisterOptions
}

func newRec() *recRegistrar { return &recRegistrar{events: make(chan string, 1000)} }

func (r *recRegistrar) Register(ctx context.Context, svc backends.Service, opts backends.RegisterOptions) (backends.Registration, error) {
	r.mu.Lock()
	r.regCalls++
	n, hook := r.regCalls, r.register
	r.opts = append(r.opts, opts)
	r.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, n, opts); err != nil {
			r.events <- "register failed"
			return nil, err
		}
	}
	r.mu.Lock()
	r.regCtx = ctx
	r.mu.Unlock()
	r.events <- "register"
	return (*recRegistration)(r), nil
}

type recRegistration recRegistrar

func (g *recRegistration) SetHealthy(ctx context.Context, healthy bool, note string) error {
	r := (*recRegistrar)(g)
	r.mu.Lock()
	r.setCalls++
	n, hook := r.setCalls, r.setHealthy
	r.mu.Unlock()
	if hook != nil {
		if err := hook(n, healthy); err != nil {
			r.events <- "set failed"
			return err
		}
	}
	if healthy {
		r.events <- "healthy"
	} else {
		r.events <- "unhealthy"
	}
	return nil
}

func (g *recRegistration) Deregister(ctx context.Context) error {
	r := (*recRegistrar)(g)
	r.mu.Lock()
	hook, life := r.deregister, r.regCtx
	r.mu.Unlock()
	if life.Err() != nil {
		r.events <- "deregister after the registration's context ended"
	}
	if hook != nil {
		if err := hook(ctx); err != nil {
			return err
		}
	}
	r.events <- "deregister"
	return nil
}

// expect waits for the next event and fails unless it is want.
func (r *recRegistrar) expect(t *testing.T, want string, within time.Duration) {
	t.Helper()
	select {
	case got := <-r.events:
		if got != want {
			t.Fatalf("event %q, want %q", got, want)
		}
	case <-time.After(within):
		t.Fatalf("no %q within %v", want, within)
	}
}

// none fails on any event seen so far. Call it once a later positive event proves that
// an earlier one was not acted on, never after a fixed sleep.
func (r *recRegistrar) none(t *testing.T) {
	t.Helper()
	select {
	case got := <-r.events:
		t.Fatalf("unexpected event %q", got)
	default:
	}
}

// waitFor polls cond until it holds, failing after 3 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 3s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func testOptions() Options {
	return Options{
		Service:        backends.Service{Name: "web", ID: "web-1", Address: "10.0.0.1", Port: 80},
		CheckInterval:  20 * time.Millisecond,
		CheckTimeout:   10 * time.Millisecond,
		AttemptTimeout: time.Second,
		StopTimeout:    time.Second,
		MinBackoff:     10 * time.Millisecond,
		MaxBackoff:     40 * time.Millisecond,
	}
}

// run starts a.Run; the returned function cancels it and returns Run's result.
func run(t *testing.T, a *Announcer) (stop func() error, done <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	go func() { ch <- a.Run(ctx) }()
	t.Cleanup(cancel)
	return func() error {
		cancel()
		select {
		case err := <-ch:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return within 5s of its context ending")
			return nil
		}
	}, ch
}

func waitState(t *testing.T, a *Announcer, want State) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for a.Status().State != want {
		if time.Now().After(deadline) {
			t.Fatalf("state %+v, want %s", a.Status(), want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestAnnouncerWithoutCheckRegistersAtOnceAndDeregistersOnStop(t *testing.T) {
	r := newRec()
	a, err := New(r, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	stop, _ := run(t, a)
	r.expect(t, "register", time.Second)
	waitState(t, a, StateAnnounced)
	if got := r.opts[0].TTL; got != DefaultTTL {
		t.Fatalf("TTL %v, want the default %v", got, DefaultTTL)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	// Deregister ran while the registration's context was still alive (a backend
	// tied to it would otherwise drop it before Deregister could act).
	r.expect(t, "deregister", time.Second)
	if a.Status().State != StateStopped {
		t.Fatalf("state %s after stop", a.Status().State)
	}
	if r.regCtx.Err() == nil {
		t.Fatal("the registration's context outlived Run")
	}
}

func TestAnnouncerRetriesUntilTheRegistryAnswers(t *testing.T) {
	r := newRec()
	r.register = func(_ context.Context, n int, _ backends.RegisterOptions) error {
		if n <= 3 {
			return errors.New("dial tcp 127.0.0.1:2379: connection refused")
		}
		return nil
	}
	a, _ := New(r, testOptions())
	stop, _ := run(t, a)
	for range 3 {
		r.expect(t, "register failed", time.Second)
	}
	// The recorder sees the failure just before the announcer records it; the
	// error then stays visible through the next attempts.
	deadline := time.Now().Add(time.Second)
	for st := a.Status(); st.State != StateRegistering || !strings.Contains(st.Error, "connection refused"); st = a.Status() {
		if time.Now().After(deadline) {
			t.Fatalf("status while failing: %+v", st)
		}
		time.Sleep(time.Millisecond)
	}
	r.expect(t, "register", time.Second)
	waitState(t, a, StateAnnounced)
	stop()
}

// A Register call that hangs is cut at AttemptTimeout and retried; the successful one's
// context is not cut by that timeout afterwards.
func TestAnnouncerAttemptTimeoutDoesNotEndTheRegistration(t *testing.T) {
	r := newRec()
	r.register = func(ctx context.Context, n int, _ backends.RegisterOptions) error {
		if n == 1 {
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	}
	o := testOptions()
	o.AttemptTimeout = 50 * time.Millisecond
	a, _ := New(r, o)
	stop, _ := run(t, a)
	r.expect(t, "register failed", time.Second)
	r.expect(t, "register", time.Second)
	time.Sleep(3 * o.AttemptTimeout)
	if err := r.regCtx.Err(); err != nil {
		t.Fatalf("the registration's context ended (%v) while Run goes on", err)
	}
	stop()
}

func TestAnnouncerStopsPromptlyDuringAHangingRegister(t *testing.T) {
	r := newRec()
	r.register = func(ctx context.Context, _ int, _ backends.RegisterOptions) error {
		<-ctx.Done()
		return ctx.Err()
	}
	o := testOptions()
	o.AttemptTimeout = time.Minute
	a, _ := New(r, o)
	stop, _ := run(t, a)
	waitFor(t, "Register call", func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.regCalls > 0 })
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Run took %v to stop", d)
	}
}

var errHeld = errors.New("held by lease 1234")

func TestAnnouncerGivesUpOnATakenIDAfterTheClaimWait(t *testing.T) {
	r := newRec()
	r.register = func(context.Context, int, backends.RegisterOptions) error { return errHeld }
	o := testOptions()
	o.Check = &scripted{} // passing; its loop must end when Run gives up
	o.IsTaken = func(err error) bool { return errors.Is(err, errHeld) }
	o.ClaimWait = 200 * time.Millisecond
	a, _ := New(r, o)
	start := time.Now()
	_, done := run(t, a)
	select {
	case err := <-done:
		if !errors.Is(err, ErrTaken) || !errors.Is(err, errHeld) || !strings.Contains(err.Error(), "web") || !strings.Contains(err.Error(), "--replace") {
			t.Fatalf("Run = %v; want ErrTaken naming the service and --replace", err)
		}
		if d := time.Since(start); d < o.ClaimWait {
			t.Fatalf("gave up after %v, before the claim wait %v", d, o.ClaimWait)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not give up on a taken ID")
	}
	if a.Status().State != StateFailed {
		t.Fatalf("state %s", a.Status().State)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.regCalls < 2 {
		t.Fatalf("%d attempts; want retries during the claim wait", r.regCalls)
	}
}

func TestAnnouncerGetsATakenIDWhenTheOldEntryExpires(t *testing.T) {
	r := newRec()
	r.register = func(_ context.Context, n int, _ backends.RegisterOptions) error {
		if n <= 2 {
			return errHeld
		}
		return nil
	}
	o := testOptions()
	o.IsTaken = func(err error) bool { return errors.Is(err, errHeld) }
	o.ClaimWait = 2 * time.Second
	a, _ := New(r, o)
	stop, _ := run(t, a)
	r.expect(t, "register failed", time.Second)
	r.expect(t, "register failed", 2*time.Second)
	r.expect(t, "register", 2*time.Second)
	if r.opts[2].Replace {
		t.Fatal("took the ID over with Replace; it was free")
	}
	stop()
}

func TestAnnouncerTakesOverAnAbandonedEntry(t *testing.T) {
	r := newRec()
	r.register = func(_ context.Context, _ int, opts backends.RegisterOptions) error {
		if !opts.Replace {
			return errHeld
		}
		return nil
	}
	o := testOptions()
	o.IsTaken = func(err error) bool { return errors.Is(err, errHeld) }
	o.ClaimWait = 5 * time.Second
	var asked atomic.Int32
	o.Abandoned = func(context.Context) (bool, error) { return asked.Add(1) >= 2, nil }
	a, _ := New(r, o)
	stop, _ := run(t, a)
	r.expect(t, "register failed", time.Second)
	r.expect(t, "register failed", 3*time.Second) // the next claim attempt, ClaimWait/4 later
	r.expect(t, "register", time.Second)
	if n := len(r.opts); n != 3 || r.opts[0].Replace || r.opts[1].Replace || !r.opts[2].Replace {
		t.Fatalf("Register calls %+v; want Replace only once the entry was found abandoned", r.opts)
	}
	stop()
}

// scripted is a health check the test drives.
type scripted struct {
	failing  atomic.Bool
	failNext atomic.Int32
	runs     atomic.Int32
}

func (s *scripted) Check(context.Context) error {
	s.runs.Add(1)
	if s.failNext.Load() > 0 {
		s.failNext.Add(-1)
		return errors.New("HTTP 503")
	}
	if s.failing.Load() {
		return errors.New("HTTP 500")
	}
	return nil
}
func (s *scripted) String() string { return "scripted check" }

func TestAnnouncerHealthCheckRiseAndFall(t *testing.T) {
	r := newRec()
	c := &scripted{}
	c.failing.Store(true)
	o := testOptions()
	o.Check = c
	a, _ := New(r, o)
	stop, _ := run(t, a)

	// Failing from the start: never registered. Run has taken the failing verdict (its
	// status names the failure) and the check has run again since.
	waitFor(t, "failing verdict", func() bool { return strings.Contains(a.Status().Error, "HTTP 500") })
	seen := c.runs.Load()
	waitFor(t, "later check", func() bool { return c.runs.Load() > seen })
	r.none(t)
	if st := a.Status(); st.State != StateChecking || !strings.Contains(st.Error, "HTTP 500") {
		t.Fatalf("status while failing at start: %+v", st)
	}
	c.failing.Store(false)
	r.expect(t, "register", time.Second)
	waitState(t, a, StateAnnounced)

	// One failure is below the default fall of 2: nothing happens.
	// Once the check after the failure has run (and passed), the failure is known not to
	// have been acted on.
	before := c.runs.Load()
	c.failNext.Store(1)
	waitFor(t, "a failed then a passing check", func() bool { return c.failNext.Load() == 0 && c.runs.Load() >= before+2 })
	r.none(t)

	c.failing.Store(true)
	r.expect(t, "unhealthy", time.Second)
	waitState(t, a, StateWithdrawn)
	c.failing.Store(false)
	r.expect(t, "healthy", time.Second)
	waitState(t, a, StateAnnounced)
	stop()
	r.expect(t, "deregister", time.Second)
}

func TestAnnouncerRetriesAFailedWithdrawal(t *testing.T) {
	r := newRec()
	r.setHealthy = func(n int, _ bool) error {
		if n <= 2 {
			return errors.New("etcd unavailable")
		}
		return nil
	}
	c := &scripted{}
	o := testOptions()
	o.Check = c
	a, _ := New(r, o)
	stop, _ := run(t, a)
	r.expect(t, "register", time.Second)
	c.failing.Store(true)
	r.expect(t, "set failed", time.Second)
	r.expect(t, "set failed", time.Second)
	r.expect(t, "unhealthy", time.Second)
	waitState(t, a, StateWithdrawn)
	stop()
}

func TestAnnouncerStopIsBoundedWhenDeregisterHangs(t *testing.T) {
	r := newRec()
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	r.deregister = func(context.Context) error { <-block; return nil } // ignores its context
	o := testOptions()
	o.StopTimeout = 100 * time.Millisecond
	a, _ := New(r, o)
	stop, _ := run(t, a)
	r.expect(t, "register", time.Second)
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("Run = %v; a failed deregistration is logged, not returned", err)
	}
	if d := time.Since(start); d > o.StopTimeout+time.Second {
		t.Fatalf("stop took %v with a hanging Deregister (StopTimeout %v)", d, o.StopTimeout)
	}
	if st := a.Status(); st.State != StateStopped || st.Error == "" {
		t.Fatalf("status %+v; want stopped with the deregistration error", st)
	}
}

func TestNewRefusesBadInstances(t *testing.T) {
	good := testOptions()
	for _, c := range []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"no name", func(o *Options) { o.Service.Name = "" }, "service name"},
		{"slash in name", func(o *Options) { o.Service.Name = "a/b" }, "service name"},
		{"dot-dot ID", func(o *Options) { o.Service.ID = ".." }, "instance ID"},
		{"slash in ID", func(o *Options) { o.Service.ID = "x/y" }, "instance ID"},
		{"no address", func(o *Options) { o.Service.Address = " " }, "no address"},
		{"port 0", func(o *Options) { o.Service.Port = 0 }, "port 0"},
		{"port too big", func(o *Options) { o.Service.Port = 70000 }, "port 70000"},
		{"sub-second TTL", func(o *Options) { o.Register.TTL = 500 * time.Millisecond }, "TTL"},
		{"timeout above interval", func(o *Options) { o.CheckTimeout = time.Second }, "longer than the check interval"},
	} {
		o := good
		c.mod(&o)
		if _, err := New(newRec(), o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: New = %v; want an error with %q", c.name, err, c.want)
		}
	}
	if _, err := New(nil, good); err == nil {
		t.Error("New(nil registrar) succeeded")
	}
}
