package backends

// The instance documents each registering tool writes, one decoder per tool: herald's
// own JSON (and registrator's ZooKeeper body), Apache Curator's ServiceInstance, Finagle
// and Aurora ServerSets, and zc.zk's properties; parseInstanceValue picks one by the
// value's shape, and encode.go writes the ones herald registers as.

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

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
