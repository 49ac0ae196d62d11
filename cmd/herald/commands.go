package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/backends/open"
	"github.com/heraldhq/herald/resources"
	"github.com/heraldhq/herald/resources/render"
)

func (o *Options) loadOptions() resources.LoadOptions {
	return resources.LoadOptions{
		ConfDir:        o.ConfDir,
		Prefix:         o.Prefix,
		PrefixReplaces: o.PrefixMode == "replace",
		CheckTimeout:   o.CheckTimeout,
		ReloadTimeout:  o.ReloadTimeout,
		SpareFiles:     o.SpareFiles,
	}
}

// setup builds the logger and opens the backend; tweaks adjust its configuration.
func setup(ctx context.Context, e env, o *Options, tweaks ...func(*backends.Config)) (*slog.Logger, backends.Store, error) {
	log, err := o.logger(e.stderr)
	if err != nil {
		return nil, nil, usageError{err}
	}
	cfg, err := o.backendConfig(log)
	if err != nil {
		return nil, nil, usageError{err}
	}
	for _, tweak := range tweaks {
		tweak(&cfg)
	}
	store, err := open.Open(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	return log, store, nil
}

func cmdCheck(_ context.Context, e env, o *Options, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", args)}
	}
	rs, loadErr := resources.Load(o.loadOptions())
	if loadErr != nil && len(rs) == 0 {
		return loadErr
	}
	if len(rs) == 0 {
		return fmt.Errorf("no resources in %s", filepath.Join(o.ConfDir, "conf.d"))
	}
	for _, r := range rs {
		for _, w := range r.Warnings {
			fmt.Fprintln(e.stderr, "herald check: warning:", w)
		}
	}
	// Run every valid template once against an empty store: what fails there fails on
	// every run (an undefined {{template}}, a wrong argument count or type), whatever the
	// data. Reported together with the broken files, so one pass fixes everything.
	errs := []error{loadErr}
	for _, r := range rs {
		var item any
		if r.Each != nil {
			item = r.Each.Sample()
		}
		if err := r.Template.CheckItem(item); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.File, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%d resources OK\n", len(rs))
	return nil
}

// warnNoResources says so when conf.d holds no resource: confd renders nothing without
// a word, and a mistyped --confdir would go unnoticed.
func warnNoResources(log *slog.Logger, o *Options, rs []*resources.Resource) {
	if len(rs) == 0 {
		log.Warn("no resources: nothing to render", "dir", filepath.Join(o.ConfDir, "conf.d"))
	}
}

func cmdRender(ctx context.Context, e env, o *Options, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", args)}
	}
	rs, loadErr := resources.Load(o.loadOptions())
	if loadErr != nil && len(rs) == 0 {
		return loadErr
	}
	var malformed skipped
	log, store, err := setup(ctx, e, o, malformed.tweak)
	if err != nil {
		return err
	}
	defer store.Close()
	warnResources(log, rs)
	warnNoResources(log, o, rs)
	// --timeout bounds the wait for the registry only: check and reload commands have
	// check_timeout and reload_timeout (with many resources, checks queue for a CPU
	// long after the data was read).
	rn := &render.Runner{
		Store:         store,
		Syncer:        &resources.Syncer{DryRun: o.DryRun, SyncOnly: o.SyncOnly, KeepStageFile: o.KeepStageFile, Diff: e.stdout, Log: log},
		Log:           log,
		ReadTimeout:   o.Timeout,
		RenderTimeout: o.RenderTimeout,
	}
	if !o.DryRun {
		resources.RemoveStaleStages(rs, log)
	}
	// Valid resources render even when another file is broken; the exit status says so.
	return errors.Join(loadErr, rn.RenderOnce(ctx, rs), malformed.err("rendered without them"))
}

func cmdWatch(ctx context.Context, e env, o *Options, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q", args)}
	}
	if o.Interval != 0 && o.Interval < minInterval {
		// 1ns would re-read the whole registry in a loop.
		return usageError{fmt.Errorf("--interval %s: want 0 (off) or at least %s", o.Interval, minInterval)}
	}
	wait, err := resources.ParseWait(o.Wait)
	if err != nil {
		return usageError{fmt.Errorf("--wait: %w", err)}
	}
	guard, err := o.guard()
	if err != nil {
		return usageError{err}
	}
	rs, loadErr := resources.Load(o.loadOptions())
	if loadErr != nil && len(rs) == 0 {
		return loadErr
	}
	log, store, err := setup(ctx, e, o)
	if err != nil {
		return err
	}
	defer store.Close()
	warnResources(log, rs)
	warnNoResources(log, o, rs)
	pr := newProcs(e, log)
	pr.fit(rs)
	if loadErr != nil {
		log.Error("some resources are invalid; the others run", "err", loadErr)
	}
	reg := prometheus.NewRegistry()
	rn := &render.Runner{
		Store:         store,
		Syncer:        &resources.Syncer{DryRun: o.DryRun, SyncOnly: o.SyncOnly, KeepStageFile: o.KeepStageFile, Diff: e.stdout, Log: log, Checks: pr.cpus},
		Log:           log,
		Metrics:       render.NewMetrics(reg),
		Wait:          wait,
		Interval:      o.Interval,
		RenderTimeout: o.RenderTimeout,
		Guard:         guard,
		Execs:         pr.cpus,
	}
	rn.SetLoadError(loadErr)
	if o.Pprof && o.Listen == "" {
		return errors.New("--pprof needs --listen")
	}
	if o.Listen != "" {
		stopServe, err := serve(o.Listen, reg, rn, store, o.Pprof, log)
		if err != nil {
			return err
		}
		defer stopServe()
	}
	dmn := newDaemon(e, log)
	defer dmn.close()
	rn.Beat = func() { dmn.watchBeat(rn.Progress(), store.State()) }
	rn.BeatEvery = dmn.every()
	defer dmn.stopOnDone(ctx)()
	updates := make(chan resources.ResourceSet, 1)
	stopReload, err := watchConfDir(ctx, o, log, e.hup, updates, dmn, pr)
	if err != nil {
		return err
	}
	defer stopReload()
	stopReg, err := startRegistrations(ctx, o, store, log)
	if err != nil {
		return err
	}
	defer stopReg()
	if !o.DryRun {
		resources.RemoveStaleStages(rs, log)
	}
	log.Info("herald watching", "resources", len(rs), "backend", backends.Redact(o.Backend), "version", versionString())
	return rn.Run(ctx, rs, updates)
}

