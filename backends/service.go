package backends

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
)

// Health statuses, worst last. Consul's status of an instance is the worst of its checks.
const (
	StatusPassing     = "passing"
	StatusWarning     = "warning"
	StatusCritical    = "critical"
	StatusMaintenance = "maintenance"
)

// StatusRank orders statuses from best (0) to worst; unknown counts as critical.
func StatusRank(s string) int {
	switch s {
	case StatusPassing:
		return 0
	case StatusWarning:
		return 1
	case StatusMaintenance:
		return 3
	default:
		return 2
	}
}

// Service is one instance of a service, normalized whatever the registry and the format
// its writer used. Its fields are a superset of consul-template's health service, so
// templates written for consul-template port with few edits.
type Service struct {
	Name      string
	ID        string
	Address   string // host name or IP; IPv6 without brackets
	Port      int    // 0 when the writer gave none
	Tags      []string
	Meta      map[string]string
	Status    string // passing, warning, critical or maintenance
	Healthy   bool   // Status == passing
	Weight    int
	Endpoints map[string]HostPort // named extra endpoints (ServerSet additionalEndpoints, Curator sslPort as "ssl")

	Datacenter string
	Node       string
	Backend    string // etcd, zookeeper, consul, file
	Format     string // herald, hostport, curator, serverset, consul
	Key        string // where the instance was read from
}

// HostPort joins Address and Port as a dialable address ("[::1]:80" for IPv6).
func (s Service) HostPort() string { return HostPort{s.Address, s.Port}.String() }

// HasTag reports whether the instance carries tag t.
func (s Service) HasTag(t string) bool {
	for _, x := range s.Tags {
		if x == t {
			return true
		}
	}
	return false
}

// HostPort is an address and port.
type HostPort struct {
	Host string
	Port int
}

func (h HostPort) String() string { return net.JoinHostPort(h.Host, strconv.Itoa(h.Port)) }

// ServiceSummary is one entry of the service catalog.
type ServiceSummary struct {
	Name string
	Tags []string
}

