package backends

import (
	"bytes"
	"log/slog"
	"reflect"
	"strings"
	"testing"
)

// What real registrants write, byte for byte, read into the same Service as herald's own
// format (issue 16): node-etcd's string port and hostname, registrator's ZooKeeper body,
// and the address spellings of hand-written registrants.
func TestParseInstanceRegistrants(t *testing.T) {
	tests := []struct {
		name  string
		key   string
		value string
		want  Service
	}{
		{
			name:  "node-etcd hostname and string port",
			key:   "/services/service_a/d6b5b1a0",
			value: `{"hostname":"127.0.0.1","port":"3000"}`,
			want:  Service{Name: "service_a", ID: "d6b5b1a0", Address: "127.0.0.1", Port: 3000},
		},
		{
			name:  "registrator ZooKeeper body",
			key:   "/services/web/10.0.0.5:32768",
			value: `{"Name":"web","IP":"10.0.0.5","PublicPort":32768,"PrivatePort":80,"ContainerID":"1f2e3d","Tags":["prod","v2"],"Attrs":{"region":"eu"}}`,
			want: Service{Name: "web", ID: "10.0.0.5:32768", Address: "10.0.0.5", Port: 32768,
				Tags: []string{"prod", "v2"}, Meta: map[string]string{"region": "eu"}},
		},
		{
			name:  "registrator with empty IP uses the node name",
			key:   "/services/web/10.0.0.6:31000",
			value: `{"Name":"web","IP":"","PublicPort":0,"PrivatePort":80,"Tags":null,"Attrs":null}`,
			want:  Service{Name: "web", ID: "10.0.0.6:31000", Address: "10.0.0.6", Port: 31000},
		},
		{
			name:  "host",
			key:   "/services/web/i1",
			value: `{"host":"web-1.internal","port":8080}`,
			want:  Service{Name: "web", ID: "i1", Address: "web-1.internal", Port: 8080},
		},
		{
			name:  "ip",
			key:   "/services/web/i1",
			value: `{"ip":"10.1.1.1","port":"81"}`,
			want:  Service{Name: "web", ID: "i1", Address: "10.1.1.1", Port: 81},
		},
		{
			name:  "Consul-style Address and Port",
			key:   "/services/web/i1",
			value: `{"Address":"10.1.1.2","Port":82}`,
			want:  Service{Name: "web", ID: "i1", Address: "10.1.1.2", Port: 82},
		},
		{
			name:  "serviceAddress",
			key:   "/services/web/i1",
			value: `{"serviceAddress":"10.1.1.3","port":83}`,
			want:  Service{Name: "web", ID: "i1", Address: "10.1.1.3", Port: 83},
		},
		{
			name:  "address wins over host",
			key:   "/services/web/i1",
			value: `{"address":"10.1.1.4","host":"other","port":84}`,
			want:  Service{Name: "web", ID: "i1", Address: "10.1.1.4", Port: 84},
		},
		{
			name:  "meta wins over Attrs",
			key:   "/services/web/i1",
			value: `{"address":"h","port":1,"meta":{"a":"meta"},"Attrs":{"a":"attrs","b":"2"}}`,
			want:  Service{Name: "web", ID: "i1", Address: "h", Port: 1, Meta: map[string]string{"a": "meta", "b": "2"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseInstance("/services", tt.key, []byte(tt.value))
			if err != nil {
				t.Fatal(err)
			}
			want := tt.want
			want.Status, want.Healthy, want.Format, want.Key = StatusPassing, true, FormatHerald, tt.key
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestParseLayout(t *testing.T) {
	tests := []struct{ spec, want, err string }{
		{spec: "/services", want: "/services/{name}/{id}"},
		{spec: "", want: "/{name}/{id}"},
		{spec: "{name}/{dc}/{id}", want: "/services/{name}/{dc}/{id}"},
		{spec: "/services/{name}/{dc}/{id}", want: "/services/{name}/{dc}/{id}"},
		{spec: "/a/b/{dc}/{name}/instances/{id}", want: "/a/b/{dc}/{name}/instances/{id}"},
		{spec: "/s/{name}/{_}/{id}", want: "/s/{name}/{_}/{id}"},
		{spec: "/s/{name}", err: "exactly one {name} and one {id}"},
		{spec: "/s/{name}/{id}/{id}", err: "exactly one {name} and one {id}"},
		{spec: "/s/{id}/{name}", err: "{id} must be the last level"},
		{spec: "/s/{name}/{dc}/{dc}/{id}", err: "more than one {dc}"},
		{spec: "/s/{nom}/{id}", err: `unknown level "{nom}"`},
		{spec: "/s/{name}//{id}", err: "empty, . or .. level"},
		// Several patterns: each read as above, in order.
		{spec: "/registry/{name}/{id},{name}/{dc}/{id}", want: "/registry/{name}/{id},/services/{name}/{dc}/{id}"},
		{spec: "/a/{name}/{id}, /b", want: "/a/{name}/{id},/b/{name}/{id}"},
		{spec: "/a/{name}/{id},/b/{name}", err: "exactly one {name} and one {id}"},
		{spec: "/a/{name}/{id},", err: "empty pattern in the list"},
	}
	for _, tt := range tests {
		l, err := ParseLayout(tt.spec)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseLayout(%q) = %v, %v; want error %q", tt.spec, l, err, tt.err)
			}
			continue
		}
		if err != nil || l.String() != tt.want {
			t.Errorf("ParseLayout(%q) = %v, %v; want %s", tt.spec, l, err, tt.want)
		}
	}
}

// node-etcd's layout: a datacenter level between service and instance. Every instance is
// read with its datacenter; a key at a level the layout does not have is reported.
func TestServicesUnderLayoutWithDC(t *testing.T) {
	kvs := map[string]string{
		"/services/service_a/datacenter_x/u1": `{"hostname":"127.0.0.1","port":"3000"}`,
		"/services/service_a/datacenter_x/u2": `{"hostname":"127.0.0.1","port":"3001"}`,
		"/services/service_a/datacenter_y/u3": `{"hostname":"127.0.0.2","port":"3000"}`,
		"/services/service_a/datacenter_y":    "", // a directory node (ZooKeeper)
		"/services/service_a/u4":              `{"hostname":"127.0.0.3","port":"3000"}`,
	}
	var logs bytes.Buffer
	var reported []string
	cfg := Config{ServicesLayout: "{name}/{dc}/{id}", OnMalformed: func(k string, _ error) { reported = append(reported, k) }}
	got := ServicesUnder(cfg, kvs, slog.New(slog.NewTextHandler(&logs, nil)))
	var dcs []string
	for _, s := range got["service_a"] {
		dcs = append(dcs, s.Datacenter+"/"+s.HostPort())
	}
	if want := []string{"datacenter_x/127.0.0.1:3000", "datacenter_x/127.0.0.1:3001", "datacenter_y/127.0.0.2:3000"}; !reflect.DeepEqual(dcs, want) {
		t.Errorf("service_a = %v, want %v", dcs, want)
	}
	// u4 sits where the layout has {dc}: one level short of an instance, so it is a
	// directory as far as the layout goes. The deeper case is reported (below).
	if len(reported) != 0 {
		t.Errorf("reported %v, want none", reported)
	}

	l, err := cfg.Layout()
	if err != nil {
		t.Fatal(err)
	}
	q := ServiceQuery{Name: "service_a", Datacenter: "datacenter_y"}
	var sel []string
	for _, s := range got["service_a"] {
		if l.Selects(q, s) {
			sel = append(sel, s.HostPort())
		}
	}
	if want := []string{"127.0.0.2:3000"}; !reflect.DeepEqual(sel, want) {
		t.Errorf("service_a@datacenter_y = %v, want %v", sel, want)
	}
	if p, _ := l.ServicePrefix("service_a"); p != "/services/service_a" {
		t.Errorf("ServicePrefix = %q", p)
	}

	// The default layout over node-etcd's keys: each is reported with the layout it
	// does not fit, never silently dropped (the empty directory node too: at the
	// default layout's instance level it is an instance without an address).
	reported = nil
	logs.Reset()
	got = ServicesUnder(Config{OnMalformed: cfg.OnMalformed}, kvs, slog.New(slog.NewTextHandler(&logs, nil)))
	if len(reported) != 4 || len(got["service_a"]) != 1 {
		t.Errorf("default layout: reported %v, got %v; want the three deeper keys and the empty node reported, u4 read", reported, got)
	}
	if !strings.Contains(logs.String(), "3 levels below /services, the layout has 2") {
		t.Errorf("warning does not explain the layout: %s", logs.String())
	}
}

// Two registrants with different roots and depths in one registry, read with one
// layout of two patterns: each key by the first pattern it fits, the reads under the
// patterns' common ancestor, and a key that fits neither reported with both.
func TestServicesUnderSeveralRoots(t *testing.T) {
	kvs := map[string]string{
		"/registry/web/u1":                    "10.0.0.1:80",
		"/registry/web/u2":                    `{"address":"10.0.0.2","port":80}`,
		"/services/service_a/datacenter_x/u3": `{"hostname":"10.0.0.3","port":"3000"}`,
		"/services/web/datacenter_y/u4":       `{"hostname":"10.0.0.4","port":"3000"}`,
		"/services/service_a/datacenter_x":    "", // a directory node (ZooKeeper)
		"/registry/web/u5/extra":              "10.0.0.5:80",
		"/elsewhere/web/u6":                   "10.0.0.6:80", // under no pattern's root: not service data
	}
	var reported []string
	var logs bytes.Buffer
	cfg := Config{ServicesLayout: "/registry/{name}/{id},{name}/{dc}/{id}", OnMalformed: func(k string, _ error) { reported = append(reported, k) }}
	l, err := cfg.Layout()
	if err != nil {
		t.Fatal(err)
	}
	if l.Root() != "/" || !l.HasDC() {
		t.Errorf("Root() = %q, HasDC() = %v; want the common ancestor / and true", l.Root(), l.HasDC())
	}
	if p, _ := l.ServicePrefix("web"); p != "/" {
		t.Errorf("ServicePrefix(web) = %q, want /", p)
	}
	got := ServicesUnder(cfg, kvs, slog.New(slog.NewTextHandler(&logs, nil)))
	var web []string
	for _, s := range got["web"] {
		web = append(web, s.Datacenter+"/"+s.HostPort())
	}
	if want := []string{"/10.0.0.1:80", "/10.0.0.2:80", "datacenter_y/10.0.0.4:3000"}; !reflect.DeepEqual(web, want) {
		t.Errorf("web = %v, want %v (both roots)", web, want)
	}
	if len(got["service_a"]) != 1 || got["service_a"][0].Datacenter != "datacenter_x" {
		t.Errorf("service_a = %v, want the one instance in datacenter_x", got["service_a"])
	}
	if _, err := (Config{ServicesLayout: "{name}/{id},"}).Layout(); err == nil || !strings.Contains(err.Error(), "empty pattern") {
		t.Errorf("a trailing comma: %v, want an empty-pattern error", err)
	}
	if want := []string{"/registry/web/u5/extra"}; !reflect.DeepEqual(reported, want) {
		t.Errorf("reported %v, want %v", reported, want)
	}
	if !strings.Contains(logs.String(), "/registry/<name>/<id>") || !strings.Contains(logs.String(), "3 levels below /registry, the layout has 2") {
		t.Errorf("warning does not name the pattern and why: %s", logs.String())
	}
	// herald registers with the first pattern.
	if k, err := l.InstanceKey("web", "", "u9"); err != nil || k != "/registry/web/u9" {
		t.Errorf("InstanceKey = %q, %v; want /registry/web/u9", k, err)
	}
}

func TestLayoutCheckQuery(t *testing.T) {
	l, _ := ParseLayout("/services")
	err := l.CheckQuery(ServiceQuery{Name: "web", Datacenter: "dc1"})
	if err == nil || !strings.Contains(err.Error(), "web@dc1") || !strings.Contains(err.Error(), "no {dc} level") {
		t.Errorf("CheckQuery = %v, want an error naming web@dc1 and the missing {dc} level", err)
	}
	l, _ = ParseLayout("/services/{name}/{dc}/{id}")
	if err := l.CheckQuery(ServiceQuery{Name: "web", Datacenter: "dc1"}); err != nil {
		t.Errorf("CheckQuery with {dc}: %v", err)
	}
}
