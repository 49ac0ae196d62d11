// Package file is herald's serverless backend: keys and services from a YAML or JSON
// file, or a directory of them, selected with file://PATH (relative paths are relative to
// the working directory at start); several, separated by commas (file://a.yaml,conf/),
// share one key space, as confd's repeated -file does.
//
// # Keys
//
// Nested mappings flatten to slash-separated keys and lists to their index, as confd's
// file backend does:
//
//	database:
//	  host: db.local      # /database/host = "db.local"
//	  port: 5432          # /database/port = "5432"
//	upstreams: [a, b]     # /upstreams/0 = "a", /upstreams/1 = "b"
//	"app/mode": blue      # /app/mode = "blue" (keys may hold slashes)
//
// Scalars become the strings a template author expects: integers in decimal, floats in
// their shortest form without exponent (1.50 is "1.5", 80.0 is "80"), booleans "true" or
// "false". null, ~ and an empty value are absent (no key), as in confd, so that a
// template's getv KEY DEFAULT gives the default and exists is false; "" stays an empty
// string. Like confd (which used yaml.v2), the unquoted YAML 1.1 words yes/no, on/off,
// y/n read as "true"/"false"; quote them to keep the word. Anchors, aliases and merge
// keys (<<: *base) work. A file holding several YAML documents counts as one.
//
// A directory contributes its *.yaml, *.yml and *.json files, in lexical order, not
// recursively; hidden files (editor locks and swap files) are skipped. With
// ?filter=GLOB (confd's -filter), a directory is walked recursively and every file whose
// name matches GLOB is read, whatever its extension (*.json as JSON, others as YAML). All files share
// one key space: a key defined by two files, or twice in one, is an error naming both
// places, never a silent override. An empty file is an error too, because a non-atomic
// save passes through one and reading it as "no keys" would empty every rendered file.
//
// # Services
//
// The reserved top-level key _services lists service instances; it is not exposed as
// keys:
//
//	_services:
//	  web:
//	    - address: 10.0.0.1
//	      port: 8080
//	      tags: [primary, v2]
//	      meta: {zone: eu-1}
//	      status: passing     # passing (default), warning, critical or maintenance
//	      weight: 10
//	      id: web-1           # default: address:port
//	    - {address: 10.0.0.2, port: 8080}
//	  db: []                  # a known service with no instances
//
// Instances are Backend "file", Format "herald", Key the file's path. Unknown fields and
// invalid values are errors naming the file, line and entry (_services.web[1]). Several
// files may list instances of one service; an instance ID defined twice is an error.
// Queries ignore the datacenter: a file has one.
//
// # Watching
//
// One fsnotify watch per Store follows the directory holding the file (or the directory
// itself), so that editors that save by writing a new file and renaming it over the old
// one, and Kubernetes ConfigMap volumes that swap a symlink, are seen. Changes are
// debounced (50 ms of quiet), then everything is re-read; a watch sends a Full event only
// when its target's content changed. A file that no longer parses keeps the last good
// data in force and logs the error with file and line; Get reports the error.
package file

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/backends"
)

var _ backends.Store = (*Store)(nil)

// errClosed is returned by calls on a closed Store.
var errClosed = errors.New("file backend: closed")

// Store reads one or more files or directories. It is safe for concurrent use.
type Store struct {
	paths    []string // absolute, in the order given
	path     string   // paths joined with commas, for logs
	filter   string   // ?filter=GLOB: walk directories recursively for matching files
	log      *slog.Logger
	debounce time.Duration

	mu      sync.Mutex // guards the fields below; held while (re)reading the files
	data    *snapshot  // last good data; nil before the first good read
	rev     uint64
	hash    [32]byte // of the files behind data
	badHash [32]byte // of the last content that failed to parse
	badErr  error
	state   backends.State

	wmu     sync.Mutex // guards the watcher fields below
	subs    map[chan struct{}]struct{}
	stopW   context.CancelFunc // stops the running watcher goroutine; nil when none
	wDone   chan struct{}
	closed  bool
	closeCh chan struct{}
}

// New returns a Store for ep.Path. It reads nothing yet: a missing or broken file is
// reported by the first Get, Services or ServiceNames.
func New(cfg backends.Config, ep backends.Endpoint) (*Store, error) {
	if ep.Path == "" {
		return nil, errors.New("file backend: no path (want file://PATH)")
	}
	// Several paths are separated by commas, as etcd hosts are (confd's repeated -file).
	var paths []string
	for _, p := range strings.Split(ep.Path, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("file backend %s: %w", p, err)
		}
		paths = append(paths, abs)
	}
	if len(paths) == 0 {
		return nil, errors.New("file backend: no path (want file://PATH)")
	}
	abs := strings.Join(paths, ",")
	filter := ep.Query.Get("filter")
	if _, err := filepath.Match(filter, ""); err != nil {
		return nil, fmt.Errorf("file backend: filter %q: %w", filter, err)
	}
	return &Store{
		paths:    paths,
		path:     abs,
		filter:   filter,
		log:      cfg.Log(),
		debounce: 50 * time.Millisecond,
		state:    backends.State{Conn: backends.Connecting, Endpoint: "file://" + abs, Since: time.Now()},
		subs:     make(map[chan struct{}]struct{}),
		closeCh:  make(chan struct{}),
	}, nil
}

