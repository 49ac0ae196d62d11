package main

import (
	"flag"
	"slices"
	"strings"
	"testing"
)

// A subcommand's own options read HERALD_<NAME> when the flag is not given: lists split
// on commas, values trimmed, a flag beating its variable, and no variable for a noEnv row.
func TestOwnOptionsFromEnv(t *testing.T) {
	var rf registerFlags
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	tbl := rf.options()
	bindOwn(fs, tbl)
	if err := fs.Parse([]string{"--service", "web"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"HERALD_SERVICE":       "api",
		"HERALD_TAG":           "a, b,,c",
		"HERALD_PORT":          " 8080 ",
		"HERALD_CHECK_TIMEOUT": "30s",
	}
	if err := ownFromEnv(fs, tbl, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if rf.rc.Service != "web" || rf.rc.Port != 8080 || !slices.Equal(rf.tags, listFlag{"a", "b", "c"}) || rf.checkTimeout != "1s" {
		t.Fatalf("service %q port %d tags %q check timeout %q", rf.rc.Service, rf.rc.Port, rf.tags, rf.checkTimeout)
	}

	fs = flag.NewFlagSet("t", flag.ContinueOnError)
	tbl = (&registerFlags{}).options()
	bindOwn(fs, tbl)
	env = map[string]string{"HERALD_PORT": "eighty"}
	err := ownFromEnv(fs, tbl, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err == nil || !strings.Contains(err.Error(), `HERALD_PORT: invalid value "eighty"`) {
		t.Fatalf("bad HERALD_PORT: %v", err)
	}
}

// Every own option of every subcommand has help text, and its flag is bound.
func TestOwnOptionTablesComplete(t *testing.T) {
	for cmd, tbl := range map[string][]option{
		"register": (&registerFlags{}).options(),
		"exec":     execOptions(),
		"template": (&templateFlags{}).options(),
	} {
		var o Options
		fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
		o.bindOptions(fs, "prefix")
		bindOwn(fs, tbl)
		for _, opt := range tbl {
			if opt.usage == "" || fs.Lookup(opt.name) == nil {
				t.Errorf("%s --%s: usage %q, bound %v", cmd, opt.name, opt.usage, fs.Lookup(opt.name) != nil)
			}
		}
	}
}
