package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/heraldhq/herald/integration/harness"
)

// BenchmarkWatchConsul measures `herald watch` on Consul KV side by side with
// consul-template, the tool its users would run instead, in the same run on the same
// agent: put → file p50, RSS right after the changes and once quiet. With one template the floor runs too: the Consul client
// library alone, one blocking query and a crash-safe replace (integration/floor).
// consul-template is found at $CONSUL_TEMPLATE_BIN, on PATH, or where
// integration/scripts/build-consul-template.sh caches it (bench.sh runs that); without
// it its figures are left out, and said so.
//
// Each tool watches its own keys (bench/h/..., bench/c/..., bench/f/..., and with 200
// templates bench/s/... for herald with spare_file) so that a put
// wakes one of them only, and the changes go in rounds alternating between them, so
// that a load change on this shared machine hits all alike.
//
//	go test ./integration -run XXX -bench BenchmarkWatchConsul -benchtime 60x
func BenchmarkWatchConsul(b *testing.B) {
	b.Run("1template/50ms", func(b *testing.B) { benchConsulPeers(b, 1, 50*time.Millisecond) })
	b.Run("1template/300ms", func(b *testing.B) { benchConsulPeers(b, 1, 300*time.Millisecond) })
	b.Run("200templates-1000keys", func(b *testing.B) { benchConsulPeers(b, 200, 50*time.Millisecond) })
}

// consulTemplateBin finds the consul-template binary, or "".
func consulTemplateBin() string {
	if p := os.Getenv("CONSUL_TEMPLATE_BIN"); p != "" {
		return p
	}
	if p, err := exec.LookPath("consul-template"); err == nil {
		return p
	}
	cache := os.Getenv("HERALD_TEST_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "herald-test")
	}
	p := filepath.Join(cache, "consul-template-v0.41.1", "consul-template")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return ""
}

// consulPeer is one tool under measurement: what to put, where its files appear.
type consulPeer struct {
	name  string
	key   string // the key each change puts
	files *renames
	pid   int
	lat   []time.Duration
}

// benchConsulPeers runs nTpl templates per tool. With one template it reads one key;
// with more, each reads a changing key of a 1,000-key prefix and lists that prefix.
// Changes are gap apart (or right after the last file, when that takes longer).
func benchConsulPeers(b *testing.B, nTpl int, gap time.Duration) {
	c := harness.StartConsul(b)
	kv := c.Client(b).KV()
	ctBin := consulTemplateBin()
	var peers []*consulPeer
	tools := []string{"h", "c"}
	if nTpl == 1 {
		tools = append(tools, "f")
	} else {
		tools = append(tools, "s") // herald with spare_file
	}
	// HERALD_BENCH_BASELINE names another herald binary (e.g. the previous release),
	// measured in the same rounds for before/after figures.
	base := os.Getenv("HERALD_BENCH_BASELINE")
	if base != "" {
		tools = append(tools, "b")
	}
	for _, tool := range tools {
		if tool == "c" && ctBin == "" {
			b.Logf("consul-template not found (CONSUL_TEMPLATE_BIN, PATH, or integration/scripts/build-consul-template.sh): no consul-template figures")
			continue
		}
		prefix := "bench/" + tool
		if nTpl > 1 {
			consulPutMany(b, kv, prefix+"/data", 1000)
		} else {
			consulPut(b, kv, prefix+"/value", "0")
		}
		dir := benchDir(b)
		out := filepath.Join(dir, "out")
		if err := os.MkdirAll(out, 0o755); err != nil {
			b.Fatal(err)
		}
		p := &consulPeer{name: tool, files: newRenames(b, out), key: prefix + "/value"}
		if nTpl > 1 {
			p.key = prefix + "/data/k0500"
		}
		switch tool {
		case "h":
			p.name = "herald"
			p.pid = startConsulHerald(b, heraldBinary(b), c, dir, prefix, nTpl, "")
		case "s":
			p.name = "herald-spare_file"
			p.pid = startConsulHerald(b, heraldBinary(b), c, dir, prefix, nTpl, "spare_file = true\n")
		case "b":
			p.name = "herald-baseline"
			p.pid = startConsulHerald(b, base, c, dir, prefix, nTpl, "")
		case "c":
			p.name = "consul-template"
			p.pid = startConsulTemplate(b, ctBin, c, dir, prefix, nTpl)
		default:
			p.name = "floor"
			p.pid = startHeraldAs(b, goBinary(b, "integration/floor"), nil, nil, "consul", c.Addr, prefix+"/value", filepath.Join(out, "r0000")).cmd.Process.Pid
		}
		p.files.wait(b, nTpl, 60*time.Second)
		p.files.drain()
		peers = append(peers, p)
	}
	const round = 10
	b.ResetTimer()
	for done := 0; done < b.N; done += round {
		for _, p := range peers {
			next := time.Now()
			for i := done; i < min(done+round, b.N); i++ {
				time.Sleep(time.Until(next))
				t0 := time.Now()
				consulPut(b, kv, p.key, fmt.Sprintf("changed-%d", i))
				p.files.wait(b, nTpl, 30*time.Second)
				p.lat = append(p.lat, time.Since(t0))
				next = t0.Add(gap)
			}
			time.Sleep(300 * time.Millisecond) // both tools quiet before the other's round
			p.files.drain()
		}
	}
	b.StopTimer()
	p50s, rss := map[string]float64{}, map[string]float64{}
	for _, p := range peers {
		p50, p99 := percentiles(p.lat)
		st := readProc(p.pid)
		p50s[p.name], rss[p.name] = p50, float64(st.rssKB)/1024
		b.ReportMetric(p50, p.name+"-p50-ms")
		b.ReportMetric(p99, p.name+"-p99-ms")
		b.ReportMetric(rss[p.name], p.name+"-rss-MB")
		b.ReportMetric(float64(st.anonKB)/1024, p.name+"-rss-anon-MB")
	}
	// Then quiet, as a watch mostly is (herald gives back its executable's pages after 30
	// s without a render): RSS once quiet.
	time.Sleep(fleetQuiet)
	quiet := map[string]float64{}
	for _, p := range peers {
		st := readProc(p.pid)
		quiet[p.name] = float64(st.rssKB) / 1024
		b.ReportMetric(quiet[p.name], p.name+"-quiet-rss-MB")
		b.ReportMetric(float64(st.anonKB)/1024, p.name+"-quiet-rss-anon-MB")
	}
	if ct := p50s["consul-template"]; ct > 0 {
		b.ReportMetric(p50s["herald"]/ct, "p50-ratio")
		if sp := p50s["herald-spare_file"]; sp > 0 {
			b.ReportMetric(sp/ct, "spare_file-p50-ratio")
		}
		if bl := p50s["herald-baseline"]; bl > 0 {
			b.ReportMetric(bl/ct, "baseline-p50-ratio")
		}
		b.ReportMetric(rss["herald"]/rss["consul-template"], "rss-ratio")
		b.ReportMetric(quiet["herald"]/quiet["consul-template"], "quiet-rss-ratio")
		if f := p50s["floor"]; f > 0 {
			// Below 1, the floor is faster than consul-template: the room a goal
			// stated as a ratio to consul-template has at all.
			b.ReportMetric(f/ct, "floor-to-ct-p50-ratio")
		}
	}
	if f := p50s["floor"]; f > 0 {
		b.ReportMetric(p50s["herald"]/f, "herald-to-floor-p50-ratio")
	}
	b.ReportMetric(0, "ns/op")
}

