package template

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/Masterminds/sprig/v3"
	"github.com/heraldhq/herald/backends"
)

// maxSeq bounds seq. confd has none, so `seq 1 (atoi (getv "/n"))` over a corrupt value
// would exhaust memory and take the daemon down; no real configuration needs more.
const maxSeq = 1 << 20

// KVPairs is what gets returns. It is a named type on purpose: confd's gets returns
// memkv.KVPairs, which confd's reverse does not recognise, so `reverse (gets ...)` leaves
// the order unchanged in confd and must here too.
type KVPairs []backends.KVPair

// funcMap is everything a template can call, with the store functions bound to st.
// Where sprig and confd (or herald, or text/template's builtins) use the same name, the
// confd meaning wins, and sprig's stays reachable as sprig_<name>.
func (t *Template) funcMap(st *execState) template.FuncMap {
	ours := t.confdFuncs()
	for name, fn := range st.funcs() {
		ours[name] = fn
	}
	builtin := make(map[string]bool)
	for _, name := range textBuiltins() {
		builtin[name] = true
	}
	m := make(template.FuncMap, len(ours)+250)
	for name, fn := range sprig.TxtFuncMap() {
		if _, clash := ours[name]; clash || builtin[name] {
			// Not under its own name even for a builtin: confd templates use
			// text/template's slice, not sprig's.
			m["sprig_"+name] = fn
			continue
		}
		m[name] = fn
	}
	for name, fn := range ours {
		m[name] = fn
	}
	// Bounded versions under the same names (sprig's stay sprig's in FuncNames).
	for name, fn := range st.boundedFuncs() {
		m[name] = fn
	}
	return m
}

// textBuiltins are text/template's predefined functions. A test checks the list against
// what text/template itself accepts, so a new builtin cannot slip by unnoticed.
func textBuiltins() []string {
	return []string{
		"and", "call", "html", "index", "slice", "js", "len", "not", "or",
		"print", "printf", "println", "urlquery", "eq", "ge", "gt", "le", "lt", "ne",
	}
}

// FuncNames lists, sorted, confd's function catalogue as herald implements it, every sprig
// function name, and the sprig names that confd, herald or text/template already use, each
// reachable as sprig_<name>. It reads the function map templates actually get.
func FuncNames() (confd, sprigNames, clashes []string) {
	t := &Template{}
	st := &execState{}
	installed := t.funcMap(st)
	own := t.confdFuncs()
	for name, fn := range st.funcs() {
		own[name] = fn
	}
	for name := range own {
		if !slices.Contains(heraldFuncNames(), name) {
			confd = append(confd, name)
		}
	}
	for name := range sprig.TxtFuncMap() {
		sprigNames = append(sprigNames, name)
		if _, ok := installed["sprig_"+name]; ok {
			clashes = append(clashes, name)
		}
	}
	sort.Strings(confd)
	sort.Strings(sprigNames)
	sort.Strings(clashes)
	return confd, sprigNames, clashes
}

// confdFuncs are confd's functions that do not read the store.
func (t *Template) confdFuncs() template.FuncMap {
	return template.FuncMap{
		"base":           path.Base,
		"dir":            path.Dir,
		"split":          strings.Split,
		"join":           strings.Join,
		"toUpper":        strings.ToUpper,
		"toLower":        strings.ToLower,
		"contains":       strings.Contains,
		"replace":        strings.Replace,
		"trimSuffix":     strings.TrimSuffix,
		"json":           jsonObject,
		"jsonArray":      jsonArray,
		"map":            createMap,
		"getenv":         getenv,
		"datetime":       time.Now,
		"lookupIP":       t.lookupIP,
		"lookupIPV4":     t.lookupIPV4,
		"lookupIPV6":     t.lookupIPV6,
		"lookupSRV":      t.lookupSRV,
		"fileExists":     fileExists,
		"base64Encode":   base64Encode,
		"base64Decode":   base64Decode,
		"parseBool":      strconv.ParseBool,
		"atoi":           strconv.Atoi,
		"reverse":        reverse,
		"sortByLength":   sortByLength,
		"sortKVByLength": sortKVByLength,
		"add":            func(a, b int) int { return a + b },
		"sub":            func(a, b int) int { return a - b },
		"mul":            func(a, b int) int { return a * b },
		"div":            div,
		"mod":            mod,
		"seq":            seq,
	}
}

func jsonObject(data string) (map[string]any, error) {
	var v map[string]any
	if err := json.Unmarshal([]byte(data), &v); err != nil {
		return nil, fmt.Errorf("json: value %s is not a JSON object: %w", abbrev(data), err)
	}
	return v, nil
}

func jsonArray(data string) ([]any, error) {
	var v []any
	if err := json.Unmarshal([]byte(data), &v); err != nil {
		return nil, fmt.Errorf("jsonArray: value %s is not a JSON array: %w", abbrev(data), err)
	}
	return v, nil
}

