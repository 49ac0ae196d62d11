package backends

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Layout says where etcd and ZooKeeper instances live and what each level of their keys
// means: "/services/{name}/{id}" (the default) or node-etcd's
// "/services/{name}/{dc}/{id}". Levels are {name} and {id} (once each, {id} last), an
// optional {dc}, {_} for a level whose value does not matter, and literal segments that
// must match exactly. The literal levels before the first placeholder are the root.
//
// A layout may name several patterns, comma-separated, for registrants that write to
// different roots or depths ("/services/{name}/{id},/dubbo/{name}/providers/{id}"): a key
// is read with the first pattern it fits, and a service's instances are gathered from
// all of them. Reads and watches cover the patterns' deepest common ancestor.
type Layout struct {
	root string          // clean; the common ancestor of the patterns' roots
	pats []layoutPattern // in the order given; the first is where herald registers
}

// layoutPattern is one pattern of a Layout.
type layoutPattern struct {
	root   string   // clean
	levels []string // below root
}

// DefaultLayout is where herald and most registrants write: <root>/<name>/<id>.
const DefaultLayout = "/services/{name}/{id}"

// ParseLayout reads a layout: one pattern, or several separated by commas. A pattern
// without placeholders is a root holding <name>/<id> ("/services" is
// "/services/{name}/{id}", "" is "/{name}/{id}"); a relative one ("{name}/{dc}/{id}") is
// taken under /services.
func ParseLayout(spec string) (Layout, error) {
	var l Layout
	parts := strings.Split(spec, ",")
	for _, part := range parts {
		if len(parts) > 1 && strings.TrimSpace(part) == "" {
			// "" alone is the root /, but a stray comma must not add it to a list.
			return Layout{}, fmt.Errorf("services layout %q: empty pattern in the list", spec)
		}
		p, err := parsePattern(part)
		if err != nil {
			if strings.Contains(spec, ",") {
				err = fmt.Errorf("services layout %q: %w", spec, err)
			}
			return Layout{}, err
		}
		if l.pats == nil {
			l.root = p.root
		} else {
			l.root = commonAncestor(l.root, p.root)
		}
		l.pats = append(l.pats, p)
	}
	return l, nil
}

func parsePattern(spec string) (layoutPattern, error) {
	s := strings.TrimSpace(spec)
	switch {
	case !strings.Contains(s, "{"):
		s = strings.TrimSuffix(CleanKey(s), "/") + "/{name}/{id}"
	case !strings.HasPrefix(s, "/"):
		s = "/services/" + s
	}
	var l layoutPattern
	var rootSegs []string
	count := map[string]int{}
	for _, seg := range strings.Split(strings.Trim(s, "/"), "/") {
		switch {
		case seg == "" || seg == "." || seg == "..":
			return layoutPattern{}, fmt.Errorf("services layout %q: empty, . or .. level", spec)
		case seg == "{name}" || seg == "{id}" || seg == "{dc}" || seg == "{_}":
			count[seg]++
			l.levels = append(l.levels, seg)
		case strings.ContainsAny(seg, "{}"):
			return layoutPattern{}, fmt.Errorf("services layout %q: unknown level %q (want {name}, {dc}, {id}, {_} or a literal)", spec, seg)
		case len(l.levels) == 0:
			rootSegs = append(rootSegs, seg)
		default:
			l.levels = append(l.levels, seg)
		}
	}
	switch {
	case count["{name}"] != 1 || count["{id}"] != 1:
		return layoutPattern{}, fmt.Errorf("services layout %q: want exactly one {name} and one {id}", spec)
	case count["{dc}"] > 1:
		return layoutPattern{}, fmt.Errorf("services layout %q: more than one {dc}", spec)
	case l.levels[len(l.levels)-1] != "{id}":
		return layoutPattern{}, fmt.Errorf("services layout %q: {id} must be the last level", spec)
	}
	l.root = CleanKey(strings.Join(rootSegs, "/"))
	return l, nil
}

// commonAncestor is the deepest clean key both clean keys a and b lie under.
func commonAncestor(a, b string) string {
	as, bs := strings.Split(strings.Trim(a, "/"), "/"), strings.Split(strings.Trim(b, "/"), "/")
	n := 0
	for n < len(as) && n < len(bs) && as[n] == bs[n] && as[n] != "" {
		n++
	}
	return CleanKey(strings.Join(as[:n], "/"))
}

// Root is the clean key under which every instance lies.
func (l Layout) Root() string { return l.root }

// HasDC reports whether a pattern of the layout has a {dc} level.
func (l Layout) HasDC() bool {
	for _, p := range l.pats {
		if slices.Contains(p.levels, "{dc}") {
			return true
		}
	}
	return false
}

func (l Layout) String() string {
	out := make([]string, len(l.pats))
	for i, p := range l.pats {
		out[i] = p.String()
	}
	return strings.Join(out, ",")
}

func (p layoutPattern) String() string {
	return strings.TrimSuffix(p.root, "/") + "/" + strings.Join(p.levels, "/")
}

// pattern is the pattern as error messages spell it: /services/<name>/<id>.
func (p layoutPattern) pattern() string {
	r := strings.NewReplacer("{", "<", "}", ">")
	return r.Replace(p.String())
}

