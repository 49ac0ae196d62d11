package backends

import (
	"errors"
	"fmt"
	"strings"
)

// Layout says where etcd and ZooKeeper instances live and what each level of their keys
// means: "/services/{name}/{id}" (the default) or node-etcd's
// "/services/{name}/{dc}/{id}". Levels are {name} and {id} (once each, {id} last), an
// optional {dc}, {_} for a level whose value does not matter, and literal segments that
// must match exactly. The literal levels before the first placeholder are the root.
type Layout struct {
	root   string   // clean
	levels []string // below root
}

// DefaultLayout is where herald and most registrants write: <root>/<name>/<id>.
const DefaultLayout = "/services/{name}/{id}"

// ParseLayout reads a layout. A spec without placeholders is a root holding
// <name>/<id> ("/services" is "/services/{name}/{id}", "" is "/{name}/{id}"); a relative
// spec ("{name}/{dc}/{id}") is taken under /services.
func ParseLayout(spec string) (Layout, error) {
	s := strings.TrimSpace(spec)
	switch {
	case !strings.Contains(s, "{"):
		s = strings.TrimSuffix(CleanKey(s), "/") + "/{name}/{id}"
	case !strings.HasPrefix(s, "/"):
		s = "/services/" + s
	}
	var l Layout
	var rootSegs []string
	count := map[string]int{}
	for _, seg := range strings.Split(strings.Trim(s, "/"), "/") {
		switch {
		case seg == "" || seg == "." || seg == "..":
			return Layout{}, fmt.Errorf("services layout %q: empty, . or .. level", spec)
		case seg == "{name}" || seg == "{id}" || seg == "{dc}" || seg == "{_}":
			count[seg]++
			l.levels = append(l.levels, seg)
		case strings.ContainsAny(seg, "{}"):
			return Layout{}, fmt.Errorf("services layout %q: unknown level %q (want {name}, {dc}, {id}, {_} or a literal)", spec, seg)
		case len(l.levels) == 0:
			rootSegs = append(rootSegs, seg)
		default:
			l.levels = append(l.levels, seg)
		}
	}
	switch {
	case count["{name}"] != 1 || count["{id}"] != 1:
		return Layout{}, fmt.Errorf("services layout %q: want exactly one {name} and one {id}", spec)
	case count["{dc}"] > 1:
		return Layout{}, fmt.Errorf("services layout %q: more than one {dc}", spec)
	case l.levels[len(l.levels)-1] != "{id}":
		return Layout{}, fmt.Errorf("services layout %q: {id} must be the last level", spec)
	}
	l.root = CleanKey(strings.Join(rootSegs, "/"))
	return l, nil
}

// Root is the clean key under which every instance lies.
func (l Layout) Root() string { return l.root }

// HasDC reports whether the layout has a {dc} level.
func (l Layout) HasDC() bool {
	for _, lv := range l.levels {
		if lv == "{dc}" {
			return true
		}
	}
	return false
}

func (l Layout) String() string {
	return strings.TrimSuffix(l.root, "/") + "/" + strings.Join(l.levels, "/")
}

// pattern is the layout as error messages spell it: /services/<name>/<id>.
func (l Layout) pattern() string {
	r := strings.NewReplacer("{", "<", "}", ">")
	return r.Replace(l.String())
}

// ServicePrefix is the narrowest key prefix holding every instance of name: the path to
// its {name} level when only literals come before it, else the root.
func (l Layout) ServicePrefix(name string) (string, error) {
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return "", fmt.Errorf("service name %q: want one path segment", name)
	}
	p := strings.TrimSuffix(l.root, "/")
	for _, lv := range l.levels {
		switch lv {
		case "{name}":
			return p + "/" + name, nil
		case "{dc}", "{_}", "{id}":
			return l.root, nil
		default:
			p += "/" + lv
		}
	}
	return l.root, nil
}

// CheckQuery refuses what the layout cannot answer: a datacenter without a {dc} level
// would otherwise select nothing, silently.
func (l Layout) CheckQuery(q ServiceQuery) error {
	if q.Datacenter != "" && !l.HasDC() {
		return fmt.Errorf("service %s@%s: the services layout %s has no {dc} level (set --services-layout, e.g. %s/{name}/{dc}/{id}, or drop @%s)",
			q.Name, q.Datacenter, l, strings.TrimSuffix(l.root, "/"), q.Datacenter)
	}
	return nil
}

// Selects reports whether an instance read with this layout answers q: same name,
// datacenter when q names one, and what q.Accepts says.
func (l Layout) Selects(q ServiceQuery, s Service) bool {
	return s.Name == q.Name && (q.Datacenter == "" || s.Datacenter == q.Datacenter) && q.Accepts(s)
}

// errShallow marks a key above the instance level: a directory (ZooKeeper keeps its
// service nodes as keys when they hold data) or an empty service, never an instance.
var errShallow = errors.New("above the instance level")

// match splits key into its levels. A key outside the root returns ok false and no
// error (it is not service data); a key above the instance level returns errShallow; a
// deeper key or a literal level that differs returns an error saying which layout was
// expected, for a warning.
func (l Layout) match(key string) (name, dc, id string, ok bool, err error) {
	prefix := strings.TrimSuffix(l.root, "/") + "/"
	rel, under := strings.CutPrefix(key, prefix)
	if !under || rel == "" {
		return "", "", "", false, nil
	}
	segs := strings.Split(rel, "/")
	bad := func(why string) error {
		return fmt.Errorf("service instance key %q is not %s (%s; set --services-layout or the resource's services_layout to what the registrant writes)", key, l.pattern(), why)
	}
	if len(segs) > len(l.levels) {
		return "", "", "", false, bad(fmt.Sprintf("%d levels below %s, the layout has %d", len(segs), l.root, len(l.levels)))
	}
	for i, seg := range segs {
		if seg == "" {
			return "", "", "", false, bad("empty level")
		}
		switch lv := l.levels[i]; lv {
		case "{name}":
			name = seg
		case "{dc}":
			dc = seg
		case "{id}":
			id = seg
		case "{_}":
		default:
			if seg != lv {
				return "", "", "", false, bad(fmt.Sprintf("level %d is %q, the layout has %q", i+1, seg, lv))
			}
		}
	}
	if len(segs) < len(l.levels) {
		return "", "", "", false, errShallow
	}
	return name, dc, id, true, nil
}

// InstanceKey is where an instance of name in datacenter dc with id is written: what a
// reader with this layout reads back. A layout with a {_} level, or a {dc} level and no
// dc, cannot say where.
func (l Layout) InstanceKey(name, dc, id string) (string, error) {
	p := strings.TrimSuffix(l.root, "/")
	for _, lv := range l.levels {
		v := lv
		switch lv {
		case "{name}":
			v = name
		case "{id}":
			v = id
		case "{dc}":
			if dc == "" {
				return "", fmt.Errorf("the services layout %s has a {dc} level: give the instance a datacenter", l)
			}
			v = dc
		case "{_}":
			return "", fmt.Errorf("the services layout %s has a {_} level: herald cannot tell what to write there", l)
		}
		if v == "" || v == "." || v == ".." || strings.Contains(v, "/") {
			return "", fmt.Errorf("%s %q: want one non-empty path segment", strings.Trim(lv, "{}"), v)
		}
		p += "/" + v
	}
	return p, nil
}
