// Package backends defines what every registry backend offers herald: consistent reads
// of keys and service lists, watches that resume without losing an update, a visible
// connection state, and (for `herald register`) liveness-backed registration.
//
// Each backend lives in its own sub-package (etcd, zookeeper, consul, file, env); the
// sub-package open picks one from a URL. Nothing here reads flags or the environment.
package backends

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"path"
	"sort"
	"strings"
	"time"
)

// Store is one connection to a registry.
//
// Keys are absolute, slash-separated paths ("/app/db/host") whatever the registry's own
// spelling (Consul's "app/db/host" is "/app/db/host" here). A prefix matches on path
// boundaries: "/app" holds "/app" and "/app/x", never "/apple".
type Store interface {
	// Get returns every key under each prefix, all read at one revision, and that
	// revision. It fails as a whole: never a partial result.
	Get(ctx context.Context, prefixes []string) (map[string]string, uint64, error)

	// Services returns the instances of one service matching q, sorted (see SortServices).
	// Malformed instances are skipped with a warning naming their key.
	Services(ctx context.Context, q ServiceQuery) ([]Service, uint64, error)

	// ServiceNames lists the services the registry knows, sorted by name.
	ServiceNames(ctx context.Context) ([]ServiceSummary, uint64, error)

	// Watch sends the changes of one target that happened after revision from to out,
	// until ctx is done, then returns ctx.Err(). It reconnects by itself with backoff and
	// resumes where it left off; when it cannot resume exactly (etcd compaction, ZooKeeper
	// session expiry, Consul restart) it re-reads the target and sends a Full event. It
	// never sends the same change twice as an incremental event and never skips one.
	Watch(ctx context.Context, t Target, from uint64, out chan<- Event) error

	// State reports the connection state, for logs, /healthz and metrics.
	State() State

	Close() error
}

// DatacenterLister is implemented by a Store whose registry spans datacenters (Consul):
// Datacenters lists the ones it knows, sorted by name, and its Watch follows a Target with
// Datacenters set. Only a DatacenterLister is ever asked to watch that target.
type DatacenterLister interface {
	Datacenters(ctx context.Context) ([]string, uint64, error)
}

// Registrar is implemented by backends that can announce a service instance.
type Registrar interface {
	// Register announces svc with liveness (etcd lease, ZooKeeper ephemeral node, Consul
	// agent check) and keeps it alive in the background until Deregister or ctx ends. It
	// fails at once if svc.ID is already registered by someone else and !opts.Replace.
	Register(ctx context.Context, svc Service, opts RegisterOptions) (Registration, error)
}

// RegisterOptions tune a registration.
type RegisterOptions struct {
	TTL     time.Duration // lease / session / TTL-check length
	Replace bool          // take over an ID that another process holds

	// Format of the value on etcd and ZooKeeper, for other readers: herald (default),
	// hostport or curator (see EncodeRegistration).
	Format string

	// ZooKeeper only: create the node ephemeral-sequential, the server appending a
	// 10-digit sequence number to the ID (ServerSet "member_" style).
	Sequential bool

	// Consul only: let Consul run an HTTP or TCP check itself instead of herald passing a
	// TTL check, and remove a service that stays critical this long.
	CheckHTTP       string
	CheckTCP        string
	CheckInterval   time.Duration
	CheckTimeout    time.Duration
	DeregisterAfter time.Duration
}

// Registration is a live announcement.
type Registration interface {
	// SetHealthy withdraws (etcd, ZooKeeper) or marks critical (Consul) the instance when
	// false, and re-announces or marks passing when true.
	SetHealthy(ctx context.Context, healthy bool, note string) error
	// Deregister removes the instance and stops keeping it alive.
	Deregister(ctx context.Context) error
}

// Target is one thing a watch follows: a key prefix, one service list, the list of
// service names, or the list of datacenters. Exactly one of the fields is set.
type Target struct {
	Prefix       string
	Service      *ServiceQuery
	ServiceNames bool
	Datacenters  bool // only for a Store that is a DatacenterLister
}

// PrefixTarget returns the target for a key prefix.
func PrefixTarget(p string) Target { return Target{Prefix: CleanKey(p)} }

