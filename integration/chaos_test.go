package integration

// Chaos runs (issue 11): `herald watch` renders three files from a registry that loses
// members while a writer changes keys and a service list at random pace, and a reader
// polls the files every millisecond. One test per registry: a 3-member etcd cluster, a
// 3-member ZooKeeper ensemble, a Consul agent (-dev) that is restarted, killed and paused.
//
// What is checked, each a test failure when broken:
//
//   - every version the reader sees, and every version herald installed (the check_cmd
//     archives each one it accepts), is complete and parseable, and each of its sections
//     equals a state that section's target really had, never going back to an older one;
//   - the check_cmd never rejects a staged file (a rejection would mean herald staged a
//     partial render);
//   - no version stays on disk more than chaosStaleBound after the registry moved on,
//     and once the writer is done and the registry healthy, the files equal the final
//     state within chaosConvergeBound (nothing is stale forever);
//   - herald's goroutines and RSS at the end are within a bound of the start;
//   - no reload storm: the shared reload command runs at most once per burst, i.e. no
//     more often than mix.conf (which every change touches) changed or failed to render.
//
// How a version is matched: the writer keeps every state it produced (each change is
// exactly one key or one instance, written as a compare-and-set on a guard key outside
// what herald reads, so an ambiguous write retried through a fault lands exactly once).
// kv.conf renders the keys, svc.conf the service list, mix.conf both. Each section is
// matched against the history of its own target. herald keeps one watch per target and
// renders from a cache fed by both, so mix.conf's two sections may come from slightly
// different moments; how many mix versions combined sections that never coexisted is
// reported as a figure, not a failure.
//
// Consul -dev keeps its data in memory: a restarted agent comes back empty. The writer
// then writes its whole current state again in one transaction, and the history records
// the empty registry followed by that state, so "a state the registry really had" stays
// exact: every version must equal a state the writer produced or the (never rendered,
// since the templates refuse it) empty one. Consul faults are injected between two
// changes of the writer (a single agent accepts no writes while down or paused anyway).
//
// Each test logs its figures (changes, faults by kind, violations, convergence, lag,
// goroutines and RSS before and after, renders, reloads) in one "figures" line.
// HERALD_CHAOS_CHANGES sets the number of changes per registry (default
// chaosDefaultChanges, about 50-70 s per registry on two cores); HERALD_CHAOS_SEED
// makes the writer's and the fault injector's choices repeatable (not their timing).

import (
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/hashicorp/consul/api"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/heraldhq/herald/integration/harness"
)

const (
	chaosDefaultChanges = 5000
	// chaosWriterLimit bounds the writing phase; a registry that cannot take the changes
	// in this time fails the test rather than stall CI.
	chaosWriterLimit = 150 * time.Second
	// chaosConvergeBound: after the writer stops and the registry is healthy, the files
	// must hold the final state within this long.
	chaosConvergeBound = 30 * time.Second
	// chaosStaleBound: while the run goes on, no version may stay on disk longer than this
	// after the registry moved on (a member that herald uses may be paused for up to
	// 2.5 s; a session or keepalive timeout may add up to 10 s).
	chaosStaleBound = 15 * time.Second
	// chaosGoroutineSlack and chaosRSSSlack bound herald's growth over the run: a leak per
	// fault, reconnect or render would show as dozens of goroutines or tens of MB.
	chaosGoroutineSlack = 20
	chaosRSSSlack       = 32 << 20
	// chaosGuard is a key outside what herald reads. Every change is a transaction that
	// also moves it from n-1 to n, so a write retried after an ambiguous failure applies
	// at most once and never lands late over a newer change.
	chaosGuard = "/chaos-guard"
)

func chaosChanges(t *testing.T) int {
	t.Helper()
	v := os.Getenv("HERALD_CHAOS_CHANGES")
	if v == "" {
		return chaosDefaultChanges
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("HERALD_CHAOS_CHANGES=%q: want a positive number", v)
	}
	return n
}

func chaosSeed(t *testing.T) uint64 {
	t.Helper()
	if v := os.Getenv("HERALD_CHAOS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("HERALD_CHAOS_SEED=%q: %v", v, err)
		}
		return n
	}
	return uint64(time.Now().UnixNano())
}

// ---------------------------------------------------------------------------
// the writer's model

type chaosInst struct {
	ID, Addr string
	Port     int
}

func (i chaosInst) line() string {
	return "server " + i.ID + " " + net.JoinHostPort(i.Addr, strconv.Itoa(i.Port))
}

// json is the instance as herald's JSON value (etcd and ZooKeeper).
func (i chaosInst) json() string {
	return fmt.Sprintf(`{"address":%q,"port":%d}`, i.Addr, i.Port)
}

type chaosModel struct {
	seq   string
	keys  map[string]string // name below /chaos/k -> value
	insts map[string]chaosInst
}

func newChaosModel() *chaosModel {
	m := &chaosModel{seq: "0", keys: map[string]string{}, insts: map[string]chaosInst{}}
	for i := range 3 {
		m.keys[fmt.Sprintf("init%d", i)] = "v0"
		id := fmt.Sprintf("init-%d", i)
		m.insts[id] = chaosInst{ID: id, Addr: fmt.Sprintf("10.255.0.%d", i+1), Port: 9000 + i}
	}
	return m
}

