package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/integration/harness"
)

// BenchmarkWatchZooKeeperOneResource: ZooKeeper set → one resource's file renamed into
// place, side by side in the same run with the floor: a bare client in a process of its
// own (integration/floor) that gets the watch event, reads the node back (a ZooKeeper
// watch carries no data) and replaces a file crash-safely (write, fsync, rename). Each
// is timed alike, from the set to the rename seen by inotify. Changes alternate
// between the two, each on its own node, and confd on a third when a confd binary is
// found (CONFD_BIN or PATH).
//
//	go test ./integration -run XXX -bench BenchmarkWatchZooKeeperOneResource -benchtime 200x
func BenchmarkWatchZooKeeperOneResource(b *testing.B) {
	z := harness.StartZooKeeper(b)
	c := zkClient(b, z.Servers, 10*time.Second)
	zkPut(b, c, "/bench/k", "0")
	zkPut(b, c, "/floor/k", "0")
	dir := benchDir(b)
	writeTree(b, dir, map[string]string{
		"conf.d/r.toml":    "[template]\nsrc = \"r.tmpl\"\ndest = \"out/r\"\nkeys = [\"/bench\"]\n",
		"templates/r.tmpl": `{{getv "/bench/k"}}` + "\n",
	})
	out := filepath.Join(dir, "out")
	os.MkdirAll(out, 0o755)
	rn := newRenames(b, out)
	startHerald(b, nil, "watch", "--confdir", dir, "--backend", "zookeeper://"+z.Servers[0], "--log-level", "warn")
	rn.wait(b, 1, 60*time.Second)
	rn.drain()

	// confd, when there is one (CONFD_BIN or PATH), on a node of its own.
	var crn *renames
	if confd := confdBinary(); confd != "" {
		zkPut(b, c, "/confd/k", "0")
		cdir := filepath.Join(dir, "confd")
		cout := filepath.Join(cdir, "out")
		writeTree(b, cdir, map[string]string{
			"conf.d/r.toml":    "[template]\nsrc = \"r.tmpl\"\ndest = \"" + filepath.Join(cout, "r") + "\"\nkeys = [\"/confd\"]\n",
			"templates/r.tmpl": `{{getv "/confd/k"}}` + "\n",
		})
		os.MkdirAll(cout, 0o755)
		crn = newRenames(b, cout)
		startHeraldAs(b, confd, nil, nil, "-backend", "zookeeper", "-node", z.Servers[0], "-watch", "-confdir", cdir, "-log-level", "error")
		crn.wait(b, 1, 60*time.Second)
		crn.drain()
	} else {
		b.Log("no confd binary (CONFD_BIN or PATH): herald and the floor only")
	}

	// The floor: its own process and connection, timed as herald is (an earlier version
	// ran the bare client inside the benchmark, which spared it a process wakeup and the
	// inotify delivery that herald's time includes).
	floorDir := filepath.Join(dir, "floor")
	os.MkdirAll(floorDir, 0o755)
	frn := newRenames(b, floorDir)
	startHeraldAs(b, goBinary(b, "integration/floor"), nil, nil, "zookeeper", z.Servers[0], "/floor/k", filepath.Join(floorDir, "f"))
	frn.wait(b, 1, 60*time.Second)
	frn.drain()
	var herald, bare, confd []time.Duration
	b.ResetTimer()
	for i := range b.N {
		v := fmt.Sprintf("v%d", i)
		t0 := time.Now()
		if _, err := c.Set("/bench/k", []byte(v), -1); err != nil {
			b.Fatal(err)
		}
		rn.wait(b, 1, 30*time.Second)
		herald = append(herald, time.Since(t0))

		t0 = time.Now()
		if _, err := c.Set("/floor/k", []byte(v), -1); err != nil {
			b.Fatal(err)
		}
		frn.wait(b, 1, 30*time.Second)
		bare = append(bare, time.Since(t0))

		if crn != nil {
			// confd re-reads the tree after each event and only then arms new watches
			// (GetW per node): a change made in between is lost until the next one
			// (seen here: a set 2 ms after the previous file never reached it). The
			// pause lets it re-arm, so that this measures its latency, not that gap.
			time.Sleep(50 * time.Millisecond)
			t0 = time.Now()
			if _, err := c.Set("/confd/k", []byte(v), -1); err != nil {
				b.Fatal(err)
			}
			crn.wait(b, 1, 30*time.Second)
			confd = append(confd, time.Since(t0))
		}
	}
	b.StopTimer()
	if got, _ := os.ReadFile(filepath.Join(out, "r")); strings.TrimSpace(string(got)) != fmt.Sprintf("v%d", b.N-1) {
		b.Fatalf("herald's file holds %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(floorDir, "f")); string(got) != fmt.Sprintf("v%d", b.N-1) {
		b.Fatalf("the floor's file holds %q", got)
	}
	hp50, hp99 := percentiles(herald)
	fp50, fp99 := percentiles(bare)
	b.ReportMetric(hp50, "herald-p50-ms")
	b.ReportMetric(hp99, "herald-p99-ms")
	b.ReportMetric(fp50, "floor-p50-ms")
	b.ReportMetric(fp99, "floor-p99-ms")
	b.ReportMetric(hp50/fp50, "p50-ratio")
	if len(confd) > 0 {
		cp50, cp99 := percentiles(confd)
		b.ReportMetric(cp50, "confd-p50-ms")
		b.ReportMetric(cp99, "confd-p99-ms")
	}
}
