package backends

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want Endpoint
	}{
		{"etcd://h1:2379,h2:2380", Endpoint{Scheme: "etcd", Hosts: []string{"h1:2379", "h2:2380"}}},
		{"etcds://h1", Endpoint{Scheme: "etcd", TLS: true, Hosts: []string{"h1:2379"}}},
		{"etcdv3://", Endpoint{Scheme: "etcd", Hosts: []string{"127.0.0.1:2379"}}},
		{"zk://h1,h2:2182/chroot/x", Endpoint{Scheme: "zookeeper", Hosts: []string{"h1:2181", "h2:2182"}, Path: "/chroot/x"}},
		{"zookeepers://[::1]:2281", Endpoint{Scheme: "zookeeper", TLS: true, Hosts: []string{"[::1]:2281"}}},
		{"zookeeper://h/", Endpoint{Scheme: "zookeeper", Hosts: []string{"h:2181"}}},
		{"consul://c1, c2:8501?dc=dc2", Endpoint{Scheme: "consul", Hosts: []string{"c1:8500", "c2:8501"}, Query: map[string][]string{"dc": {"dc2"}}}},
		{"CONSULS://[fe80::1]", Endpoint{Scheme: "consul", TLS: true, Hosts: []string{"[fe80::1]:8500"}}},
		{"file://examples/data.yaml", Endpoint{Scheme: "file", Path: "examples/data.yaml"}},
		{"file://a.yaml,dir/?filter=*.yml", Endpoint{Scheme: "file", Path: "a.yaml,dir/", Query: url.Values{"filter": {"*.yml"}}}},
		{"env://", Endpoint{Scheme: "env"}},
	} {
		got, err := ParseURL(tc.raw)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tc.raw, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseURL(%q) = %+v, want %+v", tc.raw, got, tc.want)
		}
	}
}

func TestParseURLErrors(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{"127.0.0.1:2379", "want SCHEME://"},
		{"redis://h", `unknown scheme "redis" (want etcd, etcds, zookeeper, zookeepers, consul, consuls, file or env)`},
		{"file://", "file:// needs a path"},
		{"file://d/?filter=a&x=1", "want file://PATH?filter=GLOB"},
		{"etcd://root:S3cret-Pass@h1:2379", "backend etcd://REDACTED@h1:2379: credentials in the URL are not accepted"},
		{"consul://h?%zz", "bad query"},
		{"etcd://a:b:c", `bad host "a:b:c"`},
	} {
		_, err := ParseURL(tc.raw)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseURL(%q) = %v, want an error saying %q", tc.raw, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "S3cret") {
			t.Errorf("ParseURL(%q): error shows the password: %v", tc.raw, err)
		}
	}
}

// FuzzParseURL: any input parses or fails without panicking; a password given as URL
// userinfo never shows in the error.
func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"etcd://h1:2379,h2", "zookeepers://h/chroot", "consul://h?dc=x", "file://x.yaml", "etcd://u:p@h", "zk://[::1]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		const secret = "Pw-7c1f9e"
		for _, in := range []string{raw, "etcd://user:" + secret + "@" + raw} {
			e, err := ParseURL(in)
			if err != nil {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("ParseURL(%q): error shows the password: %v", in, err)
				}
				continue
			}
			if strings.Contains(e.String(), secret) {
				t.Fatalf("ParseURL(%q) = %s: shows the password", in, e)
			}
		}
	})
}
