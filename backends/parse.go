package backends

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strconv"
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

func parseInstanceValue(id string, v []byte) (Service, error) {
	if len(v) > MaxValueSize {
		return Service{}, fmt.Errorf("value is %d bytes, more than the %d accepted", len(v), MaxValueSize)
	}
	if !utf8.Valid(v) || bytes.IndexByte(v, 0) >= 0 {
		return Service{}, errors.New("value is binary, not UTF-8 text (Thrift-encoded ServerSet members are not supported)")
	}
	t := bytes.TrimSpace(v)
	switch {
	case len(t) == 0:
		return parseZCZK(id, nil)
	case t[0] == '{':
		return parseJSONInstance(id, t)
	default:
		h, p, err := ParseHostPort(string(t))
		if err != nil {
			return Service{}, err
		}
		return Service{Address: h, Port: p, Format: FormatHostPort}, nil
	}
}

func parseJSONInstance(id string, t []byte) (Service, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(t, &probe); err != nil {
		return Service{}, jsonError(err)
	}
	has := func(fields ...string) bool {
		for _, f := range fields {
			if _, ok := probe[f]; ok {
				return true
			}
		}
		return false
	}
	switch {
	case has("serviceEndpoint"):
		return parseServerSet(t)
	case has("sslPort", "payload", "serviceType", "registrationTimeUTC", "uriSpec", "enabled"):
		return parseCurator(t)
	case has(heraldFields...):
		return parseHerald(id, t)
	default:
		return parseZCZK(id, probe)
	}
}

// heraldFields mark a JSON value read as herald's format or one of its relatives:
// node-etcd and hand-written registrants ({"hostname":"h","port":"3000"}), registrator's
// ZooKeeper body ({"Name","IP","PublicPort","PrivatePort","ContainerID","Tags","Attrs"}).
var heraldFields = []string{
	"address", "host", "hostname", "ip", "serviceAddress", "Address", "IP",
	"port", "Port", "PublicPort", "tags", "Tags", "Attrs", "meta", "status", "weight", "id", "name", "Name",
}

// heraldJSON reads herald's own format and what other registrants write in its place.
// encoding/json matches names case-insensitively, so "ip" also reads registrator's "IP"
// and "address" Consul-style "Address".
type heraldJSON struct {
	ID             string                     `json:"id"`
	Address        string                     `json:"address"`
	Host           string                     `json:"host"`
	Hostname       string                     `json:"hostname"`
	IP             string                     `json:"ip"`
	ServiceAddress string                     `json:"serviceAddress"`
	Port           json.RawMessage            `json:"port"`
	PublicPort     json.RawMessage            `json:"PublicPort"`
	Tags           []string                   `json:"tags"`
	Meta           map[string]json.RawMessage `json:"meta"`
	Attrs          map[string]json.RawMessage `json:"Attrs"`
	Status         string                     `json:"status"`
	Weight         int                        `json:"weight"`
}

func parseHerald(id string, t []byte) (Service, error) {
	var h heraldJSON
	if err := json.Unmarshal(t, &h); err != nil {
		return Service{}, jsonError(err)
	}
	meta, err := scalarMap(h.Meta, "meta")
	if err != nil {
		return Service{}, err
	}
	attrs, err := scalarMap(h.Attrs, "Attrs")
	if err != nil {
		return Service{}, err
	}
	for k, v := range attrs {
		if _, ok := meta[k]; !ok {
			if meta == nil {
				meta = make(map[string]string, len(attrs))
			}
			meta[k] = v
		}
	}
	port, err := jsonPort("port", h.Port)
	if err != nil {
		return Service{}, err
	}
	if port == 0 {
		// registrator: PublicPort is the port other hosts reach.
		if port, err = jsonPort("PublicPort", h.PublicPort); err != nil {
			return Service{}, err
		}
	}
	s := Service{
		ID: h.ID, Address: firstNonEmpty(h.Address, h.Host, h.Hostname, h.IP, h.ServiceAddress),
		Port: port, Tags: h.Tags, Meta: meta, Status: h.Status, Weight: h.Weight, Format: FormatHerald,
	}
	if s.Address == "" || s.Port == 0 {
		// A body without an address under a host:port node (registrator with an empty
		// IP, zc.zk with properties): the node name says where.
		if host, p, err := ParseHostPort(id); err == nil {
			s.Address = cmp.Or(s.Address, host)
			s.Port = cmp.Or(s.Port, p)
		}
	}
	return s, nil
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if strings.TrimSpace(v) != "" {
			return v
		}
	}
	return ""
}

