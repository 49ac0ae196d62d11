//go:build unix

package supervisor

import (
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/heraldhq/herald/backends"
)

func TestName(t *testing.T) {
	cases := []struct {
		prefix, key string
		n           Naming
		want        string
	}{
		{"/myapp/config", "/myapp/config/db/host", Naming{}, "db_host"},
		{"/myapp/config", "/myapp/config/db/host", Naming{Upcase: true}, "DB_HOST"},
		{"/myapp/config", "/myapp/config/db/host", Naming{Upcase: true, EnvPrefix: "APP_"}, "APP_DB_HOST"},
		{"/myapp/config", "/myapp/config/db/host", Naming{EnvPrefix: "app_"}, "app_db_host"}, // env prefix verbatim
		{"/a", "/a/db-port", Naming{}, "db_port"},
		{"/a", "/a/x.y:z w", Naming{}, "x_y_z_w"},
		{"/a", "/a/Mixed/Case", Naming{}, "Mixed_Case"},
		{"/a", "/a/café", Naming{}, "caf_"}, // one '_' per character, not per byte
		{"/a", "/a/9lives", Naming{}, "_9lives"},
		{"/a", "/a/9lives", Naming{EnvPrefix: "APP_"}, "APP_9lives"},
		{"/a", "/a/9lives", Naming{Upcase: true}, "_9LIVES"},
		{"/a", "/a/deep/ly/nested/key", Naming{}, "deep_ly_nested_key"},
		{"/a", "/a", Naming{}, ""}, // the prefix's own key has no name
		{"/", "/top/key", Naming{}, "top_key"},
	}
	for _, c := range cases {
		if got := c.n.Name(c.prefix, c.key); got != c.want {
			t.Errorf("%+v.Name(%q, %q) = %q, want %q", c.n, c.prefix, c.key, got, c.want)
		}
	}
}

