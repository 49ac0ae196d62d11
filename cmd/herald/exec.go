//go:build unix

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/resources"
	"github.com/heraldhq/herald/resources/supervisor"
	"github.com/heraldhq/herald/template"
)

const execUsage = `Usage: herald exec [flags] -- CMD [ARGS...]

Runs CMD with every key under each --prefix as an environment variable, restarts it (or
sends it --reload-signal) when they change, forwards TERM, INT, HUP, QUIT, USR1 and USR2
to it, and exits with its status. Flags are exec's own (below) and the global ones
(--backend, --timeout, --wait, ...; herald render -h lists them), except that --prefix
here is the repeatable list of prefixes whose keys become variables.

Flags (each also HERALD_<NAME>, except --prefix and --template):
`

// execFlags are the flags of `herald exec` that the global table does not have.
type execFlags struct {
	prefixes     listFlag
	templates    listFlag
	upcase       bool
	envPrefix    string
	pristine     bool
	killSignal   string
	killTimeout  time.Duration
	reloadSignal string
	splay        time.Duration
}

// options is exec's own option table (see ownflags.go), in the order help lists it.
// --prefix and --template have no variable: HERALD_PREFIX is the global prefix.
func (f *execFlags) options() []option {
	dur := durOpt
	return []option{
		{name: "env-prefix", usage: "put this before every variable name, e.g. APP_", bind: strOpt(&f.envPrefix, "")},
		{name: "kill-signal", usage: "signal that stops the child for a restart", bind: strOpt(&f.killSignal, "SIGTERM")},
		{name: "kill-timeout", usage: "then SIGKILL the child (and its process group) after this", bind: dur(&f.killTimeout, 30*time.Second)},
		{name: "prefix", noEnv: true, list: true, usage: "key prefix whose keys become variables; repeat it, a later prefix wins a name collision", bind: listOpt(&f.prefixes)},
		{name: "pristine", usage: "start the child with only the registry's variables, not herald's environment", bind: boolOpt(&f.pristine)},
		{name: "reload-signal", usage: "on a change, send this signal instead of restarting, e.g. SIGHUP", bind: strOpt(&f.reloadSignal, "")},
		{name: "splay", usage: "wait a random time up to this before acting on a change", bind: dur(&f.splay, 0)},
		{name: "template", noEnv: true, list: true, usage: "render template IN to file OUT (IN:OUT) before the child starts and on every change; repeatable", bind: listOpt(&f.templates)},
		{name: "upcase", usage: "upper-case the variable names", bind: boolOpt(&f.upcase)},
	}
}