// jsonPort reads a port written as a JSON number or, as node-etcd and many hand-written
// registrants do, as a string of decimal digits; absent or null is 0.
func jsonPort(field string, raw json.RawMessage) (int, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	if raw[0] == '"' {
		var str string
		if err := json.Unmarshal(raw, &str); err != nil {
			return 0, fmt.Errorf("field %q: %w", field, jsonError(err))
		}
		n, err := parsePort(str)
		if err != nil {
			return 0, fmt.Errorf("field %q: want an integer or a string of digits: %w", field, err)
		}
		return n, nil
	}
	var n int
	if err := json.Unmarshal(raw, &n); err != nil {
		return 0, fmt.Errorf("field %q: want an integer or a string of digits, got %.20s", field, raw)
	}
	if n < 0 || n > 65535 {
		return 0, fmt.Errorf("port %d out of range 0-65535", n)
	}
	return n, nil
}

// curatorJSON is the shape Curator's JsonInstanceSerializer (Jackson) writes for
// ServiceInstance; port and sslPort are Integer and may be null.
type curatorJSON struct {
	ID      string          `json:"id"`
	Address string          `json:"address"`
	Port    *int            `json:"port"`
	SSLPort *int            `json:"sslPort"`
	Payload json.RawMessage `json:"payload"`
	Enabled *bool           `json:"enabled"`
}

func parseCurator(t []byte) (Service, error) {
	var c curatorJSON
	if err := json.Unmarshal(t, &c); err != nil {
		return Service{}, jsonError(err)
	}
	s := Service{ID: c.ID, Address: c.Address, Format: FormatCurator}
	switch {
	case c.Port != nil:
		s.Port = *c.Port
	case c.SSLPort != nil:
		s.Port = *c.SSLPort
	}
	if c.SSLPort != nil {
		s.Endpoints = map[string]HostPort{"ssl": {c.Address, *c.SSLPort}}
	}
	if c.Enabled != nil && !*c.Enabled {
		s.Status = StatusMaintenance
	}
	// Spring Cloud Zookeeper's payload is a ZookeeperInstance with a metadata map; other
	// payloads are application-defined and carry nothing herald can interpret.
	var payload struct {
		Metadata map[string]json.RawMessage `json:"metadata"`
	}
	if bytes.HasPrefix(bytes.TrimSpace(c.Payload), []byte("{")) {
		if err := json.Unmarshal(c.Payload, &payload); err != nil {
			return Service{}, fmt.Errorf("payload: %w", jsonError(err))
		}
		meta, err := scalarMap(payload.Metadata, "payload.metadata")
		if err != nil {
			return Service{}, err
		}
		s.Meta = meta
	}
	return s, nil
}

type serverSetEndpoint struct {
	Host string `json:"host"`
	Port *int   `json:"port"`
}

// serverSetJSON is the member document Aurora's executor and Finagle's
// ServerSet announcer write: {"serviceEndpoint":{"host","port"},
// "additionalEndpoints":{name:{"host","port"}},"status":"ALIVE","shard":0}.
type serverSetJSON struct {
	ServiceEndpoint     *serverSetEndpoint            `json:"serviceEndpoint"`
	AdditionalEndpoints map[string]*serverSetEndpoint `json:"additionalEndpoints"`
	Status              string                        `json:"status"`
	Shard               *int                          `json:"shard"`
}

