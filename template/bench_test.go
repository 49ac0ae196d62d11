package template

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/heraldhq/herald/backends"
)

// indexedSource answers List with a binary search over sorted keys, as the runner's
// cache does, so the benchmark measures the renderer and not a map scan.
type indexedSource struct {
	MapSource
	keys []string
}

func newIndexedSource(kv map[string]string) indexedSource {
	s := indexedSource{MapSource: MapSource{KV: kv}}
	for k := range kv {
		s.keys = append(s.keys, k)
	}
	slices.Sort(s.keys)
	return s
}

func (s indexedSource) List(prefix string) []backends.KVPair {
	p := backends.CleanKey(prefix)
	i := sort.SearchStrings(s.keys, p)
	var out []backends.KVPair
	for ; i < len(s.keys); i++ {
		k := s.keys[i]
		if !backends.UnderPrefix(k, p) {
			// Keys such as "/a-b" sort between "/a" and "/a/x"; skip them.
			if strings.HasPrefix(k, p) {
				continue
			}
			break
		}
		out = append(out, backends.KVPair{Key: k, Value: s.KV[k]})
	}
	return out
}

const benchTemplate = `global
    maxconn {{getv "/global/maxconn"}}
    nbthread {{getv "/global/nbthread" "4"}}
    log {{getv "/global/log"}}

frontend http-in
    bind *:{{getv "/frontend/port"}}
{{- range gets "/frontend/acl/*"}}
    acl is_{{base .Key}} hdr(host) -i {{.Value}}
    use_backend {{base .Key}} if is_{{base .Key}}
{{- end}}
{{range $b := lsdir "/backends"}}
backend {{$b}}
    balance {{getv (printf "/backends/%s/balance" $b) "roundrobin"}}
{{- range $s := lsdir (printf "/backends/%s/servers" $b)}}
{{- $p := printf "/backends/%s/servers/%s" $b $s}}
    server {{$s}} {{getv (printf "%s/addr" $p)}}:{{getv (printf "%s/port" $p)}} weight {{getv (printf "%s/weight" $p) "100"}} maxconn {{getv (printf "%s/maxconn" $p) "1000"}} check
{{- end}}
{{end}}`

// benchData is 1,000 keys under /haproxy: 10 backends of 20 servers with 4 keys each,
// 40 ACLs, settings, and unrelated statistics the template never reads.
func benchData() map[string]string {
	kv := map[string]string{
		"/haproxy/global/maxconn": "50000",
		"/haproxy/global/log":     "127.0.0.1 local0",
		"/haproxy/frontend/port":  "80",
	}
	for a := range 40 {
		kv[fmt.Sprintf("/haproxy/frontend/acl/be%02d", a%10)+fmt.Sprint("-", a)] = fmt.Sprintf("app%d.example.com", a)
	}
	for b := range 10 {
		be := fmt.Sprintf("/haproxy/backends/be%02d", b)
		kv[be+"/balance"] = "leastconn"
		kv[be+"/check"] = "/healthz"
		for s := range 20 {
			srv := fmt.Sprintf("%s/servers/srv%03d", be, b*20+s)
			kv[srv+"/addr"] = fmt.Sprintf("10.%d.%d.%d", b, s/250, s%250+1)
			kv[srv+"/port"] = "8080"
			kv[srv+"/weight"] = fmt.Sprint(10 + s)
			kv[srv+"/maxconn"] = "2000"
		}
	}
	for i := 0; len(kv) < 1000; i++ {
		kv[fmt.Sprintf("/haproxy/stats/counter%04d", i)] = fmt.Sprint(i)
	}
	return kv
}

func BenchmarkExecute(b *testing.B) {
	kv := benchData()
	if len(kv) != 1000 {
		b.Fatalf("%d keys", len(kv))
	}
	tm, err := Parse("haproxy.cfg.tmpl", benchTemplate)
	if err != nil {
		b.Fatal(err)
	}
	opts := Options{Prefix: "/haproxy"}
	for _, bc := range []struct {
		name string
		src  Source
	}{
		{"indexed", newIndexedSource(kv)},
		{"mapsource", MapSource{KV: kv}},
	} {
		out, reads, err := tm.Execute(bc.src, opts)
		if err != nil {
			b.Fatal(err)
		}
		if n := strings.Count(string(out), "\n    server "); n != 200 {
			b.Fatalf("%d servers rendered, want 200", n)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(out)))
			for b.Loop() {
				if _, _, err := tm.Execute(bc.src, opts); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, _, err := tm.Execute(bc.src, opts); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
		_ = reads
	}
}

func BenchmarkTouches(b *testing.B) {
	tm, err := Parse("haproxy.cfg.tmpl", benchTemplate)
	if err != nil {
		b.Fatal(err)
	}
	_, reads, err := tm.Execute(newIndexedSource(benchData()), Options{Prefix: "/haproxy"})
	if err != nil {
		b.Fatal(err)
	}
	keys := []string{"/haproxy/backends/be03/servers/srv061/port", "/haproxy/stats/counter0007", "/elsewhere/x"}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		reads.Touches(keys[i%len(keys)])
	}
}