// ServiceTarget returns the target for one service query.
func ServiceTarget(q ServiceQuery) Target { return Target{Service: &q} }

// TargetKind says which of a Target's fields is set.
type TargetKind int

const (
	KindPrefix       TargetKind = iota // a key prefix (Target.Prefix)
	KindService                        // one service list (Target.Service)
	KindServiceNames                   // the list of service names (Target.ServiceNames)
	KindDatacenters                    // the list of datacenters (Target.Datacenters)
)

func (k TargetKind) String() string {
	switch k {
	case KindService:
		return "service"
	case KindServiceNames:
		return "services"
	case KindDatacenters:
		return "datacenters"
	default:
		return "prefix"
	}
}

// Kind says what t follows. A Service query wins over ServiceNames, which wins over
// Datacenters, which wins over Prefix, so that every caller reads a malformed Target the
// same way.
func (t Target) Kind() TargetKind {
	switch {
	case t.Service != nil:
		return KindService
	case t.ServiceNames:
		return KindServiceNames
	case t.Datacenters:
		return KindDatacenters
	default:
		return KindPrefix
	}
}

// ID is a stable identity for a target, usable as a map key.
func (t Target) ID() string {
	switch t.Kind() {
	case KindService:
		return "service:" + t.Service.String()
	case KindServiceNames:
		return "services"
	case KindDatacenters:
		return "datacenters"
	default:
		return "prefix:" + t.Prefix
	}
}

func (t Target) String() string { return t.ID() }

// Event is a change of one target.
type Event struct {
	Target   Target
	Revision uint64

	// Full means KVs (for a prefix) or Services/Names/Datacenters hold the whole current
	// state of the target and replace what a cache holds; otherwise KVs are upserts and
	// Deleted keys were removed.
	Full        bool
	KVs         map[string]string
	Deleted     []string
	Services    []Service
	Names       []ServiceSummary
	Datacenters []string
}

// ConnState is a backend's connection state.
type ConnState int

const (
	Connecting ConnState = iota
	Up
	Down
)

func (c ConnState) String() string {
	switch c {
	case Up:
		return "up"
	case Down:
		return "down"
	default:
		return "connecting"
	}
}

// State is what a backend reports about its connection.
type State struct {
	Conn     ConnState
	Endpoint string // the endpoint in use or last tried (never with credentials)
	Err      error  // the last error, when not Up
	Since    time.Time
	// Parts are the pieces of a backend that can fail on their own while it is up
	// through others (Consul: each agent address, each datacenter read); nil for a
	// backend that has none.
	Parts []PartState
}

// PartState is one part of a backend: "agent 127.0.0.1:8500", "datacenter dc2".
type PartState struct {
	Name  string
	Up    bool
	Err   error // why it is down
	Since time.Time
}

// Config is everything needed to open a backend. cmd/herald fills it from flags,
// HERALD_* variables and herald.toml; nothing below cmd/ reads those itself.
type Config struct {
	URL string // etcd://h1:2379,h2:2379, zookeeper://h:2181/chroot, consul://h:8500?dc=x, file://path, env://

	Username string // etcd auth; Consul: HTTP basic auth (for a proxy in front of the agent)
	Password string // etcd password, ZooKeeper digest "user:password" when Username is empty
	Token    string // Consul ACL token

	TLS *tls.Config // nil: plain, unless the URL scheme asks for TLS (then system roots)

	DialTimeout    time.Duration // per attempt; default 5s
	SessionTimeout time.Duration // ZooKeeper session; default 10s
	ServicesRoot   string        // where etcd/ZooKeeper keep instances; default /services
	// ServicesLayout says what the levels below the root mean (see Layout); relative to
	// ServicesRoot unless it starts with "/". Default "{name}/{id}".
	ServicesLayout string
	ConsulWait     time.Duration // blocking query wait; default 5m
	MinGap         time.Duration // minimum time between two events of one watch; default 0 (etcd), 100ms (Consul)

	// Environ is the data of env:// ("KEY=value" entries); cmd/herald passes
	// os.Environ(). Nothing below cmd/ reads the process environment itself.
	Environ []string

	// OnMalformed, when set, is told of every service instance skipped as malformed
	// (besides the warning naming its key): `herald render` exits non-zero on them.
	OnMalformed func(key string, err error)

	Logger *slog.Logger
}

