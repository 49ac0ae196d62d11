//go:build unix

// Package supervisor runs a program with keys from the registry as its environment (and,
// optionally, files rendered from templates next to it), and keeps it current: it starts
// the program once all data is loaded, restarts it or sends it a signal when the data
// changes, forwards the signals herald receives, and ends with the program's status.
// It is `herald exec`: what envconsul does for Consul, for every herald backend.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/resources"
	"github.com/heraldhq/herald/resources/engine"
	"github.com/heraldhq/herald/resources/engine/cache"
	"github.com/heraldhq/herald/template"
)

// Template is one file rendered before the child starts and on every change.
type Template struct {
	Src, Dest string
	Tmpl      *template.Template
}

// Config is everything a supervisor needs. Zero values of the durations and signals
// take the defaults documented on each field.
type Config struct {
	Store backends.Store
	// Prefixes whose keys become variables, in order: on a name collision the later
	// prefix wins (see Vars).
	Prefixes  []string
	Naming    Naming
	Pristine  bool     // the child gets only the registry's variables
	BaseEnv   []string // inherited variables when not Pristine (cmd/herald passes os.Environ())
	Templates []Template
	Command   Command

	Timeout      time.Duration  // for all data to load before the first start (default 10s)
	Wait         resources.Wait // quiescence before acting on a change
	Splay        time.Duration  // random extra delay in [0, Splay) before acting
	KillSignal   syscall.Signal // how to stop the child for a restart (default SIGTERM)
	KillTimeout  time.Duration  // then SIGKILL after this (default 30s)
	ReloadSignal syscall.Signal // when set, send this on a change instead of restarting
	Reap         bool           // reap every child that ends: herald runs as PID 1
	// Started, when set, is called once, after the child first started: start-up is over.
	Started func()

	Log *slog.Logger
}