// consulPutMany creates n keys under prefix (k0000...), 64 to a transaction.
func consulPutMany(b *testing.B, kv *api.KV, prefix string, n int) {
	for i := 0; i < n; i += 64 {
		var ops api.KVTxnOps
		for j := i; j < min(i+64, n); j++ {
			ops = append(ops, &api.KVTxnOp{Verb: api.KVSet, Key: fmt.Sprintf("%s/k%04d", prefix, j), Value: []byte(fmt.Sprintf("10.0.%d.%d:80", j/256, j%256))})
		}
		if ok, _, _, err := kv.Txn(ops, nil); err != nil || !ok {
			b.Fatalf("put %s: ok=%v %v", prefix, ok, err)
		}
	}
}

func startConsulHerald(b *testing.B, bin string, c *harness.Consul, dir, prefix string, nTpl int, extra string) int {
	files := map[string]string{}
	for i := range nTpl {
		name := fmt.Sprintf("r%04d", i)
		keys, tmpl := "/"+prefix+"/value", `{{getv "/`+prefix+`/value"}}`+"\n"
		if nTpl > 1 {
			keys = "/" + prefix + "/data"
			tmpl = fmt.Sprintf("# %d\n{{getv \"/%s/data/k0500\"}} {{len (ls \"/%s/data\")}}\n", i, prefix, prefix)
		}
		files["conf.d/"+name+".toml"] = "[template]\nsrc = \"" + name + ".tmpl\"\ndest = \"out/" + name + "\"\nkeys = [\"" + keys + "\"]\n" + extra
		files["templates/"+name+".tmpl"] = tmpl
	}
	writeTree(b, dir, files)
	p := startHeraldAs(b, bin, nil, nil, "watch", "--confdir", dir, "--backend", "consul://"+c.Addr, "--log-level", "warn")
	return p.cmd.Process.Pid
}

func startConsulTemplate(b *testing.B, bin string, c *harness.Consul, dir, prefix string, nTpl int) int {
	var hcl strings.Builder
	hcl.WriteString("log_level = \"err\"\n")
	for i := range nTpl {
		src := filepath.Join(dir, fmt.Sprintf("t%04d.tmpl", i))
		tmpl := `{{key "` + prefix + `/value"}}` + "\n"
		if nTpl > 1 {
			tmpl = fmt.Sprintf("# %d\n{{key \"%s/data/k0500\"}} {{len (ls \"%s/data\")}}\n", i, prefix, prefix)
		}
		if err := os.WriteFile(src, []byte(tmpl), 0o644); err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(&hcl, "template {\n  source = %q\n  destination = %q\n}\n", src, filepath.Join(dir, "out", fmt.Sprintf("r%04d", i)))
	}
	cfg := filepath.Join(dir, "ct.hcl")
	if err := os.WriteFile(cfg, []byte(hcl.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-consul-addr", c.Addr, "-config", cfg)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")} // no CONSUL_* or VAULT_*
	log, err := os.Create(filepath.Join(dir, "consul-template.log"))
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		log.Close()
	})
	return cmd.Process.Pid
}
