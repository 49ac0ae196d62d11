package backends

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Instance value formats, as recorded in Service.Format.
const (
	FormatHerald    = "herald"    // {"address","port","tags","meta","status","weight","id"}
	FormatHostPort  = "hostport"  // "host:port" value, or zc.zk's host:port node name
	FormatCurator   = "curator"   // Apache Curator ServiceInstance JSON (also Spring Cloud Zookeeper)
	FormatServerSet = "serverset" // Finagle/Aurora ServerSet member JSON
)

// MaxValueSize bounds an instance value. Registries keep instances as small documents;
// anything larger under the services root is something else and is refused rather than
// parsed.
const MaxValueSize = 1 << 20

// ErrNotAlive is returned (wrapped) by ParseInstance for a Finagle/Aurora ServerSet
// member whose status is not ALIVE (STARTING, STOPPING, DEAD, ...). Such a member is not
// malformed, only not serving: callers skip it quietly, at debug level, the way Finagle
// ignores it.
var ErrNotAlive = errors.New("serverset member is not ALIVE")

// ParseInstance reads the instance stored at key <root>/<name>/<id> with value and
// returns it normalized and validated (see NormalizeService). The format is detected:
//
//   - herald JSON: {"address":"10.0.0.1","port":8080,"tags":[],"meta":{},"status":"passing","weight":1,"id":"web-1"}
//   - a plain host:port value: "10.0.0.1:8080", "[::1]:80", and, for writers that do not
//     bracket IPv6 (zc.zk, go-zero), "::1:80" when the part before the last colon is an IP
//   - zc.zk: the node name <id> is host:port and the value is empty or zc.zk's
//     properties ({"pid":1234}); scalar properties become Meta
//   - Apache Curator ServiceInstance JSON (as JsonInstanceSerializer writes it): a null
//     port falls back to sslPort, sslPort is also recorded as Endpoints["ssl"],
//     "enabled":false means maintenance, and Spring Cloud's payload.metadata becomes Meta
//   - Finagle/Aurora ServerSet member JSON: serviceEndpoint is the address,
//     additionalEndpoints become Endpoints, shard becomes Meta["shard"]; a member whose
//     status is not ALIVE returns an error wrapping ErrNotAlive
//
// Name is always the key's <name> segment, since that is where readers look the service
// up; a name inside the value is ignored. ID is the value's id when it carries one, else
// the key's <id> segment. Key and Format are set; Backend is left to the caller.
//
// A Curator document without any of Curator's own fields (sslPort, payload, serviceType,
// registrationTimeUTC, uriSpec, enabled) is indistinguishable from herald JSON and is
// read as such, with the same result. Thrift-encoded ServerSet members are binary and
// are refused.
func ParseInstance(layout, key string, value []byte) (Service, error) {
	l, err := ParseLayout(layout)
	if err != nil {
		return Service{}, err
	}
	return l.ParseInstance(key, value)
}

// ParseInstance reads the instance stored at key with value (see the package function);
// the key's levels give Name, ID and Datacenter as the layout says.
func (l Layout) ParseInstance(key string, value []byte) (Service, error) {
	name, dc, id, ok, err := l.match(key)
	if err != nil || !ok {
		if err == nil || errors.Is(err, errShallow) {
			err = fmt.Errorf("service instance key %q is not %s", key, l.pattern())
		}
		return Service{}, err
	}
	s, err := parseInstanceValue(id, value)
	if err != nil {
		return Service{}, fmt.Errorf("service instance %s: %w", key, err)
	}
	s.Name, s.Datacenter, s.Key = name, dc, key
	if s.ID == "" {
		s.ID = id
	}
	s, err = NormalizeService(s)
	if err != nil {
		return Service{}, fmt.Errorf("service instance %s: %w", key, err)
	}
	return s, nil
}

// ServicesUnder groups the instances found in kvs at cfg's layout by name, each list
// sorted with SortServices. Keys outside the root and keys above the instance level
// (directories, empty services) are ignored. A malformed instance, or a key at a level
// the layout does not have, is skipped with a warning naming its key and reported to
// cfg.OnMalformed; a ServerSet member that is not ALIVE is skipped at debug level.
// Backend is left empty for the caller to set.
func ServicesUnder(cfg Config, kvs map[string]string, log *slog.Logger) map[string][]Service {
	l, err := cfg.Layout()
	if err != nil {
		// open.Open refuses such a configuration; nothing can be read with it.
		cfg.Log().Error("bad services layout", "err", err)
		return map[string][]Service{}
	}
	return l.ServicesUnder(cfg, kvs, log)
}

// ServicesUnder is the package function with an explicit layout (a resource's own).
func (l Layout) ServicesUnder(cfg Config, kvs map[string]string, log *slog.Logger) map[string][]Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	keys := make([]string, 0, len(kvs))
	for k := range kvs {
		if UnderPrefix(k, l.root) {
			keys = append(keys, k)
		}
	}
	// Sorted so that warnings come out in a stable order.
	sort.Strings(keys)
	out := make(map[string][]Service)
	for _, k := range keys {
		if s, ok := l.ParseKey(cfg, log, k, kvs[k]); ok {
			out[s.Name] = append(out[s.Name], s)
		}
	}
	for _, list := range out {
		SortServices(list)
	}
	return out
}