// SortServices orders instances by (Name, Address, Port, ID, Node) so that renders are
// stable and an unchanged list never causes a reload.
func SortServices(s []Service) {
	sort.SliceStable(s, func(i, j int) bool {
		a, b := s[i], s[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		if a.Address != b.Address {
			return a.Address < b.Address
		}
		if a.Port != b.Port {
			return a.Port < b.Port
		}
		if a.ID != b.ID {
			return a.ID < b.ID
		}
		return a.Node < b.Node
	})
}

// ServiceQuery selects instances of one service, in consul-template's terms:
// "[tag.]name[@dc]" plus a status filter.
type ServiceQuery struct {
	Name       string
	Tag        string
	Datacenter string
	// Statuses accepted; empty means passing only. "any" is spelled as all four.
	Statuses []string
	// Dotted: Name came from a spec with a dot and no explicit tag, so it may also read
	// as tag.name (see TagReading); the catalog decides.
	Dotted bool
}

// TagReading returns consul-template's reading of a dotted spec: the part before the
// last dot as a tag, the rest as the name ("prod.web" is tag prod of web). Callers use it
// only when the catalog has no service named by the whole spec.
func (q ServiceQuery) TagReading() (ServiceQuery, bool) {
	i := strings.LastIndexByte(q.Name, '.')
	if !q.Dotted || i <= 0 || i == len(q.Name)-1 {
		return q, false
	}
	t := q
	t.Tag, t.Name, t.Dotted = q.Name[:i], q.Name[i+1:], false
	return t, true
}

// Any reports whether the query accepts every status.
func (q ServiceQuery) Any() bool { return len(q.Statuses) == 4 }

// Accepts reports whether an instance matches the query's tag and status filter.
func (q ServiceQuery) Accepts(s Service) bool {
	if q.Tag != "" && !s.HasTag(q.Tag) {
		return false
	}
	statuses := q.Statuses
	if len(statuses) == 0 {
		statuses = []string{StatusPassing}
	}
	st := s.Status
	if st == "" {
		st = StatusPassing
	}
	for _, x := range statuses {
		if x == st {
			return true
		}
	}
	return false
}

// String is the canonical spelling, used as identity: "tag.name@dc|passing,warning".
// A name with a dot is spelled "name@dc|statuses|tag=tag", so that tag "a.b" of "c",
// tag "a" of "b.c" and the service "a.b.c" stay three identities.
func (q ServiceQuery) String() string {
	var b strings.Builder
	dotted := strings.Contains(q.Name, ".")
	if q.Tag != "" && !dotted {
		b.WriteString(q.Tag)
		b.WriteByte('.')
	}
	b.WriteString(q.Name)
	if q.Datacenter != "" {
		b.WriteByte('@')
		b.WriteString(q.Datacenter)
	}
	b.WriteByte('|')
	if len(q.Statuses) == 0 {
		b.WriteString(StatusPassing)
	} else if q.Any() {
		b.WriteString("any")
	} else {
		b.WriteString(strings.Join(q.Statuses, ","))
	}
	if dotted {
		b.WriteString("|tag=")
		b.WriteString(q.Tag)
	}
	return b.String()
}

// ParseServiceQuery reads consul-template's forms: `service "web"`, `service "web|any"`,
// `service "tag.web@dc1" "passing,warning"`. Filters are any, passing, warning,
// critical, maintenance, comma-separated, and "tag=T": an explicit tag, which makes the
// whole spec the name ("tag=" for none), for names with dots.
//
// A spec with a dot and no explicit tag is returned whole as Name with Dotted set: the
// catalog decides between the service of that exact name (com.example.Greeter) and
// TagReading (tag prod of web), the exact name winning.
func ParseServiceQuery(spec string, filters ...string) (ServiceQuery, error) {
	var q ServiceQuery
	if i := strings.IndexByte(spec, '|'); i >= 0 {
		filters = append([]string{spec[i+1:]}, filters...)
		spec = spec[:i]
	}
	if i := strings.LastIndexByte(spec, '@'); i >= 0 {
		q.Datacenter = spec[i+1:]
		spec = spec[:i]
		if q.Datacenter == "" {
			return q, fmt.Errorf("service %q: empty datacenter after @", spec)
		}
	}
	q.Name = spec
	if q.Name == "" || strings.HasSuffix(q.Name, ".") {
		return q, fmt.Errorf("service query %q: empty service name", spec)
	}
	explicitTag := false
	seen := map[string]bool{}
	for _, f := range filters {
		for _, s := range strings.Split(f, ",") {
			s = strings.TrimSpace(s)
			if tag, ok := strings.CutPrefix(s, "tag="); ok {
				q.Tag, explicitTag = tag, true
				continue
			}
			switch s {
			case "":
			case "any":
				for _, x := range []string{StatusPassing, StatusWarning, StatusCritical, StatusMaintenance} {
					seen[x] = true
				}
			case StatusPassing, StatusWarning, StatusCritical, StatusMaintenance:
				seen[s] = true
			default:
				return q, fmt.Errorf("service %q: unknown status filter %q (want any, passing, warning, critical or maintenance)", q.Name, s)
			}
		}
	}
	for _, x := range []string{StatusPassing, StatusWarning, StatusCritical, StatusMaintenance} {
		if seen[x] {
			q.Statuses = append(q.Statuses, x)
		}
	}
	if len(q.Statuses) == 1 && q.Statuses[0] == StatusPassing {
		q.Statuses = nil
	}
	if !explicitTag && strings.Contains(q.Name, ".") {
		q.Dotted = true
		if strings.HasPrefix(q.Name, ".") {
			// ".web": consul-template's empty tag; there is no other reading.
			q.Name, q.Dotted = q.Name[1:], false
		}
	}
	return q, nil
}

// InCatalog reports whether names (sorted by name, as every backend returns them) lists
// a service called name.
func InCatalog(names []ServiceSummary, name string) bool {
	i := sort.Search(len(names), func(i int) bool { return names[i].Name >= name })
	return i < len(names) && names[i].Name == name
}

// ResolveQuery picks the reading of a dotted query with the catalog: the exact name
// when the catalog has it (com.example.Greeter), else the tag reading when the catalog
// has that name (tag prod of web), else the exact name, which is then reported absent.
func ResolveQuery(q ServiceQuery, names []ServiceSummary) ServiceQuery {
	t, ok := q.TagReading()
	if !ok || InCatalog(names, q.Name) || !InCatalog(names, t.Name) {
		q.Dotted = false
		return q
	}
	return t
}
