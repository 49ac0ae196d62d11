package supervisor

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/heraldhq/herald/backends"
)

// Naming says how a key becomes an environment variable name, after envconsul: the
// prefix is stripped, every character outside [A-Za-z0-9_] (the path separator
// included) becomes '_', Upcase upper-cases the result, EnvPrefix is put before it
// verbatim, and a name that would start with a digit gets a leading '_'.
//
//	/myapp/config/db/host under /myapp/config -> db_host, DB_HOST (Upcase), APP_DB_HOST (APP_, Upcase)
type Naming struct {
	Upcase    bool
	EnvPrefix string
}

var envPrefixRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// CheckEnvPrefix reports whether p can start an environment variable name.
func CheckEnvPrefix(p string) error {
	if p != "" && !envPrefixRe.MatchString(p) {
		return fmt.Errorf("env prefix %q: want letters, digits and '_', not starting with a digit", p)
	}
	return nil
}

// Name returns the variable name of key under prefix (both clean, see backends.CleanKey),
// or "" for the prefix's own key, which has no name of its own.
func (n Naming) Name(prefix, key string) string {
	rel := key
	if prefix != "/" {
		rel = strings.TrimPrefix(key, prefix)
	}
	rel = strings.TrimPrefix(rel, "/")
	if rel == "" {
		return ""
	}
	var b strings.Builder
	b.Grow(len(n.EnvPrefix) + len(rel) + 1)
	b.WriteString(n.EnvPrefix)
	for _, r := range rel {
		switch {
		case r >= 'a' && r <= 'z':
			if n.Upcase {
				r -= 'a' - 'A'
			}
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_':
		default:
			r = '_'
		}
		b.WriteRune(r)
	}
	name := b.String()
	if name[0] >= '0' && name[0] <= '9' {
		name = "_" + name
	}
	return name
}

// Var is one variable and the key it came from.
type Var struct {
	Name, Key, Value string
}

// Collision is a name that two keys map to: Key's value won over Lost's.
type Collision struct {
	Name, Key, Lost string
}

// MaxArgStrlen is the kernel's bound on one "NAME=value" string handed to a new
// process, its terminating NUL included (Linux's MAX_ARG_STRLEN, 32 pages): execve
// fails with E2BIG past it, so such a variable can never reach the child.
const MaxArgStrlen = 32 * 4096

// Skip is a key that cannot become a variable, and why (never its value).
type Skip struct {
	Key, Why string
}

// Vars computes the variables for prefixes, in order, from list (which returns the keys
// under a prefix in lexical order, as cache.View.List does). When two keys give one name,
// the later prefix wins, and within one prefix the lexically later key wins. Keys whose
// value cannot be passed to a process (a NUL byte; longer than MaxArgStrlen) are
// returned in skipped. The result is sorted by name.
func Vars(prefixes []string, list func(prefix string) []backends.KVPair, n Naming) (vars []Var, collisions []Collision, skipped []Skip) {
	byName := map[string]Var{}
	for _, p := range prefixes {
		p = backends.CleanKey(p)
		for _, kv := range list(p) {
			name := n.Name(p, kv.Key)
			if name == "" {
				continue
			}
			if strings.IndexByte(kv.Value, 0) >= 0 {
				skipped = append(skipped, Skip{kv.Key, "value holds a NUL byte"})
				continue
			}
			if size := len(name) + len(kv.Value) + 2; size > MaxArgStrlen {
				skipped = append(skipped, Skip{kv.Key, fmt.Sprintf("NAME=value takes %d bytes with its NUL, over the kernel's %d-byte limit for one variable", size, MaxArgStrlen)})
				continue
			}
			if old, ok := byName[name]; ok && old.Key != kv.Key {
				collisions = append(collisions, Collision{Name: name, Key: kv.Key, Lost: old.Key})
			}
			byName[name] = Var{Name: name, Key: kv.Key, Value: kv.Value}
		}
	}
	vars = make([]Var, 0, len(byName))
	for _, v := range byName {
		vars = append(vars, v)
	}
	slices.SortFunc(vars, func(a, b Var) int { return strings.Compare(a.Name, b.Name) })
	return vars, collisions, skipped
}

// Environ returns base ("NAME=value" entries, e.g. os.Environ()) with vars set on top:
// a registry value replaces an inherited variable of the same name. Inherited entries
// keep their order; new ones follow, sorted by name.
func Environ(base []string, vars []Var) []string {
	out := make([]string, 0, len(base)+len(vars))
	at := make(map[string]int, len(base)+len(vars))
	for _, kv := range base {
		name, _, _ := strings.Cut(kv, "=")
		if i, ok := at[name]; ok {
			out[i] = kv // as the C library does, the last duplicate wins
			continue
		}
		at[name] = len(out)
		out = append(out, kv)
	}
	for _, v := range vars {
		kv := v.Name + "=" + v.Value
		if i, ok := at[v.Name]; ok {
			out[i] = kv
			continue
		}
		at[v.Name] = len(out)
		out = append(out, kv)
	}
	return out
}

// Names lists the variable names, for logs (values are never logged).
func Names(vars []Var) []string {
	out := make([]string, len(vars))
	for i, v := range vars {
		out[i] = v.Name
	}
	return out
}
