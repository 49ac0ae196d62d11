// Package env serves keys from the process environment, the way confd's env backend
// does: key /database/host is variable DATABASE_HOST, and variable DATABASE_HOST is key
// /database/host.
//
// The mapping, exactly confd's: a prefix is turned into a variable-name prefix by
// dropping the leading slash, replacing "/" with "_" and upper-casing ("/database" ->
// "DATABASE"); every variable whose name starts with that is returned, under the key
// made by lower-casing the name, replacing "_" with "/" and adding a leading slash
// (DATABASE_HOST -> /database/host). So keys are lower-case and never hold "_": a
// template reading /my_app/port gets nothing from env://, as with confd, where
// MY_APP_PORT is stored as /my/app/port.
//
// Where herald differs, so that env:// keeps the contract every backend keeps:
//   - prefixes match on path boundaries: /app returns /app/x, never /apple (confd's plain
//     string prefix returned both);
//   - a variable whose key would have an empty segment ("_", "A__B", "X_") is skipped,
//     since no clean key can address it;
//   - when several variables map to one key (FOO_BAR, Foo_Bar, foo_bar), the upper-case
//     one wins, then the lexically first, instead of a random one.
//
// The environment is read once, at New: it does not change under a running process.
// Watch therefore never reports a change (it blocks until its context ends); the runner
// renders once from the first read. env:// has no services.
package env

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/heraldhq/herald/backends"
)

var _ backends.Store = (*Store)(nil)

// revision is the environment's only revision.
const revision = 1

// ErrNoServices is returned for every service query.
var ErrNoServices = errors.New("env:// has no services; keep services in a file (file://) or a registry (etcd://, zookeeper://, consul://)")

// Store is a snapshot of the environment. It is safe for concurrent use.
type Store struct {
	names []string          // variable names, sorted
	vars  map[string]string // name -> value
	since time.Time
}

// New takes the environment as os.Environ spells it ("NAME=value"); the opener passes
// os.Environ(). Entries without "=" or with an empty name are ignored; of repeated
// names the last counts, as for getenv.
func New(cfg backends.Config, ep backends.Endpoint, environ []string) (*Store, error) {
	if ep.Scheme != "" && ep.Scheme != "env" {
		return nil, fmt.Errorf("env backend: wrong scheme %q", ep.Scheme)
	}
	s := &Store{vars: make(map[string]string, len(environ)), since: time.Now()}
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || name == "" {
			continue
		}
		s.vars[name] = value
	}
	s.names = make([]string, 0, len(s.vars))
	for name := range s.vars {
		s.names = append(s.names, name)
	}
	// Sorted: upper-case sorts first, which decides collisions (see the package doc).
	sort.Strings(s.names)
	cfg.Log().Debug("env backend: environment read", "variables", len(s.names))
	return s, nil
}

var toVar = strings.NewReplacer("/", "_")
var toKey = strings.NewReplacer("_", "/")

// varPrefix is confd's transform: /database/host -> DATABASE_HOST.
func varPrefix(key string) string {
	return strings.ToUpper(toVar.Replace(strings.TrimPrefix(key, "/")))
}

// keyOf is confd's clean: DATABASE_HOST -> /database/host.
func keyOf(name string) string {
	return toKey.Replace("/" + strings.ToLower(name))
}

// Get returns the variables under the prefixes as keys.
func (s *Store) Get(ctx context.Context, prefixes []string) (map[string]string, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	out := make(map[string]string)
	from := make(map[string]string) // key -> variable it came from
	for _, p := range prefixes {
		p = backends.CleanKey(p)
		vp := varPrefix(p)
		for _, name := range s.names {
			if !strings.HasPrefix(name, vp) {
				continue
			}
			key := keyOf(name)
			if key != backends.CleanKey(key) || !backends.UnderPrefix(key, p) {
				continue
			}
			if _, taken := from[key]; taken {
				continue
			}
			from[key], out[key] = name, s.vars[name]
		}
	}
	return out, revision, nil
}

// Services fails: env:// has no services.
func (s *Store) Services(ctx context.Context, q backends.ServiceQuery) ([]backends.Service, uint64, error) {
	return nil, 0, fmt.Errorf("service %s: %w", q.Name, ErrNoServices)
}

// ServiceNames fails: env:// has no services.
func (s *Store) ServiceNames(ctx context.Context) ([]backends.ServiceSummary, uint64, error) {
	return nil, 0, ErrNoServices
}

// Watch sends the prefix's keys once if from is not the environment's revision, then
// waits for ctx: the environment of a running process does not change.
func (s *Store) Watch(ctx context.Context, t backends.Target, from uint64, out chan<- backends.Event) error {
	if t.Kind() != backends.KindPrefix {
		return fmt.Errorf("watch %s: %w", t, ErrNoServices)
	}
	if from != revision {
		kv, rev, err := s.Get(ctx, []string{t.Prefix})
		if err != nil {
			return err
		}
		select {
		case out <- backends.Event{Target: t, Revision: rev, Full: true, KVs: kv}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	<-ctx.Done()
	return ctx.Err()
}

// State is always up: there is nothing to connect to.
func (s *Store) State() backends.State {
	return backends.State{Conn: backends.Up, Endpoint: "env://", Since: s.since}
}

// Close does nothing; the environment needs no releasing.
func (s *Store) Close() error { return nil }
