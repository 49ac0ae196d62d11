// Package announce announces one service instance in a registry for as long as the
// instance is healthy and herald runs: the engine behind `herald register` and the
// [[register]] tables of `herald watch`.
//
// An Announcer drives a backends.Registrar (etcd lease, ZooKeeper ephemeral node, Consul
// agent service): it registers once the local health check passes (at once without one),
// retries with backoff while the registry cannot be reached, withdraws the instance (or
// marks it critical) after Fall consecutive failed checks and announces it again after
// Rise passing ones, and deregisters within a bounded time when its context ends. The
// liveness itself (lease keepalive, session, TTL check) is the backend's job.
//
// What "register" names, and where each lives:
//   - backends.Registrar, Registration, RegisterOptions: a backend's one registration
//     call and its handle (etcd lease, ZooKeeper ephemeral znode, Consul agent service);
//   - backends.RegisterPolicy: what each backend declares about its registry (checks it
//     runs itself, how long a taken ID is waited for, abandoned entries); Options.For
//     applies it, so no caller switches on the backend;
//   - backends.ErrTaken: the one "ID held by another process" error all backends wrap;
//   - Config: one instance as the user writes it, a `herald register` command line or a
//     herald.toml [[register]] table; Announcer: keeps it announced over time (here);
//   - `herald register` (cmd/herald/register.go): the CLI daemon around Announcers.
package announce

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/backends"
)

// Defaults, documented in the README's `herald register` section.
const (
	// DefaultTTL is the lease / TTL-check length: an instance whose herald died is gone
	// about this long after. 10 s rides out an etcd leader election, a registry restart
	// or a long GC pause without flapping, costs one keepalive per instance every ~3 s,
	// and matches ZooKeeper's usual session timeout, so all backends detect a dead
	// instance in the same time.
	DefaultTTL             = 10 * time.Second
	DefaultCheckInterval   = 2 * time.Second
	DefaultCheckTimeout    = time.Second
	DefaultRise            = 1
	DefaultFall            = 2
	DefaultDeregisterAfter = time.Minute
	DefaultAttemptTimeout  = 10 * time.Second
	DefaultStopTimeout     = 5 * time.Second
	DefaultMinBackoff      = 500 * time.Millisecond
	DefaultMaxBackoff      = 5 * time.Second
)

// State is where an announcement stands.
type State string

const (
	StateChecking    State = "checking"    // waiting for the health check to pass before announcing
	StateRegistering State = "registering" // trying to register (registry unreachable, ID held by another)
	StateAnnounced   State = "announced"   // registered and healthy
	StateWithdrawn   State = "withdrawn"   // registered, failing its health check: withdrawn or critical
	StateStopping    State = "stopping"
	StateStopped     State = "stopped"
	StateFailed      State = "failed" // gave up (the ID belongs to another process)
)

// Status is an announcement's current state, for logs and /healthz.
type Status struct {
	Service string    `json:"service"`
	ID      string    `json:"id"`
	State   State     `json:"state"`
	Since   time.Time `json:"since"`
	Error   string    `json:"error,omitempty"` // why the last attempt or check failed
}

// Options configure an Announcer. Zero durations and counts take the defaults above.
type Options struct {
	Service  backends.Service
	Register backends.RegisterOptions

	// Check is the local health check; nil announces at once and never withdraws (the
	// backend's liveness, or a check Consul runs itself, is all there is).
	Check         Check
	CheckInterval time.Duration
	CheckTimeout  time.Duration
	Rise          int // consecutive passes that (re-)announce
	Fall          int // consecutive failures that withdraw

	// AttemptTimeout bounds one Register or SetHealthy call; then it is retried.
	AttemptTimeout time.Duration
	// IsTaken reports an error meaning the ID is registered by another process. Such a
	// refusal is retried for ClaimWait (a killed herald's entry expiring), then it is
	// final. nil: no error is one.
	IsTaken   func(error) bool
	ClaimWait time.Duration
	// Abandoned, when set, is asked while the ID is refused: true means the entry holding
	// it was left by a process that is gone (Consul: its TTL check expired, critical),
	// and the next attempt takes it over as with Replace.
	Abandoned func(ctx context.Context) (bool, error)
	// StopTimeout bounds the deregistration when the context ends.
	StopTimeout time.Duration

	MinBackoff, MaxBackoff time.Duration

	Log *slog.Logger
}