func parseServerSet(t []byte) (Service, error) {
	var m serverSetJSON
	if err := json.Unmarshal(t, &m); err != nil {
		return Service{}, jsonError(err)
	}
	if m.Status != "ALIVE" {
		return Service{}, fmt.Errorf("status %q: %w", m.Status, ErrNotAlive)
	}
	ep := func(name string, e *serverSetEndpoint) (HostPort, error) {
		switch {
		case e == nil:
			return HostPort{}, fmt.Errorf("%s is null", name)
		case e.Port == nil:
			return HostPort{}, fmt.Errorf("%s has no port", name)
		}
		return HostPort{e.Host, *e.Port}, nil
	}
	primary, err := ep("serviceEndpoint", m.ServiceEndpoint)
	if err != nil {
		return Service{}, err
	}
	s := Service{Address: primary.Host, Port: primary.Port, Format: FormatServerSet}
	if len(m.AdditionalEndpoints) > 0 {
		s.Endpoints = make(map[string]HostPort, len(m.AdditionalEndpoints))
		for name, e := range m.AdditionalEndpoints {
			hp, err := ep(fmt.Sprintf("additionalEndpoints %q", name), e)
			if err != nil {
				return Service{}, err
			}
			s.Endpoints[name] = hp
		}
	}
	if m.Shard != nil {
		s.Meta = map[string]string{"shard": strconv.Itoa(*m.Shard)}
	}
	return s, nil
}

// parseZCZK reads zc.zk's registration: the node name is the address and the data holds
// properties (by default {"pid":N}).
func parseZCZK(id string, props map[string]json.RawMessage) (Service, error) {
	h, p, err := ParseHostPort(id)
	if err != nil {
		if props == nil {
			return Service{}, fmt.Errorf("empty value, and the key's last segment %q is not host:port", id)
		}
		return Service{}, fmt.Errorf("JSON value has no address (herald, Curator or ServerSet fields), and the key's last segment %q is not host:port", id)
	}
	s := Service{Address: h, Port: p, Format: FormatHostPort}
	for k, raw := range props {
		// zc.zk properties are free-form; only scalars have a meaning as Meta.
		if v, ok := scalarString(raw); ok {
			if s.Meta == nil {
				s.Meta = make(map[string]string)
			}
			s.Meta[k] = v
		}
	}
	return s, nil
}

// scalarMap turns a JSON object of scalars into strings: strings as they are, numbers as
// written, booleans as true/false, null as "".
func scalarMap(m map[string]json.RawMessage, field string) (map[string]string, error) {
	if len(m) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(m))
	for k, raw := range m {
		v, ok := scalarString(raw)
		if !ok {
			return nil, fmt.Errorf("%s %q: want a string, number or boolean, got %.40s", field, k, raw)
		}
		out[k] = v
	}
	return out, nil
}

func scalarString(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", false
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		return s, true
	case '{', '[':
		return "", false
	case 'n':
		return "", true
	default: // number, true, false: already their natural spelling
		return string(raw), true
	}
}

// jsonError rewords encoding/json errors so they say where and what, without Go type
// names.
func jsonError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Errorf("invalid JSON at byte %d: %w", syn.Offset, err)
	case errors.As(err, &typ):
		what := "value"
		if typ.Field != "" {
			what = "field " + strconv.Quote(typ.Field)
		}
		return fmt.Errorf("%s: want %s, got JSON %s", what, jsonTypeName(typ.Type.String()), typ.Value)
	default:
		return fmt.Errorf("invalid JSON: %w", err)
	}
}

func jsonTypeName(goType string) string {
	switch strings.TrimPrefix(goType, "*") {
	case "int":
		return "an integer"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "[]string":
		return "an array of strings"
	default:
		return "an object"
	}
}
