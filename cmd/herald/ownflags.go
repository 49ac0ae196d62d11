package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"
)

// A subcommand's own flags (exec's, register's, template's) are option rows too, in
// tables of their own beside the global one of config.go: the same row gives the flag,
// its HERALD_<NAME> variable (unless noEnv), its help text, and the completion and man
// entries (docs.go). They are not herald.toml keys: herald.toml describes registrations
// as [[register]] tables, and exec's and template's flags describe one invocation.

// bindOwn binds a subcommand's own options into fs. A row without bind names a flag the
// global table has already bound and the subcommand gives its own meaning to (register's
// --check-timeout).
func bindOwn(fs *flag.FlagSet, tbl []option) {
	for _, opt := range tbl {
		if opt.bind != nil {
			opt.bind(fs, opt.name)
			fs.Lookup(opt.name).Usage = opt.usage
		}
	}
}

// ownFromEnv fills each own option not given on the command line from its HERALD_<NAME>
// variable, trimmed; a list option's variable is comma-separated ("a, b" is two values).
func ownFromEnv(fs *flag.FlagSet, tbl []option, lookup func(string) (string, bool)) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	for _, opt := range tbl {
		if set[opt.name] || opt.noEnv {
			continue
		}
		name := envName(opt.name)
		v, ok := lookup(name)
		if !ok {
			continue
		}
		vals := []string{v}
		if opt.list {
			vals = strings.Split(v, ",")
		}
		for _, x := range vals {
			if x = strings.TrimSpace(x); x == "" && opt.list {
				continue
			}
			if err := fs.Set(opt.name, x); err != nil {
				errs = append(errs, fmt.Errorf("%s: invalid value %q: %w", name, x, err))
				break
			}
		}
	}
	return errors.Join(errs...)
}

// ownDocs describes a subcommand's own options for completion and the man page; fs has
// them bound (and the global ones, for a row without bind).
func ownDocs(fs *flag.FlagSet, tbl []option) []flagDoc {
	var ds []flagDoc
	for _, opt := range tbl {
		env := envName(opt.name)
		if opt.noEnv {
			env = ""
		}
		d := docOf(fs.Lookup(opt.name), opt.usage, env)
		if opt.def != "" {
			d.def = opt.def
		}
		ds = append(ds, d)
	}
	return ds
}

// Bind helpers for option rows, the global table's and the subcommands'.

func strOpt(p *string, def string) func(*flag.FlagSet, string) {
	return func(fs *flag.FlagSet, n string) { fs.StringVar(p, n, def, "") }
}

func intOpt(p *int, def int) func(*flag.FlagSet, string) {
	return func(fs *flag.FlagSet, n string) { fs.IntVar(p, n, def, "") }
}

func boolOpt(p *bool) func(*flag.FlagSet, string) {
	return func(fs *flag.FlagSet, n string) { fs.BoolVar(p, n, false, "") }
}

func durOpt(p *time.Duration, def time.Duration) func(*flag.FlagSet, string) {
	return func(fs *flag.FlagSet, n string) { fs.DurationVar(p, n, def, "") }
}

func listOpt(p *listFlag) func(*flag.FlagSet, string) {
	return func(fs *flag.FlagSet, n string) { fs.Var(p, n, "") }
}
