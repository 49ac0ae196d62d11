//go:build unix

package render

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/resources"
)

// BenchmarkChangeTo200Files measures herald's own pipeline (cache apply, dirty marking,
// 200 renders over a shared 1,000-key prefix, atomic writes) from a change event to the
// last of 200 files holding the new value. The registry's share is measured by the
// integration benchmark against real etcd.
func BenchmarkChangeTo200Files(b *testing.B) {
	benchChange(b, func(i int) string {
		return fmt.Sprintf("# resource %d\n{{range gets \"/bench/*\"}}server {{base .Key}} {{.Value}}\n{{end}}", i)
	}, "k0500 %s\n")
}

// BenchmarkChangeTo200SmallFiles is the same with small templates reading a few keys.
func BenchmarkChangeTo200SmallFiles(b *testing.B) {
	benchChange(b, func(i int) string {
		return fmt.Sprintf("# %d\nbackend {{getv \"/bench/k0500\"}}\nself {{getv \"/bench/k%04d\"}}\ncount {{len (ls \"/bench\")}}\n", i, i)
	}, "backend %s\n")
}

func benchChange(b *testing.B, tmpl func(int) string, wantFmt string) {
	const nRes, nKeys = 200, 1000
	kv := map[string]string{}
	for i := range nKeys {
		kv[fmt.Sprintf("/bench/k%04d", i)] = fmt.Sprintf("10.0.%d.%d:80", i/256, i%256)
	}
	m := newMem(kv)
	res := map[string][2]string{}
	for i := range nRes {
		res[fmt.Sprintf("r%03d", i)] = [2]string{`keys = ["/bench"]`, tmpl(i)}
	}
	dir, rs := confdirB(b, res)
	rn := &Runner{Store: m}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rn.Run(ctx, rs, nil) }()
	defer func() { cancel(); <-done }()
	files := make([]string, nRes)
	for i := range nRes {
		files[i] = filepath.Join(dir, "out", fmt.Sprintf("r%03d", i))
	}
	waitAll := func(want string) {
		deadline := time.Now().Add(30 * time.Second)
		for _, f := range files {
			for {
				b, _ := os.ReadFile(f)
				if len(b) > 0 && strings.Contains(string(b), want) {
					break
				}
				if time.Now().After(deadline) {
					panic("timeout waiting for " + f)
				}
				time.Sleep(200 * time.Microsecond)
			}
		}
	}
	waitAll("")
	for m.watchCount() == 0 {
		time.Sleep(time.Millisecond)
	}
	var lat []time.Duration
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := range b.N {
		v := fmt.Sprintf("changed-%d", i)
		start := time.Now()
		m.put("/bench/k0500", v)
		waitAll(fmt.Sprintf(wantFmt, v))
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	// CPU per change (this process: herald's pipeline plus the polling above) is
	// steadier than latency on a shared machine.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func confdirB(b *testing.B, res map[string][2]string) (string, []*resources.Resource) {
	dir := b.TempDir()
	for name, rt := range res {
		os.MkdirAll(filepath.Join(dir, "conf.d"), 0o755)
		os.MkdirAll(filepath.Join(dir, "templates"), 0o755)
		os.WriteFile(filepath.Join(dir, "conf.d", name+".toml"), []byte("[template]\nsrc = \""+name+".tmpl\"\ndest = \"out/"+name+"\"\n"+rt[0]), 0o644)
		os.WriteFile(filepath.Join(dir, "templates", name+".tmpl"), []byte(rt[1]), 0o644)
	}
	os.Mkdir(filepath.Join(dir, "out"), 0o755)
	rs, err := resources.Load(resources.LoadOptions{ConfDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	return dir, rs
}

// BenchmarkRenderOnce1000Over100k renders 1,000 resources, each listing its own 100 of
// 100,000 keys, from one consistent read.
func BenchmarkRenderOnce1000Over100k(b *testing.B) {
	kv := map[string]string{}
	for r := range 1000 {
		for k := range 100 {
			kv[fmt.Sprintf("/big/r%04d/k%03d", r, k)] = "10.0.0.1:80"
		}
	}
	res := map[string][2]string{}
	for i := range 1000 {
		name := fmt.Sprintf("r%04d", i)
		res[name] = [2]string{fmt.Sprintf(`keys = ["/big/%s"]`, name), fmt.Sprintf("{{range gets \"/big/%s/*\"}}server {{base .Key}} {{.Value}}\n{{end}}", name)}
	}
	_, rs := confdirB(b, res)
	b.ResetTimer()
	for range b.N {
		if err := (&Runner{Store: newMem(kv)}).RenderOnce(context.Background(), rs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoad1000 loads 1,000 resources (what a hot reload does on every edit): plain
// templates, and templates that each call a partial (one of 20 files, which call a
// shared one in turn), to show what partials add.
func BenchmarkLoad1000(b *testing.B) {
	for _, withPartials := range []bool{false, true} {
		name := "plain"
		if withPartials {
			name = "partials"
		}
		b.Run(name, func(b *testing.B) {
			res := map[string][2]string{}
			for i := range 1000 {
				body := fmt.Sprintf("{{range gets \"/big/r%04d/*\"}}server {{base .Key}} {{.Value}}\n{{end}}", i)
				if withPartials {
					body = fmt.Sprintf("{{template \"p%02d\" \"/big/r%04d/*\"}}", i%20, i)
				}
				res[fmt.Sprintf("r%04d", i)] = [2]string{"", body}
			}
			dir, _ := confdirB(b, res)
			if withPartials {
				pd := resources.PartialsDir(dir)
				os.MkdirAll(pd, 0o755)
				os.WriteFile(filepath.Join(pd, "common.tmpl"), []byte(`{{define "server"}}server {{base .Key}} {{.Value}}{{end}}`), 0o644)
				for p := range 20 {
					os.WriteFile(filepath.Join(pd, fmt.Sprintf("p%02d.tmpl", p)), []byte(fmt.Sprintf("{{define \"p%02d\"}}{{range gets .}}{{template \"server\" .}}\n{{end}}{{end}}", p)), 0o644)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				rs, err := resources.Load(resources.LoadOptions{ConfDir: dir})
				if err != nil || len(rs) != 1000 {
					b.Fatal(len(rs), err)
				}
			}
		})
	}
}
