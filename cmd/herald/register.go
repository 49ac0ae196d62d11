package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/backends/open"
	"github.com/heraldhq/herald/resources/announce"
)

// registerFlags are `herald register`'s own flags. They describe one instance, the same
// fields as a [[register]] table of herald.toml.
type registerFlags struct {
	rc           RegisterConfig
	checkTimeout string
	tags         listFlag
	meta         listFlag
}

// options is `herald register`'s own option table (see ownflags.go), in the order help
// lists it.
func (rf *registerFlags) options() []option {
	rc := &rf.rc
	rf.checkTimeout = announce.DefaultCheckTimeout.String()
	return []option{
		{name: "service", usage: "service name (required)", bind: strOpt(&rc.Service, "")},
		{name: "address", usage: "address clients dial: host name or IP (required)", bind: strOpt(&rc.Address, "")},
		{name: "port", usage: "port clients dial (required)", bind: intOpt(&rc.Port, 0)},
		{name: "id", usage: "instance ID (default <service>-<address>-<port>, sanitized)", bind: strOpt(&rc.ID, "")},
		{name: "tag", list: true, usage: "tag; repeat for several", bind: listOpt(&rf.tags)},
		{name: "meta", list: true, usage: "metadata key=value; repeat for several", bind: listOpt(&rf.meta)},
		{name: "ttl", usage: "etcd lease and Consul TTL check length; ZooKeeper session timeout unless --session-timeout is given", bind: strOpt(&rc.TTL, announce.DefaultTTL.String())},
		{name: "check", usage: "health check: http://host:port/path (2xx/3xx passes) or tcp://host:port; on Consul, run by the agent", bind: strOpt(&rc.Check, "")},
		{name: "check-cmd", usage: "health check command, run with /bin/sh -c; exit 0 passes", bind: strOpt(&rc.CheckCmd, "")},
		{name: "check-interval", usage: "how often the health check runs", bind: strOpt(&rc.CheckInterval, announce.DefaultCheckInterval.String())},
		// The global --check-timeout is check_cmd's timeout for resources. For register, the
		// flag on the command line is the health check's (parseRegister swaps its value);
		// HERALD_CHECK_TIMEOUT and a check_timeout key keep their resource meaning.
		{name: "check-timeout", noEnv: true, def: rf.checkTimeout, usage: "timeout of one health check (flag only: HERALD_CHECK_TIMEOUT is check_cmd's)"},
		{name: "check-rise", usage: "passing checks in a row that (re-)announce", bind: intOpt(&rc.CheckRise, announce.DefaultRise)},
		{name: "check-fall", usage: "failing checks in a row that withdraw the instance (Consul: critical)", bind: intOpt(&rc.CheckFall, announce.DefaultFall)},
		{name: "deregister-after", usage: "Consul: remove an instance critical this long (Consul's minimum is 1m)", bind: strOpt(&rc.DeregisterAfter, announce.DefaultDeregisterAfter.String())},
		{name: "replace", usage: "take the ID over from another process instead of failing", bind: boolOpt(&rc.Replace)},
		{name: "format", usage: "etcd, ZooKeeper: herald (JSON, default), hostport (value ip:port; ZooKeeper: node host:port, zc.zk) or curator (Apache Curator ServiceInstance)", bind: strOpt(&rc.Format, "")},
	}
}

// config returns the instance the flags describe.
func (rf *registerFlags) config() (RegisterConfig, error) {
	rc := rf.rc
	rc.CheckTimeout = rf.checkTimeout
	rc.Tags = append([]string(nil), rf.tags...)
	for _, kv := range rf.meta {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return rc, fmt.Errorf("--meta %q: want key=value", kv)
		}
		if rc.Meta == nil {
			rc.Meta = map[string]string{}
		}
		rc.Meta[k] = v
	}
	return rc, nil
}