// Malformed logs a skipped service instance and reports it to OnMalformed.
func (c Config) Malformed(log *slog.Logger, key string, err error) {
	log.Warn("skipping malformed service instance", "key", key, "err", err)
	if c.OnMalformed != nil {
		c.OnMalformed(key, err)
	}
}

// TLSFor returns the TLS configuration for ep: a copy of TLS when set, the system roots
// when only the scheme asks for TLS (etcds://, zookeepers://, consuls://), nil for plain
// TCP; never below TLS 1.2.
func (c Config) TLSFor(ep Endpoint) *tls.Config {
	var t *tls.Config
	switch {
	case c.TLS != nil:
		t = c.TLS.Clone()
	case ep.TLS:
		t = &tls.Config{}
	default:
		return nil
	}
	if t.MinVersion == 0 {
		t.MinVersion = tls.VersionTLS12
	}
	return t
}

// Log returns the configured logger or a discarding one.
func (c Config) Log() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Root returns the services root, defaulted and cleaned: the layout's when it has one.
func (c Config) Root() string {
	if l, err := c.Layout(); err == nil {
		return l.Root()
	}
	if c.ServicesRoot == "" {
		return "/services"
	}
	return CleanKey(c.ServicesRoot)
}

// Layout returns the services layout: ServicesLayout (one pattern or several,
// comma-separated), each relative one under ServicesRoot.
func (c Config) Layout() (Layout, error) {
	root := c.ServicesRoot
	if root == "" {
		root = "/services"
	}
	if strings.TrimSpace(c.ServicesLayout) == "" {
		return ParseLayout(root)
	}
	parts := strings.Split(c.ServicesLayout, ",")
	for i, part := range parts {
		if part = strings.TrimSpace(part); part != "" && !strings.HasPrefix(part, "/") {
			parts[i] = strings.TrimSuffix(CleanKey(root), "/") + "/" + part
		}
	}
	return ParseLayout(strings.Join(parts, ","))
}

// ErrNotFound is returned for a missing key or service where a caller needs to tell.
var ErrNotFound = errors.New("not found")

// CleanKey normalizes a key or prefix: leading slash, no trailing slash (except "/"),
// no empty or dot segments.
func CleanKey(k string) string {
	return path.Clean("/" + k)
}

// UnderPrefix reports whether key is prefix or lies below it, on path boundaries.
// Both must be clean (see CleanKey).
func UnderPrefix(key, prefix string) bool {
	if prefix == "/" {
		return true
	}
	return key == prefix || (strings.HasPrefix(key, prefix) && key[len(prefix)] == '/')
}

// MinimalPrefixes drops every prefix covered by another one and returns the rest
// sorted, so that one watch serves each region of the key space.
func MinimalPrefixes(prefixes []string) []string {
	if len(prefixes) == 1 {
		// The common case (a resource's one keys entry; a template's one read): nothing
		// to cover, and this runs on every render.
		return []string{CleanKey(prefixes[0])}
	}
	clean := make([]string, 0, len(prefixes))
	for _, p := range prefixes {
		clean = append(clean, CleanKey(p))
	}
	// Shorter first, so every ancestor is decided before its descendants.
	sort.Slice(clean, func(i, j int) bool {
		if len(clean[i]) != len(clean[j]) {
			return len(clean[i]) < len(clean[j])
		}
		return clean[i] < clean[j]
	})
	kept := make(map[string]bool, len(clean))
	out := make([]string, 0, len(clean))
	for _, p := range clean {
		covered := false
		for a := p; ; a = path.Dir(a) {
			if kept[a] {
				covered = true
				break
			}
			if a == "/" {
				break
			}
		}
		if !covered {
			kept[p] = true
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// KVPair is one key and its value; the shape confd's templates see from gets and ls.
type KVPair struct {
	Key   string
	Value string
}
