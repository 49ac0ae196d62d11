// Command herald keeps config files true to what a service registry knows.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"syscall"

	"github.com/heraldhq/herald/cmd/herald/internal/earlyhup"
)

const usage = `herald keeps config files true to what a service registry knows.

Usage:
  herald render   [flags]                 render every resource once, then exit
  herald watch    [flags]                 render, then re-render on every change (daemon)
  herald check    [flags]                 validate resources and templates offline (for CI)
  herald get      [flags] PREFIX          print the keys under PREFIX as templates see them
  herald services [flags] [NAME [FILTER]] print a service's instances, or the catalog
  herald register [flags]                 announce an instance while it is healthy (daemon)
  herald exec     [flags] -- CMD [ARGS]   run CMD with keys as env vars; restart it on change
  herald template [flags] FILE|-          render one template to stdout (or --out), once or --watch
  herald confd    [confd flags]           confd 0.16's command line (also: herald installed as confd)
  herald version                          print the version, commit, build date and Go version
  herald completion bash|zsh|fish         print a shell completion script
  herald man                              print the man page (roff)

Every flag is also a HERALD_* variable and a herald.toml key; a flag beats the variable,
which beats the file, which beats the default. "herald CMD -h" lists the flags.
`

// env abstracts the process environment so tests can run main in-process.
type env struct {
	args   []string
	stdin  io.Reader // nil: os.Stdin
	stdout io.Writer
	stderr *os.File
	lookup func(string) (string, bool)
	dns    *net.Resolver // nil: the system's
	// unsetenv removes a variable from the environment herald's children, templates
	// and env:// see; nil leaves it alone (in-process tests).
	unsetenv func(string) error
	// hup receives SIGHUP from the start of main: `herald watch` reloads on it (the
	// unit's ExecReload), so one sent while herald is still starting must not kill it
	// as Go's default would; other commands ignore it (render finishes its files).
	hup <-chan os.Signal
}

func (e env) resolver() *net.Resolver {
	if e.dns != nil {
		return e.dns
	}
	return net.DefaultResolver
}

// heapProfileRate is the runtime's default heap sampling rate, restored by --pprof.
const heapProfileRate = 512 << 10

func main() {
	// Heap profiles are served only with --pprof; sampling allocations for them
	// otherwise costs every herald a profile bucket table it never reads.
	runtime.MemProfileRate = 0
	e := env{args: os.Args[1:], stdout: os.Stdout, stderr: os.Stderr, lookup: os.LookupEnv, unsetenv: os.Unsetenv, hup: earlyhup.C}
	// Installed as confd (a symlink or a copy), herald takes confd's command line, so
	// that replacing the binary is the whole migration.
	if filepath.Base(os.Args[0]) == "confd" {
		e.args = append([]string{"confd"}, e.args...)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, e))
}

// run executes one herald command and returns the exit status.
func run(ctx context.Context, e env) int {
	if len(e.args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return 2
	}
	cmd, args := e.args[0], e.args[1:]
	commands := map[string]func(context.Context, env, *Options, []string) error{
		"render":   cmdRender,
		"watch":    cmdWatch,
		"check":    cmdCheck,
		"get":      cmdGet,
		"services": cmdServices,
	}
	switch cmd {
	case "version", "--version", "-version":
		printVersion(e.stdout)
		return 0
	case "completion":
		return runCompletion(e, args)
	case "man":
		writeMan(e.stdout)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(e.stdout, usage)
		return 0
	case "register": // its own flags on top of the global ones
		return runRegister(ctx, e, args)
	case "exec":
		return runExecCmd(ctx, e, args)
	case "template": // its own flags and a template argument
		return runTemplateCmd(ctx, e, args)
	case "confd":
		return runConfd(ctx, e, args)
	}
	f, ok := commands[cmd]
	if !ok {
		fmt.Fprintf(e.stderr, "herald: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	var o Options
	fs := flag.NewFlagSet("herald "+cmd, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	tbl := o.bindOptions(fs)
	fs.Usage = func() { printFlags(e.stderr, cmd, fs, tbl) }
	positional, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if err := e.resolveOptions(&o, fs, tbl); err != nil {
		fmt.Fprintln(e.stderr, "herald:", err)
		return 2
	}
	if err := f(ctx, e, &o, positional); err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(e.stderr, "herald %s: %v\n", cmd, err)
			return 2
		}
		fmt.Fprintf(e.stderr, "herald %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

type usageError struct{ error }

// parseInterspersed parses flags wherever they stand among the positional arguments, as
// people type them (`herald services web --backend URL`); "--" ends the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		if consumed := args[:len(args)-len(rest)]; len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

func printFlags(w io.Writer, cmd string, fs *flag.FlagSet, tbl []option) {
	fmt.Fprintf(w, "Usage: herald %s [flags]\n\nFlags (each also HERALD_<NAME> and a herald.toml key):\n", cmd)
	sort.Slice(tbl, func(i, j int) bool { return tbl[i].name < tbl[j].name })
	for _, opt := range tbl {
		f := fs.Lookup(opt.name)
		names := "--" + opt.name
		for _, a := range opt.aliases {
			names += ", --" + a
		}
		def := ""
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0s" {
			def = " (default " + f.DefValue + ")"
		}
		fmt.Fprintf(w, "  %s\n      %s%s [%s]\n", names, opt.usage, def, envName(opt.name))
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