// ParseKey parses the instance at k when k is at the instance level, reporting what is
// wrong the way ServicesUnder does; ok is false for anything that is not a usable
// instance.
func (l Layout) ParseKey(cfg Config, log *slog.Logger, k, v string) (Service, bool) {
	_, _, _, ok, err := l.match(k)
	switch {
	case errors.Is(err, errShallow), err == nil && !ok:
		return Service{}, false
	case err != nil:
		cfg.Malformed(log, k, err)
		return Service{}, false
	}
	s, err := l.ParseInstance(k, []byte(v))
	switch {
	case errors.Is(err, ErrNotAlive):
		log.Debug("skipping service instance that is not ALIVE", "key", k, "err", err)
	case err != nil:
		cfg.Malformed(log, k, err)
	default:
		return s, true
	}
	return Service{}, false
}

// ServiceSummaries turns per-name instance lists into the catalog: names sorted, each
// with the sorted union of its instances' tags.
func ServiceSummaries(m map[string][]Service) []ServiceSummary {
	out := make([]ServiceSummary, 0, len(m))
	for name, list := range m {
		seen := make(map[string]bool)
		var tags []string
		for _, s := range list {
			for _, t := range s.Tags {
				if !seen[t] {
					seen[t] = true
					tags = append(tags, t)
				}
			}
		}
		sort.Strings(tags)
		out = append(out, ServiceSummary{Name: name, Tags: tags})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// NormalizeService validates an instance and puts it in canonical form: Address trimmed
// and unbracketed (IPv6), ports within 0..65535, Status lower-case and defaulted to
// passing, Healthy set from Status. Errors say which field is wrong; callers add the key
// or file.
func NormalizeService(s Service) (Service, error) {
	if s.Name == "" {
		return s, errors.New("empty service name")
	}
	addr, err := cleanHost(s.Address)
	if err != nil {
		return s, err
	}
	s.Address = addr
	if s.Port < 0 || s.Port > 65535 {
		return s, fmt.Errorf("port %d out of range 0-65535", s.Port)
	}
	if s.Weight < 0 {
		return s, fmt.Errorf("weight %d is negative", s.Weight)
	}
	st := strings.ToLower(strings.TrimSpace(s.Status))
	switch st {
	case "":
		st = StatusPassing
	case StatusPassing, StatusWarning, StatusCritical, StatusMaintenance:
	default:
		return s, fmt.Errorf("status %q: want passing, warning, critical or maintenance", s.Status)
	}
	s.Status, s.Healthy = st, st == StatusPassing
	if len(s.Endpoints) > 0 {
		eps := make(map[string]HostPort, len(s.Endpoints))
		for name, hp := range s.Endpoints {
			h, err := cleanHost(hp.Host)
			if err != nil {
				return s, fmt.Errorf("endpoint %q: %w", name, err)
			}
			if hp.Port < 0 || hp.Port > 65535 {
				return s, fmt.Errorf("endpoint %q: port %d out of range 0-65535", name, hp.Port)
			}
			eps[name] = HostPort{h, hp.Port}
		}
		s.Endpoints = eps
	}
	return s, nil
}

// ParseHostPort splits "host:port" strictly (net.SplitHostPort: IPv6 in brackets). For
// writers that do not bracket IPv6 (zc.zk, go-zero) it falls back to splitting at the
// last colon, but only when what comes before is a valid IP address, so "a:b:80" stays
// an error. The port must be decimal digits within 0..65535.
func ParseHostPort(s string) (host string, port int, err error) {
	h, p, serr := net.SplitHostPort(s)
	if serr != nil {
		i := strings.LastIndexByte(s, ':')
		if i < 0 {
			return "", 0, fmt.Errorf("%q is not host:port: %w", s, serr)
		}
		if _, perr := netip.ParseAddr(s[:i]); perr != nil {
			return "", 0, fmt.Errorf("%q is not host:port: %w", s, serr)
		}
		h, p = s[:i], s[i+1:]
	}
	port, err = parsePort(p)
	if err != nil {
		return "", 0, fmt.Errorf("%q: %w", s, err)
	}
	if h == "" {
		return "", 0, fmt.Errorf("%q: empty host", s)
	}
	return h, port, nil
}

func parsePort(p string) (int, error) {
	if p == "" {
		return 0, errors.New("empty port")
	}
	if len(p) > 5 {
		return 0, fmt.Errorf("port %q out of range 0-65535", p)
	}
	n := 0
	for _, c := range []byte(p) {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("port %q is not a decimal number", p)
		}
		n = n*10 + int(c-'0')
	}
	if n > 65535 {
		return 0, fmt.Errorf("port %q out of range 0-65535", p)
	}
	return n, nil
}

// cleanHost accepts a host name or an IP address (IPv6 with or without brackets) and
// returns it without brackets.
func cleanHost(h string) (string, error) {
	h = strings.TrimSpace(h)
	if h == "" {
		return "", errors.New("empty address")
	}
	if len(h) > 255 {
		return "", fmt.Errorf("address %.40q... is longer than 255 bytes", h)
	}
	if inner, ok := strings.CutPrefix(h, "["); ok {
		inner, ok = strings.CutSuffix(inner, "]")
		if !ok || !strings.Contains(inner, ":") {
			return "", fmt.Errorf("address %q is not a host name or IP address", h)
		}
		h = inner
	}
	for _, r := range h {
		if unicode.IsSpace(r) || unicode.IsControl(r) || r == utf8.RuneError {
			return "", fmt.Errorf("address %q is not a host name or IP address", h)
		}
	}
	if strings.Contains(h, ":") {
		if _, err := netip.ParseAddr(h); err != nil {
			return "", fmt.Errorf("address %q holds a port or is not a valid IPv6 address", h)
		}
		return h, nil
	}
	for _, r := range h {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '-' && r != '.' && r != '_' {
			return "", fmt.Errorf("address %q is not a host name or IP address", h)
		}
	}
	return h, nil
}
