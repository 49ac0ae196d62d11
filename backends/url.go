package backends

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Endpoint is a parsed --backend URL.
type Endpoint struct {
	Scheme string     // etcd, zookeeper, consul, file, env
	TLS    bool       // etcds://, consuls:// (or https in a host list)
	Hosts  []string   // host:port, in the order given
	Path   string     // ZooKeeper chroot, file path; "" when none
	Query  url.Values // e.g. consul's dc
}

var defaultPorts = map[string]string{"etcd": "2379", "zookeeper": "2181", "consul": "8500"}

// ParseURL reads one --backend value. Several hosts are separated by commas:
// etcd://h1:2379,h2:2379. Credentials in the URL are refused: they would end up in
// logs and process listings; pass them with flags or HERALD_* variables.
func ParseURL(raw string) (Endpoint, error) {
	var e Endpoint
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok || !isScheme(scheme) {
		return e, fmt.Errorf("backend %q: want SCHEME://..., e.g. etcd://127.0.0.1:2379 or file://data.yaml", Redact(raw))
	}
	scheme = strings.ToLower(scheme)
	switch scheme {
	case "etcd", "etcd3", "etcdv3":
		e.Scheme = "etcd"
	case "etcds":
		e.Scheme, e.TLS = "etcd", true
	case "zookeeper", "zk":
		e.Scheme = "zookeeper"
	case "zookeepers":
		e.Scheme, e.TLS = "zookeeper", true
	case "consul":
		e.Scheme = "consul"
	case "consuls":
		e.Scheme, e.TLS = "consul", true
	case "file":
		// ?filter=GLOB: confd's -filter (read directories recursively, files matching GLOB).
		if i := strings.LastIndex(rest, "?filter="); i >= 0 {
			q, err := url.ParseQuery(rest[i+1:])
			if err != nil || len(q) != 1 || len(q["filter"]) != 1 {
				return e, fmt.Errorf("backend %q: want file://PATH?filter=GLOB", raw)
			}
			e.Query, rest = q, rest[:i]
		}
		e.Scheme, e.Path = "file", rest
		if e.Path == "" {
			return e, fmt.Errorf("backend %q: file:// needs a path", raw)
		}
		// A path may hold '@' (data@v2.yaml), but not user:password@ in front.
		if i := strings.LastIndexByte(rest, '@'); i >= 0 && strings.Contains(rest[:i], ":") {
			return e, fmt.Errorf("backend %s: %s", Redact(raw), errCredentials)
		}
		return e, nil
	case "env":
		e.Scheme = "env"
		return e, nil
	default:
		return e, fmt.Errorf("backend %q: unknown scheme %q (want etcd, etcds, zookeeper, zookeepers, consul, consuls, file or env)", Redact(raw), scheme)
	}
	// Checked on the whole rest: a password may hold '/', '?' or '@' itself, and
	// whatever part of the URL it lands in must never be echoed.
	if strings.Contains(rest, "@") {
		return e, fmt.Errorf("backend %s: %s", Redact(raw), errCredentials)
	}
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		q, err := url.ParseQuery(rest[i+1:])
		if err != nil {
			return e, fmt.Errorf("backend %s: bad query: %w", Redact(raw), err)
		}
		e.Query, rest = q, rest[:i]
	}
	hosts := rest
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		hosts, e.Path = rest[:i], rest[i:]
		if e.Path == "/" {
			e.Path = ""
		}
	}
	for _, h := range strings.Split(hosts, ",") {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(h); err != nil {
			// A bare host (or bracketed IPv6) gets the scheme's default port.
			host := strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
			if strings.Contains(host, ":") && net.ParseIP(host) == nil {
				return e, fmt.Errorf("backend %s: bad host %q: %v", Redact(raw), h, err)
			}
			h = net.JoinHostPort(host, defaultPorts[e.Scheme])
		}
		e.Hosts = append(e.Hosts, h)
	}
	if len(e.Hosts) == 0 {
		e.Hosts = []string{net.JoinHostPort("127.0.0.1", defaultPorts[e.Scheme])}
	}
	return e, nil
}

// String spells the endpoint back as a URL; it never holds credentials.
func (e Endpoint) String() string {
	s := e.Scheme
	if e.TLS {
		s += "s"
	}
	s += "://" + strings.Join(e.Hosts, ",") + e.Path
	if len(e.Query) > 0 {
		s += "?" + e.Query.Encode()
	}
	return s
}

const errCredentials = "credentials in the URL are not accepted; use --username/--password(-file), --consul-token(-file) or HERALD_* variables"

// Redact is the one way herald prints a URL it was given (a backend, a health check):
// everything before the last '@' after the scheme is userinfo and is dropped, whatever
// it holds ('/', '@', ':', '%' included), and a string without a scheme gets the same
// treatment, so "root:s3cret@h:2379" shows as "REDACTED@h:2379".
func Redact(raw string) string {
	prefix, rest := "", raw
	if scheme, after, ok := strings.Cut(raw, "://"); ok && isScheme(scheme) {
		prefix, rest = scheme+"://", after
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest = "REDACTED@" + rest[i+1:]
	}
	return prefix + rest
}

// RedactSecrets is the one way herald repeats text that may echo a credential it sent
// (an agent's error body, a proxy's page): each non-empty secret is replaced by
// "REDACTED", the marker Redact uses.
func RedactSecrets(text string, secrets ...string) string {
	for _, sec := range secrets {
		if sec != "" {
			text = strings.ReplaceAll(text, sec, "REDACTED")
		}
	}
	return text
}

// isScheme says whether s is a URL scheme (RFC 3986: a letter, then letters, digits,
// '+', '-' or '.'), so that a password holding "://" is not taken for one.
func isScheme(s string) bool {
	for i, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')
		if !ok {
			return false
		}
	}
	return s != ""
}