// ErrTaken wraps the backend's refusal once ClaimWait has passed. It is
// backends.ErrTaken, which every backend's refusal wraps too.
var ErrTaken = backends.ErrTaken

// Announcer keeps one instance announced. Create it with New, then call Run.
type Announcer struct {
	r   backends.Registrar
	o   Options
	log *slog.Logger

	mu sync.Mutex
	st Status
}

var segmentOK = regexp.MustCompile(`^[A-Za-z0-9_.:@-]+$`)

// New validates o, fills in defaults and returns an Announcer.
func New(r backends.Registrar, o Options) (*Announcer, error) {
	s := o.Service
	what := fmt.Sprintf("register %s/%s", s.Name, s.ID)
	switch {
	case r == nil:
		return nil, fmt.Errorf("%s: the backend cannot register services", what)
	case !segmentOK.MatchString(s.Name) || s.Name == "." || s.Name == "..":
		return nil, fmt.Errorf("%s: service name %q: want letters, digits and _ . : @ - only", what, s.Name)
	case !segmentOK.MatchString(s.ID) || s.ID == "." || s.ID == "..":
		return nil, fmt.Errorf("%s: instance ID %q: want letters, digits and _ . : @ - only", what, s.ID)
	case strings.TrimSpace(s.Address) == "":
		return nil, fmt.Errorf("%s: no address", what)
	case s.Port < 1 || s.Port > 65535:
		return nil, fmt.Errorf("%s: port %d: want 1-65535", what, s.Port)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.Register.TTL, DefaultTTL)
	def(&o.CheckInterval, DefaultCheckInterval)
	def(&o.CheckTimeout, DefaultCheckTimeout)
	def(&o.AttemptTimeout, DefaultAttemptTimeout)
	def(&o.StopTimeout, DefaultStopTimeout)
	def(&o.MinBackoff, DefaultMinBackoff)
	def(&o.MaxBackoff, DefaultMaxBackoff)
	if o.Rise <= 0 {
		o.Rise = DefaultRise
	}
	if o.Fall <= 0 {
		o.Fall = DefaultFall
	}
	if o.Register.TTL < time.Second {
		return nil, fmt.Errorf("%s: TTL %v: want at least 1s", what, o.Register.TTL)
	}
	if o.CheckTimeout > o.CheckInterval {
		return nil, fmt.Errorf("%s: check timeout %v is longer than the check interval %v", what, o.CheckTimeout, o.CheckInterval)
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Announcer{r: r, o: o, log: log.With("service", s.Name, "id", s.ID)}
	a.st = Status{Service: s.Name, ID: s.ID, State: StateRegistering, Since: time.Now()}
	return a, nil
}

// Status returns the current state.
func (a *Announcer) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st
}

func (a *Announcer) set(st State, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st.State != st {
		a.st.State, a.st.Since = st, time.Now()
	}
	a.st.Error = ""
	if err != nil {
		a.st.Error = err.Error()
	}
}

// enter moves to st; if already there, the last error stays visible (a retry in
// progress has not cleared it).
func (a *Announcer) enter(st State) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st.State != st {
		a.st.State, a.st.Since, a.st.Error = st, time.Now(), ""
	}
}

// verdict is the health check's judgement after Rise/Fall.
type verdict struct {
	healthy bool
	note    string
}

