package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/integration/harness"
)

// A fleet of sidecars: HERALD_FLEET_N (default 50) `herald watch` processes, one small
// resource each, on one etcd, as one herald per host or per pod would be. Measures a
// put -> all N files replaced (p50/p99), each process's RSS and PSS (PSS shares the
// executable's pages among the processes mapping them), and CPU per change summed
// over the fleet; then the same with confd when a confd binary is found (CONFD_BIN or
// `confd` on PATH; integration/scripts/build-confd.sh builds v0.16.0, and `make bench`
// does), with HERALD_FLEET_BASELINE's herald when set, and with the floor (the bare
// etcd client, integration/floor). Then the fleet is left quiet for 40 s: RSS and PSS
// once quiet, and the latency of the change after the quiet spell:
//
//	go test ./integration -run XXX -bench BenchmarkFleetEtcd -benchtime 50x
func BenchmarkFleetEtcd(b *testing.B) {
	n := 50
	if s := os.Getenv("HERALD_FLEET_N"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			b.Fatalf("HERALD_FLEET_N=%q: want a positive count", s)
		}
	}
	e := harness.StartEtcd(b)
	if _, err := e.Client(b).Put(context.Background(), "/bench/value", "start"); err != nil {
		b.Fatal(err)
	}
	node := e.Endpoints[0]
	b.Run("herald", func(b *testing.B) {
		bin := heraldBinary(b)
		benchFleet(b, e, n, func(confdir string) (string, []string) {
			return bin, []string{"watch", "--confdir", confdir, "--backend", "etcd://" + strings.TrimPrefix(node, "http://"), "--log-level", "warn"}
		})
	})
	// HERALD_FLEET_BASELINE names another herald binary (e.g. the previous release) to
	// run the same fleet with, for before/after figures from one run.
	if base := os.Getenv("HERALD_FLEET_BASELINE"); base != "" {
		b.Run("herald-baseline", func(b *testing.B) {
			benchFleet(b, e, n, func(confdir string) (string, []string) {
				return base, []string{"watch", "--confdir", confdir, "--backend", "etcd://" + strings.TrimPrefix(node, "http://"), "--log-level", "warn"}
			})
		})
	}
	if confd := confdBinary(); confd != "" {
		b.Run("confd", func(b *testing.B) {
			benchFleet(b, e, n, func(confdir string) (string, []string) {
				return confd, []string{"-backend", "etcdv3", "-node", node, "-watch", "-confdir", confdir, "-log-level", "error"}
			})
		})
	} else {
		b.Log("no confd binary (CONFD_BIN or PATH): no confd figures")
	}
	// The floor: the required etcd client alone, keeping one file true to the key
	// (integration/floor). Its RSS is what any herald linking that client starts from.
	b.Run("floor", func(b *testing.B) {
		bin := goBinary(b, "integration/floor")
		benchFleet(b, e, n, func(confdir string) (string, []string) {
			return bin, []string{"etcd", node, "/bench/value", filepath.Join(filepath.Dir(confdir), "out", filepath.Base(confdir))}
		})
	})
}

// confdBinary is the confd to compare with, or "" when there is none.
func confdBinary() string {
	if p := os.Getenv("CONFD_BIN"); p != "" {
		return p
	}
	p, _ := exec.LookPath("confd")
	return p
}