// abbrev quotes s for an error message, cut short so that a large value cannot flood a log.
func abbrev(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

// createMap is confd's map: "k1" v1 "k2" v2 ... to a map[string]any.
func createMap(values ...any) (map[string]any, error) {
	if len(values)%2 != 0 {
		return nil, fmt.Errorf("invalid map call: %d arguments, want key/value pairs", len(values))
	}
	m := make(map[string]any, len(values)/2)
	for i := 0; i < len(values); i += 2 {
		k, ok := values[i].(string)
		if !ok {
			return nil, fmt.Errorf("invalid map call: key %v (argument %d) is %T; map keys must be strings", values[i], i+1, values[i])
		}
		m[k] = values[i+1]
	}
	return m, nil
}

// getenv is confd's: an empty variable counts as unset and yields the default.
func getenv(key string, def ...string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	if len(def) > 0 {
		return def[0]
	}
	return ""
}

// fileExists is confd's: only "does not exist" is false; any other Stat error is true.
func fileExists(name string) bool {
	_, err := os.Stat(name)
	return !os.IsNotExist(err)
}

func base64Encode(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func base64Decode(s string) (string, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return "", fmt.Errorf("base64Decode %s: %w", abbrev(s), err)
	}
	return string(b), nil
}

// inPlaceFuncs are the functions that change the list they are given (confd's reverse,
// sortByLength and sortKVByLength; sprig's sortAlpha on a []string). Renders share the
// lists ls and lsdir return unless their template calls one of these; a test calls
// every function with a list to keep this complete.
var inPlaceFuncs = []string{"reverse", "sortByLength", "sortKVByLength", "sortAlpha"}

// reverse reverses in place, as confd does, and only the two types confd's handles:
// anything else (including gets' KVPairs) comes back unchanged.
func reverse(values any) any {
	switch v := values.(type) {
	case []string:
		slices.Reverse(v)
	case []backends.KVPair:
		slices.Reverse(v)
	}
	return values
}

// sortByLength sorts in place, shortest first. confd's sort.Sort is an insertion sort up
// to 12 elements, hence stable there; a stable sort matches it and stays deterministic
// beyond.
func sortByLength(values []string) []string {
	sort.SliceStable(values, func(i, j int) bool { return len(values[i]) < len(values[j]) })
	return values
}

// sortKVByLength sorts pairs in place by key length, shortest first (see sortByLength).
func sortKVByLength(values []backends.KVPair) []backends.KVPair {
	sort.SliceStable(values, func(i, j int) bool { return len(values[i].Key) < len(values[j].Key) })
	return values
}

// errDivZero makes div and mod by zero a template error; in confd they panic.
var errDivZero = errors.New("division by zero")

func div(a, b int) (int, error) {
	if b == 0 {
		return 0, fmt.Errorf("div %d 0: %w", a, errDivZero)
	}
	return a / b, nil
}

func mod(a, b int) (int, error) {
	if b == 0 {
		return 0, fmt.Errorf("mod %d 0: %w", a, errDivZero)
	}
	return a % b, nil
}

// seq is GNU seq: first..last inclusive, nil when first > last.
func seq(first, last int) ([]int, error) {
	if first > last {
		return nil, nil
	}
	n := uint64(last) - uint64(first) // exact even when last-first overflows int
	if n >= maxSeq {
		return nil, fmt.Errorf("seq %d %d: more than %d numbers", first, last, maxSeq)
	}
	out := make([]int, n+1)
	for i := range out {
		out[i] = first + i
	}
	return out, nil
}

// resolver is the part of *net.Resolver the lookup functions use.
type resolver interface {
	LookupIP(ctx context.Context, network, host string) ([]net.IP, error)
	LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
}

// lookupIP returns the addresses of host as strings, sorted so that DNS round-robin does
// not cause reloads; nil when the lookup fails, as in confd.
func (t *Template) lookupIP(host string) []string {
	ips, err := t.resolver.LookupIP(context.Background(), "ip", host)
	if err != nil {
		return nil
	}
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	sort.Strings(out)
	return out
}

// lookupIPV4 and lookupIPV6 tell the families apart by the address text, as confd does.
func (t *Template) lookupIPV4(host string) []string { return t.lookupFamily(host, ".") }
func (t *Template) lookupIPV6(host string) []string { return t.lookupFamily(host, ":") }

func (t *Template) lookupFamily(host, sep string) []string {
	var out []string
	for _, ip := range t.lookupIP(host) {
		if strings.Contains(ip, sep) {
			out = append(out, ip)
		}
	}
	return out
}

// lookupSRV returns the records of _service._proto.name sorted by confd's key (target,
// port, priority and weight run together as text); empty when the lookup fails.
func (t *Template) lookupSRV(service, proto, name string) []*net.SRV {
	_, addrs, err := t.resolver.LookupSRV(context.Background(), service, proto, name)
	if err != nil {
		return []*net.SRV{}
	}
	key := func(s *net.SRV) string { return fmt.Sprintf("%s%d%d%d", s.Target, s.Port, s.Priority, s.Weight) }
	sort.SliceStable(addrs, func(i, j int) bool { return key(addrs[i]) < key(addrs[j]) })
	return addrs
}