// Run keeps the instance announced until ctx ends, then deregisters it (waiting at most
// StopTimeout) and returns nil. It returns an error wrapping ErrTaken, without waiting
// for ctx, when the ID stays registered by another process for longer than ClaimWait.
func (a *Announcer) Run(ctx context.Context) error {
	// The registration outlives ctx until Deregister is done with it.
	life, endLife := context.WithCancel(context.WithoutCancel(ctx))
	defer endLife()

	health := make(chan verdict, 1)
	desired := verdict{healthy: true}
	var checks sync.WaitGroup
	defer checks.Wait()
	// Also ends the checks when Run gives up before ctx ends.
	checkCtx, stopChecks := context.WithCancel(ctx)
	defer stopChecks()
	if a.o.Check != nil {
		desired = verdict{healthy: false}
		a.set(StateChecking, nil)
		a.log.Info("waiting for the health check to pass before announcing", "check", a.o.Check.String(),
			"interval", a.o.CheckInterval, "timeout", a.o.CheckTimeout, "rise", a.o.Rise, "fall", a.o.Fall)
		checks.Add(1)
		go func() {
			defer checks.Done()
			a.checkLoop(checkCtx, health)
		}()
	}

	st := &runState{desired: desired, delays: backends.Backoff{Min: a.o.MinBackoff, Max: a.o.MaxBackoff}}
	defer func() {
		if st.end != nil {
			st.end(nil)
		}
	}()
	for {
		if st.retry == nil && ctx.Err() == nil {
			switch {
			case st.reg == nil && st.desired.healthy:
				again, err := a.tryRegister(ctx, life, st)
				if err != nil {
					return err
				}
				if again {
					continue
				}
			case st.reg != nil && st.applied != st.desired.healthy:
				a.tryHealth(ctx, st)
			}
		}
		select {
		case <-ctx.Done():
			return a.stop(ctx, st.reg, endLife)
		case v := <-health:
			st.desired = v
			if st.reg == nil && !v.healthy {
				a.set(StateChecking, errors.New(v.note))
				a.log.Warn("health check failing; not announcing until it passes", "note", v.note)
			}
			// A changed verdict is acted on at once, backoff or not.
			st.retry = nil
		case <-st.retry:
			st.retry = nil
		}
	}
}

// runState is Run's loop state: the registration and what it was last told, and the
// retry of the step that failed.
type runState struct {
	reg     backends.Registration
	end     context.CancelCauseFunc // ends reg's lifetime once Run is done with it
	applied bool                    // the health reg was last told (Register announces healthy)
	desired verdict                 // the health check's latest verdict

	retry    <-chan time.Time // nil: no step waits for a retry
	failures int
	delays   backends.Backoff
	warned   logLimiter

	takenSince time.Time // when the instance ID was first found taken; zero: it was not
	takeOver   bool      // the entry holding the ID is abandoned: replace it
}

// failed schedules the next attempt of a step that failed.
func (st *runState) failed() {
	st.failures++
	st.retry = time.After(st.delays.Next())
}

// succeeded ends the retries of a step.
func (st *runState) succeeded() {
	st.failures = 0
	st.delays.Reset()
	st.warned = logLimiter{}
}