// load reads the files and returns their snapshot, re-parsing only when their content
// changed; the revision advances with each change of content. On error the last good
// data stays in place (see current) and fresh reports whether this error is new, so
// that a watcher logs it once.
func (s *Store) load() (snap *snapshot, fresh bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	files, err := s.read()
	if err != nil {
		fresh = s.badErr == nil || s.badErr.Error() != err.Error()
		s.badHash, s.badErr = [32]byte{}, err
		s.setState(backends.Down, err)
		return nil, fresh, err
	}
	h := hashFiles(files)
	switch {
	case s.data != nil && h == s.hash:
		s.badErr = nil
		s.setState(backends.Up, nil)
		return s.data, false, nil
	case s.badErr != nil && h == s.badHash:
		return nil, false, s.badErr
	}
	snap, err = parseFiles(files)
	if err != nil {
		s.badHash, s.badErr = h, err
		s.setState(backends.Down, err)
		return nil, true, err
	}
	s.rev++
	snap.rev = s.rev
	s.data, s.hash, s.badErr = snap, h, nil
	s.setState(backends.Up, nil)
	return snap, false, nil
}

func (s *Store) read() ([]fileData, error) {
	var paths []string
	for _, p := range s.paths {
		ps, err := listFiles(p, s.filter)
		if err != nil {
			return nil, fmt.Errorf("file backend: %w", err)
		}
		paths = append(paths, ps...)
	}
	files, err := readFiles(paths)
	if err != nil {
		return nil, fmt.Errorf("file backend: %w", err)
	}
	return files, nil
}

func hashFiles(files []fileData) [32]byte {
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%d\x00", f.path, len(f.data))
		h.Write(f.data)
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

func (s *Store) setState(c backends.ConnState, err error) {
	if s.state.Conn != c || (err != nil && (s.state.Err == nil || s.state.Err.Error() != err.Error())) {
		s.state.Since = time.Now()
	}
	s.state.Conn, s.state.Err = c, err
}

// current returns the last good snapshot, nil if none.
func (s *Store) current() *snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.data
}

func (s *Store) fresh(ctx context.Context) (*snapshot, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.isClosed() {
		return nil, errClosed
	}
	snap, _, err := s.load()
	return snap, err
}

// Get returns every key under the prefixes from one reading of all the files.
func (s *Store) Get(ctx context.Context, prefixes []string) (map[string]string, uint64, error) {
	snap, err := s.fresh(ctx)
	if err != nil {
		return nil, 0, err
	}
	return kvUnder(snap, prefixes), snap.rev, nil
}

func kvUnder(snap *snapshot, prefixes []string) map[string]string {
	clean := make([]string, len(prefixes))
	for i, p := range prefixes {
		clean[i] = backends.CleanKey(p)
	}
	out := make(map[string]string)
	for k, v := range snap.kv {
		for _, p := range clean {
			if backends.UnderPrefix(k, p) {
				out[k] = v
				break
			}
		}
	}
	return out
}

// Services returns the instances of q.Name that q accepts, sorted.
func (s *Store) Services(ctx context.Context, q backends.ServiceQuery) ([]backends.Service, uint64, error) {
	snap, err := s.fresh(ctx)
	if err != nil {
		return nil, 0, err
	}
	return servicesFor(snap, q), snap.rev, nil
}

func servicesFor(snap *snapshot, q backends.ServiceQuery) []backends.Service {
	var out []backends.Service
	for _, svc := range snap.svcs[q.Name] {
		if q.Accepts(svc) {
			out = append(out, svc)
		}
	}
	return out
}

// ServiceNames lists the services of _services, sorted, with their tags.
func (s *Store) ServiceNames(ctx context.Context) ([]backends.ServiceSummary, uint64, error) {
	snap, err := s.fresh(ctx)
	if err != nil {
		return nil, 0, err
	}
	return slices.Clone(snap.names), snap.rev, nil
}

// State is Up after a good read, Down (with the error) while the files cannot be read or
// parsed, Connecting before the first read.
func (s *Store) State() backends.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Close stops the file watch. Running Watch calls return an error.
func (s *Store) Close() error {
	s.wmu.Lock()
	if s.closed {
		s.wmu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closeCh)
	stop, done := s.stopW, s.wDone
	s.stopW = nil
	s.wmu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	return nil
}

func (s *Store) isClosed() bool {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.closed
}

// Watch sends a Full event for t whenever the files change what t covers. It first
// sends one if the data is no longer at revision from.
func (s *Store) Watch(ctx context.Context, t backends.Target, from uint64, out chan<- backends.Event) error {
	kick, err := s.subscribe()
	if err != nil {
		return err
	}
	defer s.unsubscribe(kick)

	var sent any
	have := false
	send := func(snap *snapshot) error {
		st := targetState(snap, t)
		if have && reflect.DeepEqual(st, sent) {
			return nil
		}
		ev := backends.Event{Target: t, Revision: snap.rev, Full: true}
		switch v := st.(type) {
		case map[string]string:
			ev.KVs = v
		case []backends.Service:
			ev.Services = v
		case []backends.ServiceSummary:
			ev.Names = v
		}
		select {
		case out <- ev:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closeCh:
			return errClosed
		}
		sent, have = st, true
		return nil
	}

	// Catch up with what changed since from, before any file event arrives.
	s.loadLogged()
	if snap := s.current(); snap != nil {
		if snap.rev == from {
			sent, have = targetState(snap, t), true
		} else if err := send(snap); err != nil {
			return err
		}
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closeCh:
			return errClosed
		case <-kick:
			if snap := s.current(); snap != nil {
				if err := send(snap); err != nil {
					return err
				}
			}
		}
	}
}

// targetState is what an event for t carries.
func targetState(snap *snapshot, t backends.Target) any {
	switch t.Kind() {
	case backends.KindService:
		return servicesFor(snap, *t.Service)
	case backends.KindServiceNames:
		return slices.Clone(snap.names)
	default:
		return kvUnder(snap, []string{t.Prefix})
	}
}