func TestCheckEnvPrefix(t *testing.T) {
	for _, ok := range []string{"", "APP_", "_x", "a1"} {
		if err := CheckEnvPrefix(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"1APP", "APP-", "A P", "é"} {
		if err := CheckEnvPrefix(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// list serves Vars from a plain map, in lexical order as the cache does.
func list(kvs map[string]string) func(string) []backends.KVPair {
	return func(p string) []backends.KVPair {
		var out []backends.KVPair
		for k, v := range kvs {
			if backends.UnderPrefix(k, p) {
				out = append(out, backends.KVPair{Key: k, Value: v})
			}
		}
		slices.SortFunc(out, func(a, b backends.KVPair) int {
			if a.Key < b.Key {
				return -1
			}
			if a.Key > b.Key {
				return 1
			}
			return 0
		})
		return out
	}
}

func TestVarsCollisionRules(t *testing.T) {
	kvs := map[string]string{
		"/base/db/host":     "base-host",
		"/base/db/port":     "5432",
		"/base/db-user":     "from-dash", // db-user and db_user both name db_user:
		"/base/db_user":     "from-underscore",
		"/base":             "prefix's own value",
		"/override/db/host": "override-host",
		"/base/nul":         "a\x00b",
	}
	vars, coll, skipped := Vars([]string{"/base", "/override"}, list(kvs), Naming{})
	got := map[string]string{}
	for _, v := range vars {
		got[v.Name] = v.Value
	}
	want := map[string]string{
		"db_host": "override-host",   // a later prefix wins
		"db_port": "5432",            //
		"db_user": "from-underscore", // within a prefix the lexically later key wins ('_' > '-')
	}
	if len(got) != len(want) {
		t.Fatalf("vars = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if !slices.IsSortedFunc(vars, func(a, b Var) int {
		if a.Name < b.Name {
			return -1
		}
		return 1
	}) {
		t.Errorf("vars not sorted by name: %v", Names(vars))
	}
	wantColl := []Collision{
		{Name: "db_user", Key: "/base/db_user", Lost: "/base/db-user"},
		{Name: "db_host", Key: "/override/db/host", Lost: "/base/db/host"},
	}
	if !slices.Equal(coll, wantColl) {
		t.Errorf("collisions = %+v, want %+v", coll, wantColl)
	}
	if !slices.Equal(skipped, []Skip{{"/base/nul", "value holds a NUL byte"}}) {
		t.Errorf("skipped = %v", skipped)
	}
	// Swapping the prefixes swaps the winner.
	vars, _, _ = Vars([]string{"/override", "/base"}, list(kvs), Naming{})
	for _, v := range vars {
		if v.Name == "db_host" && v.Value != "base-host" {
			t.Errorf("db_host = %q with /base last", v.Value)
		}
	}
}

func TestEnviron(t *testing.T) {
	base := []string{"PATH=/bin", "HOME=/root", "DB_HOST=inherited", "DUP=1", "DUP=2"}
	vars := []Var{{Name: "A", Value: "x=y"}, {Name: "DB_HOST", Value: "registry"}}
	got := Environ(base, vars)
	want := []string{"PATH=/bin", "HOME=/root", "DB_HOST=registry", "DUP=2", "A=x=y"}
	if !slices.Equal(got, want) {
		t.Fatalf("Environ = %q, want %q", got, want)
	}
	// Pristine: only the registry's variables, and an empty (not nil) list when there
	// are none, which os/exec would read as "inherit everything".
	if e := Environ(nil, nil); e == nil || len(e) != 0 {
		t.Fatalf("Environ(nil, nil) = %#v", e)
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{
		"SIGTERM": syscall.SIGTERM, "term": syscall.SIGTERM, "HUP": syscall.SIGHUP, "sigusr1": syscall.SIGUSR1,
		"9": syscall.SIGKILL, "QUIT": syscall.SIGQUIT, "USR2": syscall.SIGUSR2,
	} {
		if got, err := ParseSignal(in); err != nil || got != want {
			t.Errorf("ParseSignal(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "SIGFOO", "0", "99", "-1"} {
		if _, err := ParseSignal(bad); err == nil {
			t.Errorf("ParseSignal(%q) accepted", bad)
		}
	}
}

func TestExitCode(t *testing.T) {
	for script, want := range map[string]int{
		"exit 0":        0,
		"exit 7":        7,
		"kill -KILL $$": 128 + 9,
		"kill -TERM $$": 128 + 15,
		"kill -SEGV $$": 128 + 11,
	} {
		cmd := exec.Command("/bin/sh", "-c", script)
		_ = cmd.Run()
		if got := ExitCode(cmd.ProcessState.Sys().(syscall.WaitStatus)); got != want {
			t.Errorf("%q: ExitCode = %d, want %d", script, got, want)
		}
	}
}

// A value that would make "NAME=value" longer than the kernel's per-string limit is
// skipped with the reason, never passed (execve would fail with E2BIG).
func TestVarsSkipsValuesOverTheKernelLimit(t *testing.T) {
	fits := strings.Repeat("x", MaxArgStrlen-len("big=")-1)
	kvs := map[string]string{"/p/big": fits, "/p/huge": fits + "x", "/p/small": "1"}
	vars, _, skipped := Vars([]string{"/p"}, list(kvs), Naming{})
	if got := Names(vars); !slices.Equal(got, []string{"big", "small"}) {
		t.Fatalf("vars = %v", got)
	}
	want := []Skip{{"/p/huge", "NAME=value takes 131074 bytes with its NUL, over the kernel's 131072-byte limit for one variable"}}
	if !slices.Equal(skipped, want) {
		t.Fatalf("skipped = %+v, want %+v", skipped, want)
	}
	if err := startable(Command{Path: "true"}, Environ(nil, vars)); err != nil {
		t.Fatal(err)
	}
	var many []Var
	for i := range argMax()/100000 + 1 {
		many = append(many, Var{Name: fmt.Sprintf("V%d", i), Value: strings.Repeat("y", 100000)})
	}
	if err := startable(Command{Path: "true"}, Environ(nil, many)); err == nil || !strings.Contains(err.Error(), "over the kernel's") {
		t.Fatalf("an environment over ARG_MAX: %v", err)
	}
	if err := startable(Command{Path: "/no/such/program"}, nil); err == nil {
		t.Fatal("a missing program is startable")
	}
}