func (c *Config) defaults() {
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.KillSignal == 0 {
		c.KillSignal = syscall.SIGTERM
	}
	if c.KillTimeout <= 0 {
		c.KillTimeout = 30 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// signalled ends the start-up when a terminating signal arrives before the child runs.
type signalled struct{ sig syscall.Signal }

func (e signalled) Error() string { return "received " + e.sig.String() + " before the child started" }

type supervisor struct {
	cfg    Config
	log    *slog.Logger
	eng    *engine.Engine
	cache  *cache.Cache
	syncer *resources.Syncer
	res    []*resources.Resource
	exits  chan exit

	child   *proc
	applied []Var // the variables the running child was started (or last signalled) with
}

// Run loads every key under the prefixes (failing after Timeout if the registry cannot
// be read), renders the templates, starts the child and supervises it until it exits,
// returning its exit status (128+n when signal n ended it). Signals arriving on sigs are
// forwarded to the child. When ctx ends, the child is stopped as for a restart and Run
// returns its status. An error is returned, with status 1, only when the child could
// not be started at all.
func Run(ctx context.Context, cfg Config, sigs <-chan os.Signal) (int, error) {
	cfg.defaults()
	if len(cfg.Command.Path) == 0 {
		return 1, errors.New("no command to run")
	}
	c := cache.New()
	s := &supervisor{
		cfg:    cfg,
		log:    cfg.Log,
		eng:    engine.New(cfg.Store, c, cfg.Log),
		cache:  c,
		syncer: &resources.Syncer{Log: cfg.Log},
		exits:  make(chan exit, 4),
	}
	for _, t := range cfg.Templates {
		s.res = append(s.res, &resources.Resource{Name: t.Src, Src: t.Src, Dest: t.Dest, UID: -1, GID: -1, Template: t.Tmpl})
	}
	defer s.eng.Stop()
	var chld chan os.Signal
	if cfg.Reap {
		chld = make(chan os.Signal, 1)
		signal.Notify(chld, syscall.SIGCHLD)
		defer signal.Stop(chld)
	}
	if err := s.startup(ctx, sigs); err != nil {
		var sig signalled
		if errors.As(err, &sig) {
			s.log.Info("signal before the child started; exiting", "signal", sig.sig)
			return 128 + int(sig.sig), nil
		}
		return 1, err
	}
	if err := s.spawn(); err != nil {
		return 1, err
	}
	if cfg.Started != nil {
		cfg.Started()
	}
	defer func() {
		if s.child != nil { // only on a path that forgot it; never leave it behind
			s.child.kill()
		}
	}()
	return s.loop(ctx, sigs, chld)
}

// startup loads the data and renders the templates, retrying while the registry cannot
// be read, for at most Timeout. A terminating signal meanwhile ends it.
func (s *supervisor) startup(ctx context.Context, sigs <-chan os.Signal) error {
	lctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.initial(lctx) }()
	for {
		select {
		case err := <-done:
			return err
		case sig := <-sigs:
			if ss, _ := sig.(syscall.Signal); terminating(ss) {
				cancel()
				<-done
				return signalled{ss}
			}
			s.log.Info("signal before the child started; ignored", "signal", sig)
		}
	}
}

func (s *supervisor) initial(ctx context.Context) error {
	var targets []backends.Target
	for _, p := range backends.MinimalPrefixes(s.cfg.Prefixes) {
		targets = append(targets, backends.PrefixTarget(p))
	}
	backoff := engine.StartupBackoff()
	for {
		err := s.load(ctx, targets)
		if err == nil {
			_, err = s.render(ctx)
		}
		switch {
		case err == nil:
			return nil
		case !engine.IsLoadError(err):
			return err
		case ctx.Err() != nil:
			return fmt.Errorf("registry not readable within --timeout %v: %w", s.cfg.Timeout, err)
		}
		s.log.Warn("registry not readable yet; retrying until --timeout", "timeout", s.cfg.Timeout, "err", err)
		if !engine.Sleep(ctx, &backoff) {
			return fmt.Errorf("registry not readable within --timeout %v: %w", s.cfg.Timeout, err)
		}
	}
}

// load reads every target the cache does not hold yet (all prefixes in one consistent
// read) and starts one watch for each, from the revision it was read at. Backends retry
// by themselves while the registry is down; meanwhile the child keeps the values it has.
func (s *supervisor) load(ctx context.Context, ts []backends.Target) error {
	if err := s.eng.Ensure(ctx, ts, true); err != nil {
		return engine.LoadError{Err: err}
	}
	return nil
}

// render renders every template from the cache, loading what a template turns out to
// read that is not loaded yet, and writes each file that changed atomically. A file whose
// render fails is left as it was.
func (s *supervisor) render(ctx context.Context) (changed bool, err error) {
	var errs []error
	for _, r := range s.res {
		out, err := s.execute(ctx, r)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		o, err := s.syncer.Sync(ctx, r, out)
		if err != nil {
			errs = append(errs, fmt.Errorf("template %s: %w", r.Src, err))
			continue
		}
		if o.Changed {
			changed = true
			s.log.Info("rendered", "template", r.Src, "dest", r.Dest)
		}
	}
	return changed, errors.Join(errs...)
}

func (s *supervisor) execute(ctx context.Context, r *resources.Resource) ([]byte, error) {
	var out []byte
	_, err := s.eng.Settle(engine.Render{
		Execute: func() (reads *template.Reads, err error) {
			// ctx (bounded by --timeout) also stops a template looping practically
			// forever at its next output or store read.
			s.cache.Read(func(v cache.View) { out, reads, err = r.Template.Execute(v, template.Options{Context: ctx}) })
			return reads, err
		},
		Load: func(missing []backends.Target, _ *template.Reads) error { return s.eng.Ensure(ctx, missing, true) },
	})
	if engine.IsLoadError(err) {
		return nil, fmt.Errorf("template %s: %w", r.Src, err)
	}
	return out, err
}

// vars computes the child's variables from the cache, logging collisions and skipped
// keys by name (values are never logged: they are often secrets).
func (s *supervisor) vars(logNotes bool) []Var {
	var (
		vars       []Var
		collisions []Collision
		skipped    []Skip
	)
	s.cache.Read(func(v cache.View) { vars, collisions, skipped = Vars(s.cfg.Prefixes, v.List, s.cfg.Naming) })
	if logNotes {
		for _, c := range collisions {
			s.log.Warn("two keys give one variable; the later one wins", "var", c.Name, "key", c.Key, "over", c.Lost)
		}
		for _, k := range skipped {
			s.log.Warn("key not passed to the child", "key", k.Key, "why", k.Why)
		}
	}
	return vars
}

// environ is the child's whole environment with vars.
func (s *supervisor) environ(vars []Var) []string {
	var base []string
	if !s.cfg.Pristine {
		base = s.cfg.BaseEnv
	}
	return Environ(base, vars)
}

func (s *supervisor) spawn() error {
	vars := s.vars(true)
	p, err := start(s.cfg.Command, s.environ(vars), s.cfg.Reap, s.exits)
	if err != nil {
		return err
	}
	s.child, s.applied = p, vars
	s.log.Info("child started", "pid", p.pid, "cmd", s.cfg.Command.Path, "vars", len(vars), "pristine", s.cfg.Pristine)
	s.log.Debug("child environment from the registry", "names", strings.Join(Names(vars), ","))
	return nil
}

// diffNames lists the variables that appeared, vanished or changed value.
func diffNames(old, cur []Var) []string {
	was := make(map[string]string, len(old))
	for _, v := range old {
		was[v.Name] = v.Value
	}
	var out []string
	for _, v := range cur {
		if w, ok := was[v.Name]; !ok || w != v.Value {
			out = append(out, v.Name)
		}
		delete(was, v.Name)
	}
	for n := range was {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}