// pattern is the layout as error messages spell it: /services/<name>/<id> or ...
func (l Layout) pattern() string {
	out := make([]string, len(l.pats))
	for i, p := range l.pats {
		out[i] = p.pattern()
	}
	return strings.Join(out, " or ")
}

// ServicePrefix is the narrowest key prefix holding every instance of name: the path to
// its {name} level when only literals come before it, else the root (with several
// patterns, the common ancestor of theirs).
func (l Layout) ServicePrefix(name string) (string, error) {
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return "", fmt.Errorf("service name %q: want one path segment", name)
	}
	var out string
	for i, p := range l.pats {
		pp := p.servicePrefix(name)
		if i == 0 {
			out = pp
		} else {
			out = commonAncestor(out, pp)
		}
	}
	return out, nil
}

func (p layoutPattern) servicePrefix(name string) string {
	pre := strings.TrimSuffix(p.root, "/")
	for _, lv := range p.levels {
		switch lv {
		case "{name}":
			return pre + "/" + name
		case "{dc}", "{_}", "{id}":
			return p.root
		default:
			pre += "/" + lv
		}
	}
	return p.root
}

// CheckQuery refuses what the layout cannot answer: a datacenter without a {dc} level
// would otherwise select nothing, silently.
func (l Layout) CheckQuery(q ServiceQuery) error {
	if q.Datacenter != "" && !l.HasDC() {
		return fmt.Errorf("service %s@%s: the services layout %s has no {dc} level (set --services-layout, e.g. %s/{name}/{dc}/{id}, or drop @%s)",
			q.Name, q.Datacenter, l, strings.TrimSuffix(l.pats[0].root, "/"), q.Datacenter)
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

// match splits key into its levels with the first pattern it fits. A key outside every
// pattern's root returns ok false and no error (it is not service data); a key above the
// instance level of a pattern it does not fit returns errShallow (a directory); a
// deeper key or a literal level that differs returns an error saying which layout was
// expected, for a warning.
func (l Layout) match(key string) (name, dc, id string, ok bool, err error) {
	var reasons []string
	var expected []string
	shallow := false
	for _, p := range l.pats {
		name, dc, id, under, why := p.match(key)
		switch {
		case !under:
		case why == "":
			return name, dc, id, true, nil
		case why == "shallow":
			shallow = true
		default:
			reasons = append(reasons, why)
			expected = append(expected, p.pattern())
		}
	}
	switch {
	case shallow:
		return "", "", "", false, errShallow
	case reasons != nil:
		return "", "", "", false, fmt.Errorf("service instance key %q is not %s (%s; set --services-layout, services_layout in herald.toml, to what the registrant writes)",
			key, strings.Join(expected, " or "), strings.Join(reasons, "; "))
	}
	return "", "", "", false, nil
}

// match splits key into p's levels: under is false outside p's root; why is "" for an
// instance, "shallow" above the instance level, else what does not fit.
func (p layoutPattern) match(key string) (name, dc, id string, under bool, why string) {
	prefix := strings.TrimSuffix(p.root, "/") + "/"
	rel, under := strings.CutPrefix(key, prefix)
	if !under || rel == "" {
		return "", "", "", false, ""
	}
	segs := strings.Split(rel, "/")
	if len(segs) > len(p.levels) {
		return "", "", "", true, fmt.Sprintf("%d levels below %s, the layout has %d", len(segs), p.root, len(p.levels))
	}
	for i, seg := range segs {
		if seg == "" {
			return "", "", "", true, "empty level"
		}
		switch lv := p.levels[i]; lv {
		case "{name}":
			name = seg
		case "{dc}":
			dc = seg
		case "{id}":
			id = seg
		case "{_}":
		default:
			if seg != lv {
				return "", "", "", true, fmt.Sprintf("level %d is %q, the layout has %q", i+1, seg, lv)
			}
		}
	}
	if len(segs) < len(p.levels) {
		return "", "", "", true, "shallow"
	}
	return name, dc, id, true, ""
}

// InstanceKey is where an instance of name in datacenter dc with id is written (with the
// layout's first pattern): what a reader with this layout reads back. A pattern with a
// {_} level, or a {dc} level and no dc, cannot say where.
func (l Layout) InstanceKey(name, dc, id string) (string, error) {
	first := l.pats[0]
	p := strings.TrimSuffix(first.root, "/")
	for _, lv := range first.levels {
		v := lv
		switch lv {
		case "{name}":
			v = name
		case "{id}":
			v = id
		case "{dc}":
			if dc == "" {
				return "", fmt.Errorf("the services layout %s has a {dc} level: give the instance a datacenter", first)
			}
			v = dc
		case "{_}":
			return "", fmt.Errorf("the services layout %s has a {_} level: herald cannot tell what to write there", first)
		}
		if v == "" || v == "." || v == ".." || strings.Contains(v, "/") {
			return "", fmt.Errorf("%s %q: want one non-empty path segment", strings.Trim(lv, "{}"), v)
		}
		p += "/" + v
	}
	return p, nil
}