// minInterval is the shortest --interval: each one re-reads every watched target.
const minInterval = time.Second

// watchConfDir sends a fresh resource set on SIGHUP and whenever a file under conf.d/ or
// templates/ changes, and tells systemd it is reloading until the runner has the new set.
func watchConfDir(ctx context.Context, o *Options, log *slog.Logger, hup <-chan os.Signal, updates chan<- resources.ResourceSet, dmn *daemon, pr *procs) (func(), error) {
	trees := []string{filepath.Join(o.ConfDir, "conf.d"), filepath.Join(o.ConfDir, "templates")}
	return watchFiles(ctx, trees, nil, hup, log, func(ctx context.Context, why string) {
		dmn.reloading()
		defer dmn.reloaded()
		rs, err := resources.Load(o.loadOptions())
		warnResources(log, rs)
		set := resources.NewResourceSet(rs, err)
		if err != nil {
			log.Error("resource reload found errors; the previous version of those resources keeps running", "err", err)
		}
		log.Info("resources reloaded", "why", why, "resources", len(rs))
		pr.fit(rs)
		select {
		case updates <- set:
		case <-ctx.Done():
		}
	})
}

// warnResources logs what resource files hold that herald ignores as confd does (an
// unknown owner name), each naming the file and line.
func warnResources(log *slog.Logger, rs []*resources.Resource) {
	for _, r := range rs {
		for _, w := range r.Warnings {
			log.Warn(w.Error())
		}
	}
}

func cmdGet(ctx context.Context, e env, o *Options, args []string) error {
	if len(args) != 1 {
		return usageError{errors.New("want exactly one PREFIX, e.g. herald get /myapp")}
	}
	_, store, err := setup(ctx, e, o)
	if err != nil {
		return err
	}
	defer store.Close()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	prefix := backends.CleanKey(filepathJoinPrefix(o.Prefix, args[0]))
	kvs, _, err := store.Get(ctx, []string{prefix})
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(kvs))
	for k := range kvs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(e.stdout, "%s = %s\n", printable(k, false), printable(kvs[k], true))
	}
	return nil
}

// printable returns s as is when it is plain text, else Go-quoted: a control character
// (a terminal escape sequence, a carriage return that hides what precedes it), a
// bidirectional override or invalid UTF-8 must not reach the terminal raw. Values are
// also quoted when a quote or edge space would make them ambiguous.
func printable(s string, value bool) string {
	plain := utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return r != ' ' && !unicode.IsPrint(r) })
	if value {
		plain = plain && !strings.Contains(s, `"`) && strings.TrimSpace(s) == s
	}
	if plain {
		return s
	}
	return strconv.Quote(s)
}

func filepathJoinPrefix(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return strings.TrimRight(prefix, "/") + "/" + strings.TrimLeft(key, "/")
}

func cmdServices(ctx context.Context, e env, o *Options, args []string) error {
	if len(args) > 2 {
		return usageError{errors.New("want [NAME [FILTER]], e.g. herald services web any")}
	}
	var q backends.ServiceQuery
	if len(args) > 0 {
		var err error
		if q, err = backends.ParseServiceQuery(args[0], args[1:]...); err != nil {
			return usageError{err}
		}
	}
	var malformed skipped
	_, store, err := setup(ctx, e, o, malformed.tweak)
	if err != nil {
		return err
	}
	defer store.Close()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	names, _, err := store.ServiceNames(ctx)
	if err != nil {
		return err
	}
	if len(args) == 0 {
		for _, n := range names {
			fmt.Fprintf(e.stdout, "%s\t%s\n", n.Name, strings.Join(n.Tags, ","))
		}
		return malformed.err("not listed")
	}
	q = backends.ResolveQuery(q, names)
	if !backends.InCatalog(names, q.Name) {
		// Not an empty table: a typo or a wrong layout must not look like a service
		// with nothing running.
		return errors.Join(errors.New(resources.MissingServicesMessage([]string{q.Name}, names)), malformed.err("not listed"))
	}
	svcs, _, err := store.Services(ctx, q)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDRESS\tPORT\tSTATUS\tTAGS\tMETA\tNODE\tKEY")
	for _, s := range svcs {
		meta, _ := json.Marshal(s.Meta)
		if len(s.Meta) == 0 {
			meta = nil
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Address, s.Port, s.Status,
			strings.Join(s.Tags, ","), meta, s.Node, s.Key)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return malformed.err("not listed")
}