// kvCanon and svcCanon spell a state as the sorted entry lines a rendered file holds.
func (m *chaosModel) kvCanon() string {
	lines := []string{"seq " + m.seq}
	for k, v := range m.keys {
		lines = append(lines, "key "+k+" "+v)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func (m *chaosModel) svcCanon() string {
	var lines []string
	for _, i := range m.insts {
		lines = append(lines, i.line())
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

type chaosOp struct {
	kind  string // seq, kset, kadd, kdel, sset, sadd, sdel
	name  string // key name below /chaos/k, or instance ID
	value string // key value
	inst  chaosInst
}

func (o chaosOp) String() string {
	switch o.kind {
	case "seq", "kset", "kadd":
		return o.kind + " " + o.name + "=" + o.value
	case "sset", "sadd":
		return o.kind + " " + o.inst.line()
	}
	return o.kind + " " + o.name
}

func chaosAddr(n int) string { return fmt.Sprintf("10.%d.%d.%d", (n>>16)&255, (n>>8)&255, n&255) }

// next picks change number n: half the changes touch keys, half the service list, which
// keeps 2 to 8 keys and 2 to 8 instances. Values carry n, so no two states look alike
// unless a change is undone.
func (m *chaosModel) next(n int, rng *rand.Rand) chaosOp {
	v := "v" + strconv.Itoa(n)
	port := 10000 + n%50000
	if rng.IntN(2) == 0 {
		keys := sortedKeys(m.keys)
		switch r := rng.IntN(10); {
		case r < 3:
			return chaosOp{kind: "seq", name: "seq", value: strconv.Itoa(n)}
		case r < 7 || (r < 9 && len(keys) >= 8) || (r == 9 && len(keys) <= 2):
			return chaosOp{kind: "kset", name: keys[rng.IntN(len(keys))], value: v}
		case r < 9:
			return chaosOp{kind: "kadd", name: "k" + strconv.Itoa(n), value: v}
		default:
			return chaosOp{kind: "kdel", name: keys[rng.IntN(len(keys))]}
		}
	}
	ids := sortedKeys(m.insts)
	switch r := rng.IntN(10); {
	case r < 5 || (r < 8 && len(ids) >= 8) || (r >= 8 && len(ids) <= 2):
		in := m.insts[ids[rng.IntN(len(ids))]]
		in.Port = port
		if r == 4 {
			in.Addr = chaosAddr(n)
		}
		return chaosOp{kind: "sset", name: in.ID, inst: in}
	case r < 8:
		id := "chaos-" + strconv.Itoa(n)
		return chaosOp{kind: "sadd", name: id, inst: chaosInst{ID: id, Addr: chaosAddr(n), Port: port}}
	default:
		return chaosOp{kind: "sdel", name: ids[rng.IntN(len(ids))]}
	}
}

func (m *chaosModel) apply(o chaosOp) {
	switch o.kind {
	case "seq":
		m.seq = o.value
	case "kset", "kadd":
		m.keys[o.name] = o.value
	case "kdel":
		delete(m.keys, o.name)
	case "sset", "sadd":
		m.insts[o.name] = o.inst
	case "sdel":
		delete(m.insts, o.name)
	}
}

// chaosHistory is the timeline of registry states: entry 0 is the initial state, entry
// n the state after change n, plus the empty state after each Consul restart.
type chaosHistory struct {
	mu       sync.Mutex
	kv, svc  []string
	at       []time.Time      // when the writer knew the state was in place
	kvAt     map[string][]int // canon -> indexes, ascending
	svcAt    map[string][]int
	restarts int
}

func newChaosHistory() *chaosHistory {
	return &chaosHistory{kvAt: map[string][]int{}, svcAt: map[string][]int{}}
}

func (h *chaosHistory) record(kv, svc string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	i := len(h.kv)
	h.kv, h.svc, h.at = append(h.kv, kv), append(h.svc, svc), append(h.at, time.Now())
	h.kvAt[kv] = append(h.kvAt[kv], i)
	h.svcAt[svc] = append(h.svcAt[svc], i)
}

// match returns the first index >= from whose state is canon; -1 with older >= 0 when
// canon only occurred before from (the file went back in time); -1, -1 when never.
func chaosMatch(at map[string][]int, canon string, from int) (idx, older int) {
	list := at[canon]
	i := sort.SearchInts(list, from)
	if i < len(list) {
		return list[i], -1
	}
	if len(list) > 0 {
		return -1, list[len(list)-1]
	}
	return -1, -1
}

// closest names the state of one section that shares the most lines with canon, and
// how they differ, for failure messages.
func (h *chaosHistory) closest(what, canon string) string {
	states := h.kv
	if what == "service" {
		states = h.svc
	}
	lines := strings.Split(canon, "\n")
	best, bestN := -1, -1
	for i, st := range states {
		n := 0
		for _, l := range lines {
			if strings.Contains("\n"+st+"\n", "\n"+l+"\n") {
				n++
			}
		}
		if n > bestN || (n == bestN && len(st) < len(states[best])) {
			best, bestN = i, n
		}
	}
	if best < 0 {
		return "no states"
	}
	var extra, missing []string
	have := strings.Split(states[best], "\n")
	for _, l := range lines {
		if !slices.Contains(have, l) {
			extra = append(extra, l)
		}
	}
	for _, l := range have {
		if !slices.Contains(lines, l) {
			missing = append(missing, l)
		}
	}
	return fmt.Sprintf("closest is state %d of %d (written %s), which differs: the file has %q, lacks %q",
		best, len(states), h.at[best].Format("15:04:05.000"), extra, missing)
}

// staleness is how long, at time until, the registry had already left canon (0 when
// canon was still its state then).
func (h *chaosHistory) staleness(at map[string][]int, canon string, until time.Time) time.Duration {
	list := at[canon]
	i := sort.Search(len(list), func(i int) bool { return h.at[list[i]].After(until) }) - 1
	if i < 0 {
		return 0
	}
	// list[i] is the last time canon was the state before until; the next entry, if any
	// by then, is where the registry left it.
	if j := list[i] + 1; j < len(h.at) && !h.at[j].After(until) {
		return until.Sub(h.at[j])
	}
	return 0
}

// ---------------------------------------------------------------------------
// rendered files

// chaosParse checks that content is a complete file of kind and returns its key and
// service sections as sorted entry lines.
func chaosParse(kind, content string) (kv, svc string, err error) {
	if content == "" {
		return "", "", errors.New("empty file")
	}
	if !strings.HasSuffix(content, "\n") {
		return "", "", errors.New("no final newline (partial file)")
	}
	lines := strings.Split(strings.TrimSuffix(content, "\n"), "\n")
	if lines[0] != "# herald chaos "+kind {
		return "", "", fmt.Errorf("header %q", lines[0])
	}
	last := lines[len(lines)-1]
	rest, ok := strings.CutPrefix(last, "# end ")
	want, aerr := strconv.Atoi(rest)
	if len(lines) < 2 || !ok || aerr != nil {
		return "", "", fmt.Errorf("no trailer (partial file): last line %q", last)
	}
	var kvl, svcl []string
	seqs, entries := 0, 0
	for _, l := range lines[1 : len(lines)-1] {
		switch {
		case strings.HasPrefix(l, "seq "):
			seqs++
			kvl = append(kvl, l)
		case strings.HasPrefix(l, "key "):
			entries++
			kvl = append(kvl, l)
		case strings.HasPrefix(l, "server "):
			entries++
			svcl = append(svcl, l)
		default:
			return "", "", fmt.Errorf("unexpected line %q", l)
		}
	}
	if entries != want {
		return "", "", fmt.Errorf("trailer says %d entries, file has %d", want, entries)
	}
	if wantKV := kind != "svc"; wantKV != (seqs == 1) || (!wantKV && len(kvl) > 0) {
		return "", "", fmt.Errorf("%d seq lines and %d key lines in a %s file", seqs, len(kvl)-seqs, kind)
	}
	if wantSvc := kind != "kv"; wantSvc != (len(svcl) > 0) {
		return "", "", fmt.Errorf("%d server lines in a %s file", len(svcl), kind)
	}
	sort.Strings(kvl)
	sort.Strings(svcl)
	return strings.Join(kvl, "\n"), strings.Join(svcl, "\n"), nil
}

// chaosChecker follows the versions of one file in order.
type chaosChecker struct {
	kind            string
	prevKV, prevSvc int
	versions        int
	skewed          int // mix versions whose sections never coexisted
	maxStale        time.Duration
	maxStaleUntil   time.Time // when the file finally moved on from its stalest version
	violations      []string
}

// check takes the next version of the file; until is when the file moved on from it
// (zero when unknown: no staleness is measured then).
func (c *chaosChecker) check(h *chaosHistory, content string, until time.Time) {
	c.versions++
	kv, svc, err := chaosParse(c.kind, content)
	if err != nil {
		c.violations = append(c.violations, fmt.Sprintf("%s version %d unparseable: %v:\n%s", c.kind, c.versions, err, content))
		return
	}
	step := func(what string, at map[string][]int, canon string, prev *int) bool {
		idx, older := chaosMatch(at, canon, *prev)
		switch {
		case idx >= 0:
			*prev = idx
			if !until.IsZero() {
				if d := h.staleness(at, canon, until); d > c.maxStale {
					c.maxStale, c.maxStaleUntil = d, until
				}
			}
			return true
		case older >= 0:
			c.violations = append(c.violations, fmt.Sprintf("%s version %d: %s section went back in time (state %d, after state %d):\n%s",
				c.kind, c.versions, what, older, *prev, content))
		default:
			msg := fmt.Sprintf("%s version %d: %s section is no state the registry had:\n%s\n(the last match was state %d; %s)",
				c.kind, c.versions, what, content, *prev, h.closest(what, canon))
			c.violations = append(c.violations, msg)
		}
		return false
	}
	okKV, okSvc := true, true
	if c.kind != "svc" {
		okKV = step("key", h.kvAt, kv, &c.prevKV)
	}
	if c.kind != "kv" {
		okSvc = step("service", h.svcAt, svc, &c.prevSvc)
	}
	if c.kind == "mix" && okKV && okSvc {
		coexisted := false
		for _, i := range h.kvAt[kv] {
			if h.svc[i] == svc {
				coexisted = true
				break
			}
		}
		if !coexisted {
			c.skewed++
		}
	}
}

const chaosCheckAwk = `# Accepts only a complete chaos file: the header, entries, and "# end N" as its last
# line with N the number of entries. Appends every version it accepts to arch.
NR == 1 { if ($0 !~ /^# herald chaos (kv|svc|mix)$/) bad = "bad header: " $0; buf = $0 "\n"; next }
{ buf = buf $0 "\n" }
/^(key|server) / { n++; next }
/^seq [0-9]+$/ { next }
/^# end [0-9]+$/ { end = $3 + 0; endline = NR; next }
{ if (bad == "") bad = "bad line " NR ": " $0 }
END {
	if (NR == 0) bad = "empty file"
	else if (bad == "" && endline != NR) bad = "no trailer: partial file"
	else if (bad == "" && end != n) bad = "trailer says " end " entries, found " n
	if (bad != "") { print FILENAME ": " bad > "/dev/stderr"; exit 1 }
	printf "%s# ----\n", buf >> arch
}
`

const (
	chaosKVTmpl = `# herald chaos kv
seq {{getv "/chaos/seq"}}
{{range gets "/chaos/k/*"}}key {{base .Key}} {{.Value}}
{{end}}# end {{len (gets "/chaos/k/*")}}
`
	// An empty list would take every backend out of a load balancer: refuse it, so the
	// last good file stays (Consul comes back empty from a restart).
	chaosSvcTmpl = `# herald chaos svc
{{$s := service "chaos"}}{{if not $s}}{{fail "no instance of chaos"}}{{end}}{{range $s}}server {{.ID}} {{.HostPort}}
{{end}}# end {{len $s}}
`
	chaosMixTmpl = `# herald chaos mix
seq {{getv "/chaos/seq"}}
{{range gets "/chaos/k/*"}}key {{base .Key}} {{.Value}}
{{end}}{{$s := service "chaos"}}{{if not $s}}{{fail "no instance of chaos"}}{{end}}{{range $s}}server {{.ID}} {{.HostPort}}
{{end}}# end {{add (len (gets "/chaos/k/*")) (len $s)}}
`
)

var chaosKinds = []string{"kv", "svc", "mix"}

// chaosTree writes the confdir: three resources sharing one reload command, each
// checked (and archived) by check.awk. The reload command logs one line per run: the
// MD5 of mix.conf as it found it.
func chaosTree(t *testing.T) (dir, out, arch string) {
	dir = t.TempDir()
	out, arch = filepath.Join(dir, "out"), filepath.Join(dir, "archive")
	for _, d := range []string{out, arch} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"check.awk":     chaosCheckAwk,
		"templates/kv":  chaosKVTmpl,
		"templates/svc": chaosSvcTmpl,
		"templates/mix": chaosMixTmpl,
		"reloads.log":   "",
	}
	for _, k := range chaosKinds {
		keys := ""
		if k == "kv" {
			keys = "keys = [\"/chaos\"]\n" // declared; svc and mix infer theirs
		}
		files["conf.d/"+k+".toml"] = fmt.Sprintf(`[template]
src = %q
dest = %q
%smode = "0644"
check_cmd = "awk -v arch=%s -f %s {{.src}}"
reload_cmd = "md5sum < %s >> %s"
check_timeout = "20s"
reload_timeout = "20s"
`, k, filepath.Join(out, k+".conf"), keys, filepath.Join(arch, k), filepath.Join(dir, "check.awk"), filepath.Join(out, "mix.conf"), filepath.Join(dir, "reloads.log"))
	}
	writeTree(t, dir, files)
	return dir, out, arch
}

// chaosReader polls the files every millisecond and keeps each distinct content in
// the order seen.
type chaosVersion struct {
	content string
	at      time.Time // first seen
}

type chaosReader struct {
	files    []string
	versions [][]chaosVersion
	polls    int
	errs     []string
	stop     chan struct{}
	done     chan struct{}
}

func startChaosReader(files []string) *chaosReader {
	r := &chaosReader{files: files, versions: make([][]chaosVersion, len(files)), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		last := make([]string, len(files))
		seen := make([]bool, len(files))
		for {
			for i, f := range r.files {
				b, err := os.ReadFile(f)
				if err != nil {
					if len(r.errs) < 20 {
						r.errs = append(r.errs, err.Error())
					}
					continue
				}
				if !seen[i] || string(b) != last[i] {
					seen[i], last[i] = true, string(b)
					r.versions[i] = append(r.versions[i], chaosVersion{last[i], time.Now()})
				}
			}
			r.polls++
			select {
			case <-r.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return r
}

func (r *chaosReader) halt() {
	close(r.stop)
	<-r.done
}

// chaosScrape reads every sample of herald's /metrics.
func chaosScrape(addr string) (map[string]float64, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err == nil {
			out[l[:i]] = v
		}
	}
	return out, nil
}

func chaosSum(m map[string]float64, prefix, contains string) float64 {
	var s float64
	for k, v := range m {
		if strings.HasPrefix(k, prefix) && strings.Contains(k, contains) {
			s += v
		}
	}
	return s
}

// ---------------------------------------------------------------------------
// registries

type chaosRegistry interface {
	name() string
	url() string
	// init makes the registry hold m's state (before herald starts).
	init(ctx context.Context, m *chaosModel) error
	// apply makes op the registry's change number n, exactly once, riding out faults
	// until ctx ends.
	apply(ctx context.Context, n int, op chaosOp) error
	// fault injects one fault, waits, heals it, and says what it did.
	fault(t *testing.T, run *chaosRun) string
	// heal makes every member run again and waits until the registry takes writes.
	heal(t *testing.T)
}

// chaosRun is the shared state of one run; mu is held by the writer for each change
// (apply + record), and by faults that must fall between two changes.
type chaosRun struct {
	mu    sync.Mutex
	model *chaosModel
	hist  *chaosHistory
	rng   *rand.Rand // the fault injector's; the writer has its own
}

func chaosSleep(rng *rand.Rand, lo, hi time.Duration) {
	time.Sleep(lo + time.Duration(rng.Int64N(int64(hi-lo)+1)))
}

// etcd: a 3-member cluster.
type chaosEtcd struct {
	e   *harness.Etcd
	cli *clientv3.Client
}

func (r *chaosEtcd) name() string { return "etcd" }
func (r *chaosEtcd) url() string  { return "etcd://" + strings.Join(etcdHosts(r.e.Endpoints), ",") }

func (r *chaosEtcd) init(ctx context.Context, m *chaosModel) error {
	ops := []clientv3.Op{clientv3.OpPut(chaosGuard, "0"), clientv3.OpPut("/chaos/seq", m.seq)}
	for k, v := range m.keys {
		ops = append(ops, clientv3.OpPut("/chaos/k/"+k, v))
	}
	for _, in := range m.insts {
		ops = append(ops, clientv3.OpPut("/services/chaos/"+in.ID, in.json()))
	}
	_, err := r.cli.Txn(ctx).Then(ops...).Commit()
	return err
}

func (r *chaosEtcd) op(o chaosOp) clientv3.Op {
	switch o.kind {
	case "seq":
		return clientv3.OpPut("/chaos/seq", o.value)
	case "kset", "kadd":
		return clientv3.OpPut("/chaos/k/"+o.name, o.value)
	case "kdel":
		return clientv3.OpDelete("/chaos/k/" + o.name)
	case "sset", "sadd":
		return clientv3.OpPut("/services/chaos/"+o.name, o.inst.json())
	default:
		return clientv3.OpDelete("/services/chaos/" + o.name)
	}
}

func (r *chaosEtcd) apply(ctx context.Context, n int, o chaosOp) error {
	prev, next := strconv.Itoa(n-1), strconv.Itoa(n)
	var last error
	for attempt := 0; ; attempt++ {
		// A member that is paused holds a request until this runs out; another one
		// answers the retry.
		actx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		resp, err := r.cli.Txn(actx).If(clientv3.Compare(clientv3.Value(chaosGuard), "=", prev)).
			Then(r.op(o), clientv3.OpPut(chaosGuard, next)).Commit()
		cancel()
		if err == nil && resp.Succeeded {
			return nil
		}
		if err != nil {
			last = err
		}
		// Failed, or unknown whether it went through: the guard says.
		actx, cancel = context.WithTimeout(ctx, 500*time.Millisecond)
		g, gerr := r.cli.Get(actx, chaosGuard)
		cancel()
		if gerr == nil && len(g.Kvs) == 1 {
			switch v := string(g.Kvs[0].Value); v {
			case next:
				return nil
			case prev:
			default:
				return fmt.Errorf("guard is %s, want %s or %s", v, prev, next)
			}
		} else if gerr != nil {
			last = gerr
		}
		if ctx.Err() != nil {
			return fmt.Errorf("not applied before the deadline: %v", last)
		}
		time.Sleep(min(time.Duration(attempt+1)*50*time.Millisecond, 500*time.Millisecond))
	}
}

func (r *chaosEtcd) fault(t *testing.T, run *chaosRun) string {
	rng, ms := run.rng, r.e.Members
	switch k := rng.IntN(10); {
	case k < 3:
		m := ms[rng.IntN(len(ms))]
		m.Kill(t)
		chaosSleep(rng, 200*time.Millisecond, 1500*time.Millisecond)
		m.Restart(t)
		return "kill+restart member"
	case k < 5:
		m := ms[r.e.Leader(t)]
		m.Kill(t)
		chaosSleep(rng, 200*time.Millisecond, 1500*time.Millisecond)
		m.Restart(t)
		return "kill+restart leader"
	case k < 8:
		m := ms[rng.IntN(len(ms))]
		m.Pause(t)
		chaosSleep(rng, 300*time.Millisecond, 2500*time.Millisecond)
		m.Resume(t)
		return "pause+resume member"
	default:
		i := rng.IntN(len(ms))
		a, b := ms[i], ms[(i+1)%len(ms)]
		a.Pause(t)
		b.Pause(t)
		chaosSleep(rng, 500*time.Millisecond, 2000*time.Millisecond)
		a.Resume(t)
		b.Resume(t)
		return "quorum loss (2 paused)"
	}
}

func (r *chaosEtcd) heal(t *testing.T) {
	for _, m := range r.e.Members {
		if !m.Running() {
			m.Restart(t)
		}
	}
	r.e.Leader(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		actx, c := context.WithTimeout(ctx, 2*time.Second)
		_, err := r.cli.Put(actx, "/chaos-healthy", "1")
		c()
		if err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("etcd takes no writes 30s after healing")
}

// ZooKeeper: a 3-member ensemble.
type chaosZK struct {
	z *harness.ZooKeeper
	c *zk.Conn
}

func (r *chaosZK) name() string { return "zookeeper" }
func (r *chaosZK) url() string  { return "zookeeper://" + strings.Join(r.z.Servers, ",") }

var errChaosTimeout = errors.New("no answer within 3s")

// zkBounded runs a ZooKeeper call with a deadline (the client's calls take none). A
// call left behind completes on its own, in session order, before any later call.
func zkBounded[T any](fn func() (T, error)) (T, error) {
	type res struct {
		v   T
		err error
	}
	ch := make(chan res, 1)
	go func() { v, err := fn(); ch <- res{v, err} }()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-time.After(3 * time.Second):
		var zero T
		return zero, errChaosTimeout
	}
}

func (r *chaosZK) init(ctx context.Context, m *chaosModel) error {
	puts := [][2]string{{chaosGuard, "0"}, {"/chaos/seq", m.seq}}
	for k, v := range m.keys {
		puts = append(puts, [2]string{"/chaos/k/" + k, v})
	}
	for _, in := range m.insts {
		puts = append(puts, [2]string{"/services/chaos/" + in.ID, in.json()})
	}
	for _, p := range puts {
		if err := zkPutErr(r.c, p[0], []byte(p[1]), 0, zk.WorldACL(zk.PermAll)); err != nil {
			return fmt.Errorf("%s: %w", p[0], err)
		}
	}
	return nil
}

func (r *chaosZK) op(o chaosOp) any {
	acl := zk.WorldACL(zk.PermAll)
	switch o.kind {
	case "seq":
		return &zk.SetDataRequest{Path: "/chaos/seq", Data: []byte(o.value), Version: -1}
	case "kset":
		return &zk.SetDataRequest{Path: "/chaos/k/" + o.name, Data: []byte(o.value), Version: -1}
	case "kadd":
		return &zk.CreateRequest{Path: "/chaos/k/" + o.name, Data: []byte(o.value), Acl: acl}
	case "kdel":
		return &zk.DeleteRequest{Path: "/chaos/k/" + o.name, Version: -1}
	case "sset":
		return &zk.SetDataRequest{Path: "/services/chaos/" + o.name, Data: []byte(o.inst.json()), Version: -1}
	case "sadd":
		return &zk.CreateRequest{Path: "/services/chaos/" + o.name, Data: []byte(o.inst.json()), Acl: acl}
	default:
		return &zk.DeleteRequest{Path: "/services/chaos/" + o.name, Version: -1}
	}
}

func (r *chaosZK) apply(ctx context.Context, n int, o chaosOp) error {
	guard := &zk.SetDataRequest{Path: chaosGuard, Data: []byte(strconv.Itoa(n)), Version: int32(n - 1)}
	var last error
	for attempt := 0; ; attempt++ {
		_, err := zkBounded(func() ([]zk.MultiResponse, error) { return r.c.Multi(guard, r.op(o)) })
		if err == nil {
			return nil
		}
		last = err
		st, gerr := zkBounded(func() (*zk.Stat, error) { _, st, err := r.c.Get(chaosGuard); return st, err })
		if gerr == nil {
			switch st.Version {
			case int32(n):
				return nil
			case int32(n - 1):
			default:
				return fmt.Errorf("guard at version %d, want %d or %d (last error %v)", st.Version, n-1, n, last)
			}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("not applied before the deadline: %v", last)
		}
		time.Sleep(min(time.Duration(attempt+1)*50*time.Millisecond, 500*time.Millisecond))
	}
}

func (r *chaosZK) fault(t *testing.T, run *chaosRun) string {
	rng, ms := run.rng, r.z.Members
	switch k := rng.IntN(10); {
	case k < 3:
		m := ms[rng.IntN(len(ms))]
		m.Kill(t)
		chaosSleep(rng, 200*time.Millisecond, 1500*time.Millisecond)
		m.Restart(t)
		return "kill+restart member"
	case k < 5:
		m := ms[r.z.Leader(t)]
		m.Kill(t)
		chaosSleep(rng, 200*time.Millisecond, 1500*time.Millisecond)
		m.Restart(t)
		return "kill+restart leader"
	case k < 8:
		m := ms[rng.IntN(len(ms))]
		m.Pause(t)
		chaosSleep(rng, 300*time.Millisecond, 2500*time.Millisecond)
		m.Resume(t)
		return "pause+resume member"
	default:
		i := rng.IntN(len(ms))
		a, b := ms[i], ms[(i+1)%len(ms)]
		a.Pause(t)
		b.Pause(t)
		chaosSleep(rng, 500*time.Millisecond, 2000*time.Millisecond)
		a.Resume(t)
		b.Resume(t)
		return "quorum loss (2 paused)"
	}
}

func (r *chaosZK) heal(t *testing.T) {
	for _, m := range r.z.Members {
		if !m.Running() {
			m.Restart(t)
		}
	}
	r.z.Leader(t)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		_, err := zkBounded(func() (*zk.Stat, error) { return r.c.Set(chaosGuard+"-healthy", nil, -1) })
		if errors.Is(err, zk.ErrNoNode) {
			_, err = zkBounded(func() (string, error) { return r.c.Create(chaosGuard+"-healthy", nil, 0, zk.WorldACL(zk.PermAll)) })
		}
		if err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("zookeeper takes no writes 30s after healing")
}

// Consul: one -dev agent. Instances are catalog registrations of an external node, and
// every change is a one-operation transaction, so the catalog and the KV store move in
// exactly the writer's steps.
type chaosConsul struct {
	c   *harness.Consul
	cli *api.Client
}

const chaosConsulNode = "chaos-node"

func (r *chaosConsul) name() string { return "consul" }
func (r *chaosConsul) url() string  { return "consul://" + r.c.Addr }

func (r *chaosConsul) svcOp(verb api.ServiceOp, in chaosInst) *api.TxnOp {
	return &api.TxnOp{Service: &api.ServiceTxnOp{Verb: verb, Node: chaosConsulNode,
		Service: api.AgentService{ID: in.ID, Service: "chaos", Address: in.Addr, Port: in.Port}}}
}

func (r *chaosConsul) kvOp(verb api.KVOp, k, v string) *api.TxnOp {
	return &api.TxnOp{KV: &api.KVTxnOp{Verb: verb, Key: strings.TrimPrefix(k, "/"), Value: []byte(v)}}
}

func (r *chaosConsul) txn(ctx context.Context, ops api.TxnOps) error {
	var last error
	for attempt := 0; ; attempt++ {
		ok, resp, _, err := r.cli.Txn().Txn(ops, (&api.QueryOptions{}).WithContext(ctx))
		switch {
		case err == nil && ok:
			return nil
		case err == nil:
			last = fmt.Errorf("transaction refused: %+v", resp.Errors)
		default:
			last = err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("not applied before the deadline: %v", last)
		}
		time.Sleep(min(time.Duration(attempt+1)*50*time.Millisecond, 500*time.Millisecond))
	}
}

// init writes the whole state in one transaction: at start, and again after a restart.
func (r *chaosConsul) init(ctx context.Context, m *chaosModel) error {
	ops := api.TxnOps{
		{Node: &api.NodeTxnOp{Verb: api.NodeSet, Node: api.Node{Node: chaosConsulNode, Address: "127.0.0.1"}}},
		r.kvOp(api.KVSet, "/chaos/seq", m.seq),
	}
	for k, v := range m.keys {
		ops = append(ops, r.kvOp(api.KVSet, "/chaos/k/"+k, v))
	}
	for _, in := range m.insts {
		ops = append(ops, r.svcOp(api.ServiceSet, in))
	}
	return r.txn(ctx, ops)
}

func (r *chaosConsul) apply(ctx context.Context, _ int, o chaosOp) error {
	var op *api.TxnOp
	switch o.kind {
	case "seq":
		op = r.kvOp(api.KVSet, "/chaos/seq", o.value)
	case "kset", "kadd":
		op = r.kvOp(api.KVSet, "/chaos/k/"+o.name, o.value)
	case "kdel":
		op = r.kvOp(api.KVDelete, "/chaos/k/"+o.name, "")
	case "sset", "sadd":
		op = r.svcOp(api.ServiceSet, o.inst)
	default:
		op = r.svcOp(api.ServiceDelete, chaosInst{ID: o.name})
	}
	return r.txn(ctx, api.TxnOps{op})
}

func (r *chaosConsul) fault(t *testing.T, run *chaosRun) string {
	rng, p := run.rng, r.c.Proc
	run.mu.Lock() // between two changes of the writer
	defer run.mu.Unlock()
	var kind string
	switch k := rng.IntN(10); {
	case k < 4:
		p.Restart(t) // SIGTERM, start again: -dev comes back empty
		kind = "restart agent"
	case k < 7:
		p.Kill(t)
		chaosSleep(rng, 200*time.Millisecond, 1500*time.Millisecond)
		p.Restart(t)
		kind = "kill+restart agent"
	default:
		p.Pause(t)
		chaosSleep(rng, 300*time.Millisecond, 2500*time.Millisecond)
		p.Resume(t)
		return "pause+resume agent"
	}
	// The agent lost everything: the registry is empty, then holds the writer's state
	// again, in one step.
	run.hist.record("", "")
	run.hist.mu.Lock()
	run.hist.restarts++
	run.hist.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.init(ctx, run.model); err != nil {
		t.Fatalf("consul: write the state again after a restart: %v", err)
	}
	run.hist.record(run.model.kvCanon(), run.model.svcCanon())
	return kind
}

func (r *chaosConsul) heal(t *testing.T) {
	if !r.c.Proc.Running() {
		r.c.Proc.Restart(t)
	}
}

// ---------------------------------------------------------------------------
// the run

func TestChaosEtcd(t *testing.T) {
	e := harness.StartEtcdCluster(t, 3)
	chaosRunTest(t, &chaosEtcd{e: e, cli: e.Client(t)})
}

func TestChaosZooKeeper(t *testing.T) {
	z := harness.StartZooKeeperEnsemble(t, 3)
	// A short session makes the writer leave a paused member sooner (the client pings
	// every third of it); quorum losses last at most 2 s.
	chaosRunTest(t, &chaosZK{z: z, c: zkClient(t, z.Servers, 4*time.Second)})
}

func TestChaosConsul(t *testing.T) {
	c := harness.StartConsul(t)
	chaosRunTest(t, &chaosConsul{c: c, cli: c.Client(t)})
}

func chaosRunTest(t *testing.T, reg chaosRegistry) {
	begin := time.Now()
	changes, seed := chaosChanges(t), chaosSeed(t)
	t.Logf("chaos %s: %d changes, HERALD_CHAOS_SEED=%d", reg.name(), changes, seed)
	run := &chaosRun{model: newChaosModel(), hist: newChaosHistory(), rng: rand.New(rand.NewPCG(seed, 1))}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	if err := reg.init(ctx, run.model); err != nil {
		t.Fatalf("initial state: %v", err)
	}
	cancel()
	run.hist.record(run.model.kvCanon(), run.model.svcCanon())

	dir, out, arch := chaosTree(t)
	listen := freeAddr(t)
	// The empty-drop guard stays on, with a short hold: a run whose last service change
	// shrinks the list past max_drop would otherwise keep the final state back for the
	// default 30 s, as long as the convergence bound (seen: 5 → 2 instances, written
	// 30.002 s after the writer stopped). Its hold is tested on its own (registrants).
	p := startHerald(t, nil, "watch", "--confdir", dir, "--backend", reg.url(), "--listen", listen, "--drop-hold", "2s")
	files := make([]string, len(chaosKinds))
	for i, k := range chaosKinds {
		files[i] = filepath.Join(out, k+".conf")
	}
	converged := func() error {
		kv, svc := run.model.kvCanon(), run.model.svcCanon()
		for i, k := range chaosKinds {
			b, err := os.ReadFile(files[i])
			if err != nil {
				return err
			}
			gkv, gsvc, err := chaosParse(k, string(b))
			if err != nil {
				return fmt.Errorf("%s: %v", files[i], err)
			}
			if (k != "svc" && gkv != kv) || (k != "kv" && gsvc != svc) {
				return fmt.Errorf("%s is not the current state yet", files[i])
			}
		}
		return nil
	}
	waitFor := func(d time.Duration) (time.Duration, error) {
		start := time.Now()
		var err error
		for time.Since(start) < d {
			if err = converged(); err == nil {
				return time.Since(start), nil
			}
			time.Sleep(5 * time.Millisecond)
		}
		return time.Since(start), err
	}
	if _, err := waitFor(30 * time.Second); err != nil {
		t.Fatalf("first render: %v", err)
	}
	time.Sleep(time.Second) // let start-up work settle before the baseline
	before, err := chaosScrape(listen)
	if err != nil {
		t.Fatal(err)
	}
	reader := startChaosReader(files)
	defer func() {
		select {
		case <-reader.done:
		default:
			reader.halt()
		}
	}()

	// The writer, in its own goroutine (it never calls t.Fatal); the faults come from
	// this one, which the harness requires.
	var (
		writerErr error
		applied   int
		wrote     time.Duration
		applyTime time.Duration // spent in apply, retries through faults included
	)
	writerDone := make(chan struct{})
	// Ends with the test too, so a writer never outlives a failed one.
	wctx, wcancel := context.WithTimeout(context.Background(), chaosWriterLimit)
	defer wcancel()
	go func() {
		defer close(writerDone)
		start := time.Now()
		defer func() { wrote = time.Since(start) }()
		rng := rand.New(rand.NewPCG(seed, 2))
		for n := 1; n <= changes && wctx.Err() == nil; n++ {
			switch p := rng.IntN(100); {
			case p < 55:
			case p < 85:
				time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
			case p < 99:
				time.Sleep(3*time.Millisecond + time.Duration(rng.IntN(17000))*time.Microsecond)
			default:
				time.Sleep(50*time.Millisecond + time.Duration(rng.IntN(150))*time.Millisecond)
			}
			run.mu.Lock()
			op := run.model.next(n, rng)
			t0 := time.Now()
			err := reg.apply(wctx, n, op)
			applyTime += time.Since(t0)
			if err != nil {
				run.mu.Unlock()
				writerErr = fmt.Errorf("change %d (%s): %w", n, op, err)
				return
			}
			run.model.apply(op)
			run.hist.record(run.model.kvCanon(), run.model.svcCanon())
			applied = n
			run.mu.Unlock()
		}
	}()
	faults := map[string]int{}
	var faultLog []string // for failure messages
	nfaults := 0
	for done := false; !done; {
		select {
		case <-writerDone:
			done = true
			continue
		case <-time.After(time.Duration(300+run.rng.IntN(1200)) * time.Millisecond):
		}
		start := time.Now()
		kind := reg.fault(t, run)
		faults[kind]++
		nfaults++
		faultLog = append(faultLog, fmt.Sprintf("%s-%s %s", start.Format("15:04:05.000"), time.Now().Format("15:04:05.000"), kind))
	}
	if writerErr != nil {
		t.Fatalf("writer: %v (after %d changes in %v)", writerErr, applied, wrote.Round(time.Millisecond))
	}
	reg.heal(t)
	convergence, err := waitFor(chaosConvergeBound)
	var violations []string
	if err != nil {
		violations = append(violations, fmt.Sprintf("files did not hold the final state %v after the writer stopped and the registry was healthy: %v", chaosConvergeBound, err))
	}
	// The reload for the last burst: a run that saw the final mix.conf.
	if final, err := os.ReadFile(files[2]); err == nil && len(violations) == 0 {
		sum := fmt.Sprintf("%x  -\n", md5.Sum(final))
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if b, _ := os.ReadFile(filepath.Join(dir, "reloads.log")); strings.Contains(string(b), sum) {
				break
			}
			if time.Now().After(deadline) {
				violations = append(violations, "no reload_cmd run saw the final files within 20s")
				break
			}
		}
	}
	reader.halt()
	halted := time.Now()

	// Goroutines settle as reconnect timers and finished renders go away.
	var after map[string]float64
	for deadline := time.Now().Add(10 * time.Second); ; {
		if after, err = chaosScrape(listen); err != nil {
			t.Fatal(err)
		}
		if after["go_goroutines"] <= before["go_goroutines"]+chaosGoroutineSlack || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code, body := httpGet(t, "http://"+listen+"/healthz"); code != 200 {
		violations = append(violations, fmt.Sprintf("/healthz %d at the end: %s", code, body))
	}
	stats := readProc(p.cmd.Process.Pid)
	if code := p.stop(t, syscall.SIGTERM, 20*time.Second); code != 0 {
		violations = append(violations, fmt.Sprintf("herald exited %d after SIGTERM", code))
	}

	// Every version the reader saw, and every version herald installed.
	run.hist.mu.Lock()
	defer run.hist.mu.Unlock()
	seen, installed, skewed := 0, 0, 0
	var maxStale time.Duration
	var maxStaleAt string // which file, and when it finally moved on
	for i, k := range chaosKinds {
		c := &chaosChecker{kind: k}
		vs := reader.versions[i]
		for j, v := range vs {
			until := halted
			if j+1 < len(vs) {
				until = vs[j+1].at
			}
			n := len(c.violations)
			c.check(run.hist, v.content, until)
			for k := n; k < len(c.violations); k++ {
				c.violations[k] += " [seen " + v.at.Format("15:04:05.000") + "]"
			}
		}
		seen += c.versions
		if c.maxStale > maxStale {
			maxStale, maxStaleAt = c.maxStale, k+".conf until "+c.maxStaleUntil.Format("15:04:05.000")
		}
		violations = append(violations, c.violations...)
		ac := &chaosChecker{kind: k}
		b, err := os.ReadFile(filepath.Join(arch, k))
		if err != nil {
			t.Fatalf("archive of %s: %v", k, err)
		}
		for _, v := range strings.SplitAfter(string(b), "# ----\n") {
			if v == "" {
				continue
			}
			ac.check(run.hist, strings.TrimSuffix(v, "# ----\n"), time.Time{})
		}
		installed += ac.versions
		skewed += ac.skewed
		for _, v := range ac.violations {
			violations = append(violations, "installed "+v)
		}
	}
	if maxStale > chaosStaleBound {
		violations = append(violations, fmt.Sprintf("a file lagged %v behind the registry (bound %v): %s", maxStale.Round(time.Millisecond), chaosStaleBound, maxStaleAt))
	}
	for _, e := range reader.errs {
		violations = append(violations, "reader: "+e)
	}
	ents, _ := os.ReadDir(out)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{"kv.conf", "mix.conf", "svc.conf"}; !slices.Equal(names, want) {
		violations = append(violations, fmt.Sprintf("files left in the dest dir: %v, want %v (stage files must not outlive a sync)", names, want))
	}
	checkFails := chaosSum(after, "herald_check_failures_total", "")
	if checkFails > 0 {
		violations = append(violations, fmt.Sprintf("check_cmd rejected %v staged files (herald staged a partial or bad render)", checkFails))
	}
	changed := chaosSum(after, "herald_renders_total{", `result="changed"`)
	reloads := chaosSum(after, "herald_reloads_total{", "")
	reloadLog, _ := os.ReadFile(filepath.Join(dir, "reloads.log"))
	reloadRuns := strings.Count(string(reloadLog), "\n")
	// The three resources share one reload command, and mix.conf renders both targets:
	// every burst that changes kv.conf or svc.conf changes mix.conf in the same burst
	// (or fails to render it, or the empty-drop guard holds it). So one run per burst
	// allows at most one per such render of mix.conf; one reload per resource would be
	// about one per changed render.
	mixBursts := chaosSum(after, `herald_renders_total{resource="mix.toml"`, `result="changed"`) +
		chaosSum(after, `herald_renders_total{resource="mix.toml"`, `result="error"`) +
		chaosSum(after, `herald_renders_held_total{resource="mix.toml"`, "")
	if reloads > mixBursts || float64(reloadRuns) > mixBursts {
		violations = append(violations, fmt.Sprintf("reload storm: %v reloads (%d runs of the shared reload_cmd) for %v changed, failed or held renders of mix.conf (%v changed renders in all): more than one per burst",
			reloads, reloadRuns, mixBursts, changed))
	}
	g0, g1 := before["go_goroutines"], after["go_goroutines"]
	if g1 > g0+chaosGoroutineSlack {
		violations = append(violations, fmt.Sprintf("goroutines grew from %v to %v (bound +%d)", g0, g1, chaosGoroutineSlack))
	}
	r0, r1 := before["process_resident_memory_bytes"], after["process_resident_memory_bytes"]
	rssSlack := chaosRSSSlack
	if raceBinaries {
		// The race detector's shadow memory grows with everything the process touched
		// (5-10x); a leak still shows, far past this.
		rssSlack *= 8
	}
	if r1 > r0+float64(rssSlack) {
		violations = append(violations, fmt.Sprintf("RSS grew from %.1f MB to %.1f MB (bound +%d MB)", r0/1e6, r1/1e6, rssSlack>>20))
	}

	var fl []string
	for _, k := range sortedKeys(faults) {
		fl = append(fl, fmt.Sprintf("%s %d", k, faults[k]))
	}
	t.Logf("chaos %s figures: changes applied %d in %v (mean write %v); faults injected %d (%s); Consul restarts re-written %d; "+
		"invariant violations %d; final convergence %v; max lag behind the registry %v (%s); goroutines %v -> %v; RSS %.1f -> %.1f MB (peak %.1f MB); "+
		"renders changed %v, errors %v; reloads %v (reload_cmd runs %d, mix.conf changed, failed or held %v); check failures %v; versions seen by the reader %d in %d polls, installed %d, mix versions with skewed sections %d; total %v",
		reg.name(), applied, wrote.Round(time.Millisecond), (applyTime / time.Duration(max(applied, 1))).Round(10*time.Microsecond), nfaults, strings.Join(fl, ", "), run.hist.restarts,
		len(violations), convergence.Round(time.Millisecond), maxStale.Round(time.Millisecond), maxStaleAt, g0, g1, r0/1e6, r1/1e6, float64(stats.hwmKB)/1024,
		changed, chaosSum(after, "herald_renders_total{", `result="error"`), reloads, reloadRuns, mixBursts, checkFails,
		seen, reader.polls, installed, skewed, time.Since(begin).Round(time.Second))
	if applied != changes {
		t.Errorf("the writer applied %d of %d changes", applied, changes)
	}
	for i, v := range violations {
		if i == 10 {
			t.Errorf("... and %d more violations", len(violations)-10)
			break
		}
		t.Errorf("violation: %s", v)
	}
	if len(violations) > 0 {
		var warn []string
		for _, l := range strings.Split(p.Output(), "\n") {
			if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
				warn = append(warn, l)
			}
		}
		if len(warn) > 100 {
			warn = append(warn[:50], append([]string{"..."}, warn[len(warn)-50:]...)...)
		}
		t.Logf("faults:\n  %s\nherald's warnings and errors:\n  %s", strings.Join(faultLog, "\n  "), strings.Join(warn, "\n  "))
	}
}