// tryRegister makes one registration attempt. again: try once more at once (the entry
// holding the ID turned out abandoned); err: give up (the ID belongs to another process).
func (a *Announcer) tryRegister(ctx, life context.Context, st *runState) (again bool, _ error) {
	a.enter(StateRegistering)
	opts := a.o.Register
	opts.Replace = opts.Replace || st.takeOver
	r, end, err := a.register(ctx, life, opts)
	switch {
	case err == nil:
		st.reg, st.end, st.applied, st.takenSince = r, end, true, time.Time{}
		st.succeeded()
		a.set(StateAnnounced, nil)
		a.log.Info("announced", "address", a.o.Service.Address, "port", a.o.Service.Port)
	case ctx.Err() != nil:
	case a.o.IsTaken != nil && a.o.IsTaken(err):
		if st.takenSince.IsZero() {
			st.takenSince = time.Now()
			if a.o.ClaimWait > 0 {
				a.log.Warn("the instance ID is registered by another process; waiting in case it is the entry of a herald that was killed and is about to expire",
					"wait", a.o.ClaimWait, "err", err.Error())
			}
		}
		if !st.takeOver && a.abandoned(ctx) {
			st.takeOver = true
			a.log.Warn("the entry holding the instance ID is critical: left by a herald that is gone; taking it over", "err", err.Error())
			return true, nil
		}
		st.takeOver = false
		if time.Since(st.takenSince) >= a.o.ClaimWait {
			err = fmt.Errorf("service %s: %w: %w (use --replace, or replace = true in herald.toml, to take it over)", a.o.Service.Name, ErrTaken, err)
			a.set(StateFailed, err)
			a.log.Error("giving up: the instance ID belongs to another process", "err", err.Error())
			return false, err
		}
		a.set(StateRegistering, err)
		st.retry = time.After(min(time.Second, max(a.o.ClaimWait/4, 10*time.Millisecond)))
	default:
		a.set(StateRegistering, err)
		st.failed()
		if st.warned.ok(err) {
			a.log.Warn("cannot register; retrying with backoff", "err", err.Error(), "attempt", st.failures)
		} else {
			a.log.Debug("cannot register; retrying", "err", err.Error(), "attempt", st.failures)
		}
	}
	return false, nil
}

// tryHealth tells the registration the health check's latest verdict.
func (a *Announcer) tryHealth(ctx context.Context, st *runState) {
	err := a.setHealthy(ctx, st.reg, st.desired)
	switch {
	case err == nil:
		st.applied = st.desired.healthy
		st.succeeded()
		if st.desired.healthy {
			a.set(StateAnnounced, nil)
			a.log.Info("health check passes again; announced", "note", st.desired.note)
		} else {
			a.set(StateWithdrawn, errors.New(st.desired.note))
			a.log.Warn("health check failing; instance withdrawn (Consul: marked critical)", "note", st.desired.note)
		}
	case ctx.Err() != nil:
	default:
		st.failed()
		a.set(a.Status().State, err)
		if st.warned.ok(err) {
			a.log.Warn("cannot update the registration's health; retrying", "healthy", st.desired.healthy, "err", err.Error())
		}
	}
}

// register makes one Register call, cut short after AttemptTimeout or when ctx ends.
// The context handed to the backend is also the registration's lifetime, so it must
// outlive a successful call: the timeout is disarmed once Register returns.
func (a *Announcer) register(ctx, life context.Context, opts backends.RegisterOptions) (backends.Registration, context.CancelCauseFunc, error) {
	actx, cancel := context.WithCancelCause(life)
	timer := time.AfterFunc(a.o.AttemptTimeout, func() {
		cancel(fmt.Errorf("no answer within %v", a.o.AttemptTimeout))
	})
	stopOnEnd := context.AfterFunc(ctx, func() { cancel(context.Canceled) })
	r, err := a.r.Register(actx, a.o.Service, opts)
	timedOut := !timer.Stop()
	ended := !stopOnEnd()
	if timedOut || ended || actx.Err() != nil {
		cause := context.Cause(actx)
		cancel(nil)
		if r != nil {
			// Registered just as the attempt was abandoned: undo it.
			dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), a.o.StopTimeout)
			_ = r.Deregister(dctx)
			dcancel()
		}
		switch {
		case err == nil:
			err = cause
		case timedOut:
			err = fmt.Errorf("%v: %w", cause, err)
		}
		return nil, nil, err
	}
	if err != nil {
		cancel(nil)
		return nil, nil, err
	}
	// actx must live on with the registration: the caller cancels it after Deregister.
	return r, cancel, nil
}

// abandoned asks Options.Abandoned, bounded by AttemptTimeout; an error counts as no.
func (a *Announcer) abandoned(ctx context.Context) bool {
	if a.o.Abandoned == nil {
		return false
	}
	cctx, cancel := context.WithTimeout(ctx, a.o.AttemptTimeout)
	defer cancel()
	gone, err := a.o.Abandoned(cctx)
	if err != nil {
		a.log.Debug("cannot tell whether the ID's holder is gone", "err", err.Error())
	}
	return err == nil && gone
}