// runRegister is `herald register`. It parses its own flags on top of the global ones
// (which it shares with every command), then announces until SIGTERM/SIGINT.
func runRegister(ctx context.Context, e env, args []string) int {
	o, rf, fs, err := parseRegister(e, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if !errors.Is(err, errFlagParse) {
			fmt.Fprintln(e.stderr, "herald:", err)
		}
		return 2
	}
	if err := cmdRegister(ctx, e, o, fs, rf); err != nil {
		fmt.Fprintf(e.stderr, "herald register: %v\n", err)
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

// errFlagParse: the flag package has already printed what is wrong.
var errFlagParse = errors.New("bad flags")

// parseRegister resolves the global options and the register flags (flag > HERALD_* >
// herald.toml > default, as for every command).
func parseRegister(e env, args []string) (*Options, *registerFlags, *flag.FlagSet, error) {
	o, rf := &Options{}, &registerFlags{}
	fs := flag.NewFlagSet("herald register", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	tbl := o.bindOptions(fs)
	rtbl := rf.options()
	bindOwn(fs, rtbl)
	// --check-timeout given on the command line is the health check's: swap the global
	// flag's value for ours before parsing, and back afterwards when it was not given,
	// so that HERALD_CHECK_TIMEOUT and herald.toml's check_timeout still mean what they
	// mean for resources.
	ct := fs.Lookup("check-timeout")
	globalCT := ct.Value
	ct.Value = (*stringValue)(&rf.checkTimeout)
	fs.Usage = func() { printRegisterUsage(e, fs, tbl, rtbl) }
	positional, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, nil, err
		}
		return nil, nil, nil, errFlagParse
	}
	if len(positional) > 0 {
		return nil, nil, nil, fmt.Errorf("register: unexpected arguments %q (everything is a flag, e.g. --service web)", positional)
	}
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "check-timeout" })
	if !given {
		ct.Value = globalCT
	}
	if err := e.resolveOptions(o, fs, tbl); err != nil {
		return nil, nil, nil, err
	}
	if err := ownFromEnv(fs, rtbl, e.lookup); err != nil {
		return nil, nil, nil, err
	}
	return o, rf, fs, nil
}

type stringValue string

func (s *stringValue) String() string     { return string(*s) }
func (s *stringValue) Set(v string) error { *s = stringValue(v); return nil }

func printRegisterUsage(e env, fs *flag.FlagSet, tbl []option, own []option) {
	fmt.Fprint(e.stderr, `Usage: herald register --backend URL --service NAME --address HOST --port N [flags]

Announces one instance and keeps it announced while it is healthy; SIGTERM deregisters
it and exits 0. Without --service, announces every [[register]] table of herald.toml.

Registration flags (each also HERALD_<NAME>):
`)
	defaults := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) { defaults[f.Name] = f.DefValue })
	for _, f := range own {
		if f.def != "" {
			defaults[f.name] = f.def
		}
		def := ""
		if d := defaults[f.name]; d != "" && d != "false" && d != "0" && d != "[]" {
			def = " (default " + d + ")"
		}
		fmt.Fprintf(e.stderr, "  --%s\n      %s%s\n", f.name, f.usage, def)
	}
	var globals []option
	for _, opt := range tbl {
		if opt.name != "check-timeout" {
			globals = append(globals, opt)
		}
	}
	var b strings.Builder
	printFlags(&b, "register", fs, globals)
	// Drop printFlags' own usage line: ours is above.
	g := b.String()
	if i := strings.Index(g, "Flags ("); i >= 0 {
		g = "\nGlobal f" + g[i+1:]
	}
	fmt.Fprint(e.stderr, g)
}