// benchFleet starts n processes from cmd(confdir), each rendering one resource into a
// shared out directory, and measures put -> all n files.
func benchFleet(b *testing.B, e *harness.Etcd, n int, cmd func(confdir string) (string, []string)) {
	dir := benchDir(b)
	out := filepath.Join(dir, "out")
	os.MkdirAll(out, 0o755)
	rn := newRenames(b, out)
	var procs []*heraldProc
	for i := range n {
		name := fmt.Sprintf("f%04d", i)
		confdir := filepath.Join(dir, name)
		writeTree(b, confdir, map[string]string{
			"conf.d/" + name + ".toml":    "[template]\nsrc = \"" + name + ".tmpl\"\ndest = \"" + filepath.Join(out, name) + "\"\nkeys = [\"/bench\"]\n",
			"templates/" + name + ".tmpl": "# " + name + "\nvalue {{getv \"/bench/value\"}}\n",
		})
		bin, args := cmd(confdir)
		procs = append(procs, startHeraldAs(b, bin, nil, nil, args...))
	}
	rn.wait(b, n, 120*time.Second)
	// Past start-up, as a fleet runs.
	time.Sleep(7 * time.Second)
	rn.drain()
	cpu := func() (ticks, faults int) {
		for _, p := range procs {
			s := readProc(p.cmd.Process.Pid)
			ticks, faults = ticks+s.cpuTicks, faults+s.minorFaults
		}
		return ticks, faults
	}
	before, faultsBefore := cpu()
	cli := e.Client(b)
	var lat []time.Duration
	b.ResetTimer()
	var firstFaults int
	for i := range b.N {
		t0 := time.Now()
		// A value no earlier run put: the same value renders the same file, replaced by nothing.
		if _, err := cli.Put(context.Background(), "/bench/value", fmt.Sprintf("changed-%d", t0.UnixNano())); err != nil {
			b.Fatal(err)
		}
		rn.wait(b, n, 60*time.Second)
		lat = append(lat, time.Since(t0))
		if i == 0 {
			b.StopTimer()
			_, f := cpu()
			firstFaults, faultsBefore = f-faultsBefore, f
			b.StartTimer()
		}
	}
	b.StopTimer()
	ticks, faults := cpu()
	ticks, faults = ticks-before, faults-faultsBefore
	var rssKB, maxKB, pssKB int
	for _, p := range procs {
		s := readProc(p.cmd.Process.Pid)
		rssKB += s.rssKB
		maxKB = max(maxKB, s.rssKB)
		pssKB += readPSS(p.cmd.Process.Pid)
	}
	first := lat[0]
	p50, p99 := percentiles(lat) // sorts lat
	b.ReportMetric(p50, "p50-ms")
	b.ReportMetric(p99, "p99-ms")
	b.ReportMetric(float64(rssKB)/1024/float64(n), "rss-MB/proc")
	b.ReportMetric(float64(maxKB)/1024, "max-rss-MB")
	b.ReportMetric(float64(pssKB)/1024/float64(n), "pss-MB/proc")
	b.ReportMetric(float64(rssKB)/1024, "fleet-rss-MB")
	b.ReportMetric(float64(ticks)*10/float64(b.N), "fleet-cpu-ms/change")
	// The first change after start-up apart: a herald that gave back its start-up pages
	// maps back what a change needs then (minor faults, summed over the fleet).
	b.ReportMetric(float64(first.Microseconds())/1000, "first-change-ms")
	b.ReportMetric(float64(firstFaults), "first-change-minflt")
	if b.N > 1 {
		b.ReportMetric(float64(faults)/float64(b.N-1), "later-minflt/change")
	}

	// Then quiet, as a sidecar mostly is: herald gives back the pages its renders mapped
	// in after 6 beats (30 s) without a render. RSS once quiet, and the change after it.
	time.Sleep(fleetQuiet)
	rssKB, pssKB = 0, 0
	for _, p := range procs {
		rssKB += readProc(p.cmd.Process.Pid).rssKB
		pssKB += readPSS(p.cmd.Process.Pid)
	}
	b.ReportMetric(float64(rssKB)/1024/float64(n), "quiet-rss-MB/proc")
	b.ReportMetric(float64(pssKB)/1024/float64(n), "quiet-pss-MB/proc")
	rn.drain()
	t0 := time.Now()
	if _, err := cli.Put(context.Background(), "/bench/value", fmt.Sprintf("changed-%d", t0.UnixNano())); err != nil {
		b.Fatal(err)
	}
	rn.wait(b, n, 60*time.Second)
	b.ReportMetric(float64(time.Since(t0).Microseconds())/1000, "after-quiet-ms")
}

// fleetQuiet is how long the fleet is left alone before its quiet figures: past 6 of
// herald's 5 s beats, with margin for a loaded machine.
const fleetQuiet = 40 * time.Second

// readPSS is the process's proportional set size in kB (0 when unreadable).
func readPSS(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "Pss:" {
			kb, _ := strconv.Atoi(f[1])
			return kb
		}
	}
	return 0
}
