package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sync"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/resources"
	"github.com/heraldhq/herald/resources/render"
	"github.com/heraldhq/herald/template"
)

const templateUsage = `Usage: herald template [flags] FILE|-

Renders one template (a file, or - for stdin) against the backend and prints it to stdout,
once; with --watch, again on every change of what it reads. No resource file is needed:
the template has the whole function catalogue, keys are inferred from what it reads, and
it can call the partials in <confdir>/templates/partials. A missing key or any other
error exits 1. Flags are template's own (below) and the global ones (--backend,
--prefix, --confdir, --timeout, --wait, ...; herald render -h lists them).

Flags (flags only, no HERALD_ variable):
`

// templateFlags are the flags of `herald template` that the global table does not have.
type templateFlags struct {
	watch bool
	out   string
}

// options is template's own option table (see ownflags.go). Its flags have no
// variable: they describe one invocation.
func (f *templateFlags) options() []option {
	return []option{
		{name: "out", noEnv: true, usage: "write to this file (atomically, like a resource's dest) instead of stdout", bind: strOpt(&f.out, "")},
		{name: "watch", noEnv: true, usage: "keep running: render again whenever what the template reads changes", bind: boolOpt(&f.watch)},
	}
}

// runTemplateCmd is `herald template [flags] FILE|-`. It returns herald's exit status.
func runTemplateCmd(ctx context.Context, e env, args []string) int {
	if err := runTemplate(ctx, e, args); err != nil {
		fmt.Fprintln(e.stderr, "herald template:", err)
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return 0
}

func runTemplate(ctx context.Context, e env, args []string) error {
	o, f, src, err := templateArgs(e, args)
	if err != nil || src == "" { // "" after -h
		return err
	}
	wait, err := resources.ParseWait(o.Wait)
	if err != nil {
		return usageError{fmt.Errorf("--wait: %w", err)}
	}
	text := ""
	if src == "-" {
		stdin := e.stdin
		if stdin == nil {
			stdin = os.Stdin
		}
		b, err := io.ReadAll(stdin)
		if err != nil {
			return fmt.Errorf("read template from stdin: %w", err)
		}
		text = string(b)
	}
	r, err := templateResource(o, f, src, text)
	if err != nil {
		return err
	}
	var malformed skipped // once: exit 1 naming them, as render does
	tweaks := []func(*backends.Config){malformed.tweak}
	if f.watch {
		tweaks = nil // logged as warnings, like herald watch
	}
	log, store, err := setup(ctx, e, o, tweaks...)
	if err != nil {
		return err
	}
	defer store.Close()
	rn := &render.Runner{
		Store:  store,
		Syncer: &resources.Syncer{DryRun: o.DryRun, SyncOnly: o.SyncOnly, KeepStageFile: o.KeepStageFile, Diff: e.stdout, Log: log},
		Log:    log,
	}
	if f.out == "" {
		rn.Emit = (&stdoutEmitter{w: e.stdout}).emit
	}
	if !f.watch {
		// The returned error says everything; the runner's log lines would repeat it
		// around the output of a script's command substitution.
		rn.Log = nil
		ctx, cancel := context.WithTimeout(ctx, o.Timeout)
		defer cancel()
		return errors.Join(rn.RenderOnce(ctx, []*resources.Resource{r}), malformed.err("rendered without them"))
	}
	rn.Wait, rn.Interval = wait, o.Interval
	updates := make(chan resources.ResourceSet, 1)
	stop, err := followTemplate(ctx, o, f, src, text, log, e.hup, updates)
	if err != nil {
		return err
	}
	defer stop()
	log.Info("herald template watching", "template", r.Name, "dest", r.Dest, "backend", backends.Redact(o.Backend), "version", versionString())
	return rn.Run(ctx, []*resources.Resource{r}, updates)
}

// templateArgs parses the command line: the global options, template's own flags, and
// the one template (src "" when -h was asked for).
func templateArgs(e env, args []string) (*Options, templateFlags, string, error) {
	var (
		o Options
		f templateFlags
	)
	fs := flag.NewFlagSet("herald template", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	tbl := o.bindOptions(fs)
	bindOwn(fs, f.options())
	fs.Usage = func() { printTemplateUsage(e.stderr) }
	// Flags may also follow the template: herald template app.tmpl --watch.
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return &o, f, "", nil
		}
		return nil, f, "", usageError{errors.New("bad flags (see herald template -h)")}
	}
	if len(pos) != 1 || pos[0] == "" {
		return nil, f, "", usageError{errors.New("want exactly one template: a FILE, or - for stdin")}
	}
	if err := e.resolveOptions(&o, fs, tbl); err != nil {
		return nil, f, "", usageError{err}
	}
	return &o, f, pos[0], nil
}