func cmdRegister(ctx context.Context, e env, o *Options, fs *flag.FlagSet, rf *registerFlags) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var entries []RegisterConfig
	fromFlags := rf.rc.Service != "" || rf.rc.Address != "" || rf.rc.Port != 0
	if fromFlags {
		rc, err := rf.config()
		if err != nil {
			return usageError{err}
		}
		entries = []RegisterConfig{rc}
	} else {
		entries = o.file.Register
	}
	if len(entries) == 0 {
		return usageError{errors.New("nothing to register: pass --service NAME --address HOST --port N, or put [[register]] tables in herald.toml")}
	}
	log, err := o.logger(e.stderr)
	if err != nil {
		return usageError{err}
	}
	if o.Backend == "" {
		return usageError{errors.New("no backend: pass --backend (etcd://h:2379, zookeeper://h:2181, consul://h:8500), set HERALD_BACKEND, or put backend in herald.toml")}
	}
	if _, err := backends.ParseURL(o.Backend); err != nil {
		return usageError{err}
	}
	// On ZooKeeper the session is the liveness: --ttl sets it, unless
	// --session-timeout (flag, variable or file) says otherwise. Only ZooKeeper has a
	// session, so no backend needs naming here.
	if fromFlags && set["ttl"] && !set["session-timeout"] {
		if d, err := time.ParseDuration(rf.rc.TTL); err == nil && d > 0 {
			o.SessionTimeout = d
		}
	}
	specs, err := registerSpecs(o, entries, fromFlags, log)
	if err != nil {
		return usageError{err}
	}
	cfg, err := o.backendConfig(log)
	if err != nil {
		return usageError{err}
	}
	store, err := open.Open(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	anns, err := announcers(store, o.Backend, specs)
	if err != nil {
		return err
	}
	if o.Listen != "" {
		stop, err := serveRegisterHealth(o.Listen, store, anns, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	log.Info("herald registering", "backend", backends.Redact(o.Backend), "instances", len(anns), "version", versionString())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(anns))
	for _, a := range anns {
		go func() {
			err := a.Run(ctx)
			if err != nil {
				cancel() // one instance cannot be announced: stop (and deregister) the others
			}
			errs <- err
		}()
	}
	return waitAnnouncers(ctx, e, store, anns, errs, log)
}

// waitAnnouncers collects the announcers' ends and, while they run, tells systemd
// (Type=notify) how they are doing: READY=1 once every instance is registered.
func waitAnnouncers(ctx context.Context, e env, store backends.Store, anns []*announce.Announcer, errs <-chan error, log *slog.Logger) error {
	dmn := newDaemon(e, log)
	defer dmn.close()
	defer dmn.stopOnDone(ctx)()
	beat := func() {
		sts := make([]announce.Status, len(anns))
		for i, a := range anns {
			sts[i] = a.Status()
		}
		dmn.update(registerStatus(sts, store.State()))
	}
	tick := time.NewTicker(min(dmn.every(), time.Second))
	defer tick.Stop()
	var all []error
	for left := len(anns); left > 0; {
		select {
		case err := <-errs:
			left--
			if err != nil {
				all = append(all, err)
			}
		case <-tick.C:
			beat()
		}
	}
	return errors.Join(all...)
}

// registerSpecs validates every entry before anything is announced.
func registerSpecs(o *Options, entries []RegisterConfig, fromFlags bool, log *slog.Logger) ([]registerSpec, error) {
	var specs []registerSpec
	var errs []error
	for i, rc := range entries {
		where := "herald register"
		if !fromFlags {
			where = fmt.Sprintf("%s: [[register]] #%d", configName(o), i+1)
			if rc.Service != "" {
				where += " (" + rc.Service + ")"
			}
		}
		s, err := spec(rc, where, fromFlags, o, log)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		specs = append(specs, s)
	}
	seen := map[string]string{}
	for _, s := range specs {
		k := s.opts.Service.Name + "/" + s.opts.Service.ID
		if prev, ok := seen[k]; ok {
			errs = append(errs, fmt.Errorf("%s: instance %s is also registered by %s", s.where, k, prev))
		}
		seen[k] = s.where
	}
	return specs, errors.Join(errs...)
}

func configName(o *Options) string {
	if o.Config != "" {
		return o.Config
	}
	return "/etc/herald/herald.toml"
}

func announcers(store backends.Store, url string, specs []registerSpec) ([]*announce.Announcer, error) {
	r, ok := store.(backends.Registrar)
	if !ok {
		return nil, fmt.Errorf("backend %s cannot register services (etcd, zookeeper and consul can)", backends.Redact(url))
	}
	var anns []*announce.Announcer
	for _, s := range specs {
		a, err := announce.New(r, s.opts.For(r))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.where, err)
		}
		anns = append(anns, a)
	}
	return anns, nil
}

// startRegistrations announces herald.toml's [[register]] instances alongside `herald
// watch`, sharing its backend connection. The returned function deregisters them (each
// bounded by its stop timeout) and waits. An instance that cannot be announced is
// logged; the watch keeps rendering.
func startRegistrations(ctx context.Context, o *Options, store backends.Store, log *slog.Logger) (func(), error) {
	if len(o.file.Register) == 0 {
		return func() {}, nil
	}
	specs, err := registerSpecs(o, o.file.Register, false, log)
	if err != nil {
		return nil, err
	}
	anns, err := announcers(store, o.Backend, specs)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, a := range anns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Run(ctx); err != nil {
				log.Error("an instance of herald.toml cannot be announced; rendering goes on", "err", err.Error())
			}
		}()
	}
	return func() { cancel(); wg.Wait() }, nil
}

// serveRegisterHealth serves /healthz for `herald register --listen`: 200 when every
// instance is announced, else 503; the body has each instance's state and the backend's.
func serveRegisterHealth(addr string, store backends.Store, anns []*announce.Announcer, log *slog.Logger) (func(), error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		st := store.State()
		body := struct {
			OK        bool              `json:"ok"`
			Backend   backendHealth     `json:"backend"`
			Instances []announce.Status `json:"instances"`
		}{OK: true, Backend: newBackendHealth(st)}
		for _, a := range anns {
			s := a.Status()
			body.OK = body.OK && s.State == announce.StateAnnounced
			body.Instances = append(body.Instances, s)
		}
		sort.Slice(body.Instances, func(i, j int) bool {
			return body.Instances[i].Service+"/"+body.Instances[i].ID < body.Instances[j].Service+"/"+body.Instances[j].ID
		})
		w.Header().Set("Content-Type", "application/json")
		if !body.OK {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		json.NewEncoder(w).Encode(body)
	})
	return listenHTTP(addr, mux, log, "serving /healthz")
}