func (a *Announcer) setHealthy(ctx context.Context, reg backends.Registration, v verdict) error {
	cctx, cancel := context.WithTimeout(ctx, a.o.AttemptTimeout)
	defer cancel()
	note := v.note
	if note == "" {
		note = "herald: health check passing"
	}
	return reg.SetHealthy(cctx, v.healthy, note)
}

// stop deregisters, bounded by StopTimeout even if the backend ignores its context.
func (a *Announcer) stop(ctx context.Context, reg backends.Registration, endLife context.CancelFunc) error {
	defer endLife()
	if reg == nil {
		a.set(StateStopped, nil)
		a.log.Info("stopped; nothing was registered")
		return nil
	}
	a.set(StateStopping, nil)
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.o.StopTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- reg.Deregister(dctx) }()
	var err error
	select {
	case err = <-done:
	case <-time.After(a.o.StopTimeout + 500*time.Millisecond):
		err = fmt.Errorf("deregistration still running after %v", a.o.StopTimeout)
	}
	if err != nil {
		a.set(StateStopped, err)
		a.log.Warn("could not deregister; the instance stays listed until its TTL or session expires", "err", err.Error(), "ttl", a.o.Register.TTL)
		return nil
	}
	a.set(StateStopped, nil)
	a.log.Info("deregistered")
	return nil
}

// checkLoop runs the health check every CheckInterval and sends a verdict whenever Rise
// passes or Fall failures in a row change it. The first verdict is "unhealthy" only
// after Fall failures, so a slow start logs no alarm for one failed check.
func (a *Announcer) checkLoop(ctx context.Context, out chan verdict) {
	tk := time.NewTicker(a.o.CheckInterval)
	defer tk.Stop()
	var passes, fails int
	known, healthy := false, false
	send := func(v verdict) {
		select {
		case <-out: // replaced by the newer verdict
		default:
		}
		out <- v
	}
	for {
		cctx, cancel := context.WithTimeout(ctx, a.o.CheckTimeout)
		err := a.o.Check.Check(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			passes, fails = passes+1, 0
			if (!known || !healthy) && passes >= a.o.Rise {
				known, healthy = true, true
				send(verdict{healthy: true, note: "herald: " + a.o.Check.String() + " passing"})
			}
		} else {
			passes, fails = 0, fails+1
			a.log.Debug("health check failed", "err", err.Error(), "in_a_row", fails, "fall", a.o.Fall)
			if healthy && fails == 1 && a.o.Fall > 1 {
				a.log.Info("health check failed; withdrawing if it keeps failing", "err", err.Error(), "fall", a.o.Fall)
			}
			if (!known || healthy) && fails >= a.o.Fall {
				known, healthy = true, false
				send(verdict{healthy: false, note: "herald: " + err.Error()})
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
	}
}

// logLimiter lets a repeated failure through at warning level when it is new or every
// 30 s, so a registry down for an hour does not flood the log.
type logLimiter struct {
	last    string
	lastAt  time.Time
	skipped int
}

func (l *logLimiter) ok(err error) bool {
	msg := err.Error()
	if msg != l.last || time.Since(l.lastAt) >= 30*time.Second {
		l.last, l.lastAt, l.skipped = msg, time.Now(), 0
		return true
	}
	l.skipped++
	return false
}

var idUnsafe = regexp.MustCompile(`[^A-Za-z0-9_.]+`)

// DefaultID is the instance ID used when none is given: <service>-<address>-<port> with
// every run of characters other than letters, digits, '_' and '.' turned into one '-'
// (IPv6 colons included). It is stable for an address and port, so a restarted herald
// takes its own entry over instead of adding a second one.
func DefaultID(service, address string, port int) string {
	s := idUnsafe.ReplaceAllString(service+"-"+address+"-"+strconv.Itoa(port), "-")
	return strings.Trim(s, "-")
}