// followTemplate re-parses the template when its file or a partial changes (or on
// SIGHUP) and sends the new version; a broken edit is logged and the previous version
// keeps running.
func followTemplate(ctx context.Context, o *Options, f templateFlags, src, text string, log *slog.Logger, hup <-chan os.Signal, updates chan<- resources.ResourceSet) (func(), error) {
	partials, err := filepath.Abs(resources.PartialsDir(o.ConfDir))
	if err != nil {
		return nil, err
	}
	var files []string
	if src != "-" {
		abs, err := filepath.Abs(src)
		if err != nil {
			return nil, err
		}
		files = append(files, abs)
	}
	return watchFiles(ctx, []string{partials}, files, hup, log, func(ctx context.Context, why string) {
		r, err := templateResource(o, f, src, text)
		if err != nil {
			log.Error("template reload failed; the previous version keeps running", "why", why, "err", err)
			return
		}
		select {
		case updates <- resources.ResourceSet{Resources: []*resources.Resource{r}}:
		case <-ctx.Done():
		}
	})
}

// templateResource parses the template (the file src, or text for "-") with the
// confdir's partials into a resource whose dest is --out, or "-" for stdout.
func templateResource(o *Options, f templateFlags, src, text string) (*resources.Resource, error) {
	partials := template.LoadPartials(resources.PartialsDir(o.ConfDir))
	var (
		t   *template.Template
		err error
	)
	name := src
	if src == "-" {
		name = "<stdin>"
		t, err = partials.Parse(name, text)
	} else {
		t, err = partials.ParseFile(src)
	}
	if err != nil {
		// A template that calls a partial fails when the partials have errors: say which.
		return nil, errors.Join(err, partials.Err())
	}
	r := &resources.Resource{
		Name:          name,
		File:          src,
		Src:           src,
		Dest:          "-",
		Prefix:        path.Join("/", o.Prefix),
		UID:           -1,
		GID:           -1,
		CheckTimeout:  o.CheckTimeout,
		ReloadTimeout: o.ReloadTimeout,
		Template:      t,
		Fingerprint:   resources.Fingerprint(t, text),
	}
	if f.out != "" {
		if r.Dest, err = filepath.Abs(f.out); err != nil {
			return nil, fmt.Errorf("--out %s: %w", f.out, err)
		}
		if fi, err := os.Stat(r.Dest); err == nil && !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("--out %s: not a regular file", r.Dest)
		}
	}
	return r, nil
}

// stdoutEmitter prints each render that differs from the one printed before it, so
// --watch prints once per real change, not once per touched key.
type stdoutEmitter struct {
	w    io.Writer
	mu   sync.Mutex
	last []byte
	any  bool
}

func (s *stdoutEmitter) emit(_ *resources.Resource, content []byte) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.any && bytes.Equal(s.last, content) {
		return false, nil
	}
	if _, err := s.w.Write(content); err != nil {
		return false, fmt.Errorf("write to stdout: %w", err)
	}
	s.last, s.any = content, true
	return true, nil
}

func printTemplateUsage(w io.Writer) {
	fmt.Fprint(w, templateUsage)
	for _, opt := range (&templateFlags{}).options() {
		fmt.Fprintf(w, "  --%s\n      %s\n", opt.name, opt.usage)
	}
}