// runExecCmd is `herald exec [flags] -- CMD [ARGS]`: the global options and exec's own
// flags share one flag set, and exec's repeatable --prefix replaces the global one.
// It returns herald's exit status, which is the child's.
func runExecCmd(ctx context.Context, e env, args []string) int {
	code, err := runExec(ctx, e, args)
	if err != nil {
		fmt.Fprintln(e.stderr, "herald exec:", err)
		var ue usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	return code
}

func runExec(ctx context.Context, e env, args []string) (int, error) {
	var (
		o Options
		f execFlags
	)
	fs := flag.NewFlagSet("herald exec", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	tbl := o.bindOptions(fs, "prefix")
	own := f.options()
	bindOwn(fs, own)
	fs.Usage = func() { printExecUsage(e.stderr, fs) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, nil
		}
		return 0, usageError{errors.New("bad flags (see herald exec -h)")}
	}
	if err := e.resolveOptions(&o, fs, tbl); err != nil {
		return 0, usageError{err}
	}
	if err := ownFromEnv(fs, own, e.lookup); err != nil {
		return 0, usageError{err}
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return 0, usageError{errors.New("no command: herald exec [flags] -- CMD [ARGS...] (see herald exec -h)")}
	}
	cfg, err := f.config(&o)
	if err != nil {
		return 0, usageError{err}
	}
	if len(cfg.Prefixes) == 0 && len(cfg.Templates) == 0 {
		return 0, usageError{errors.New("nothing to read: give --prefix (repeatable) or --template")}
	}
	wait, err := resources.ParseWait(o.Wait)
	if err != nil {
		return 0, usageError{fmt.Errorf("--wait: %w", err)}
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return 0, fmt.Errorf("command %s: %w", argv[0], err)
	}
	// Listen before the registry is touched: a signal from now on reaches the child, or ends the
	// start-up. TERM and INT also cancel ctx (main's NotifyContext); from here on they
	// are forwarded instead, and herald ends when the child does.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, supervisor.Forwarded()...)
	defer signal.Stop(sigs)
	if ctx.Err() != nil { // one came before we listened
		sig := syscall.SIGTERM
		if c := context.Cause(ctx); c != nil && strings.HasPrefix(c.Error(), syscall.SIGINT.String()) {
			sig = syscall.SIGINT
		}
		return 128 + int(sig), nil
	}
	log, store, err := setup(ctx, e, &o)
	if err != nil {
		return 0, err
	}
	defer store.Close()

	cfg.Store, cfg.Log, cfg.Wait, cfg.Timeout = store, log, wait, o.Timeout
	cfg.BaseEnv = os.Environ()
	cfg.Command = supervisor.Command{Path: path, Args: argv[1:], Stdin: os.Stdin, Stdout: e.stdout, Stderr: e.stderr}
	cfg.Reap = os.Getpid() == 1
	cfg.Started = func() { go releasePages(log, "start-up", false) } // off the supervisor's path, as the daemon's

	log.Info("herald exec", "backend", backends.Redact(o.Backend), "prefixes", strings.Join(cfg.Prefixes, ","),
		"templates", len(cfg.Templates), "cmd", path, "reap", cfg.Reap, "version", versionString())
	return supervisor.Run(context.WithoutCancel(ctx), cfg, sigs)
}

// config checks the exec flags and turns them into the supervisor's configuration.
func (f *execFlags) config(o *Options) (supervisor.Config, error) {
	var cfg supervisor.Config
	for _, p := range f.prefixes {
		cfg.Prefixes = append(cfg.Prefixes, backends.CleanKey(p))
	}
	if err := supervisor.CheckEnvPrefix(f.envPrefix); err != nil {
		return cfg, fmt.Errorf("--env-prefix: %w", err)
	}
	cfg.Naming = supervisor.Naming{Upcase: f.upcase, EnvPrefix: f.envPrefix}
	cfg.Pristine = f.pristine
	for _, spec := range f.templates {
		in, out, ok := strings.Cut(spec, ":")
		if !ok || in == "" || out == "" {
			return cfg, fmt.Errorf("--template %q: want IN:OUT", spec)
		}
		t, err := template.ParseFile(in)
		if err != nil {
			return cfg, fmt.Errorf("--template %s: %w", spec, err)
		}
		cfg.Templates = append(cfg.Templates, supervisor.Template{Src: in, Dest: out, Tmpl: t})
	}
	var err error
	if cfg.KillSignal, err = supervisor.ParseSignal(f.killSignal); err != nil {
		return cfg, fmt.Errorf("--kill-signal: %w", err)
	}
	if f.reloadSignal != "" {
		if cfg.ReloadSignal, err = supervisor.ParseSignal(f.reloadSignal); err != nil {
			return cfg, fmt.Errorf("--reload-signal: %w", err)
		}
	}
	if f.killTimeout <= 0 {
		return cfg, errors.New("--kill-timeout: want a positive duration")
	}
	if f.splay < 0 {
		return cfg, errors.New("--splay: want a duration >= 0")
	}
	cfg.KillTimeout, cfg.Splay = f.killTimeout, f.splay
	return cfg, nil
}

func printExecUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(w, execUsage)
	for _, opt := range execOptions() {
		fl := fs.Lookup(opt.name)
		def := ""
		if fl.DefValue != "" && fl.DefValue != "false" && fl.DefValue != "0s" {
			def = " (default " + fl.DefValue + ")"
		}
		env := ""
		if !opt.noEnv {
			env = " [" + envName(opt.name) + "]"
		}
		fmt.Fprintf(w, "  --%s\n      %s%s%s\n", opt.name, opt.usage, def, env)
	}
}

// execOptions is exec's own option table, for help, completion and the man page.
func execOptions() []option { return (&execFlags{}).options() }
