package main

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// confdPlanFor parses a confd command line as herald confd does and translates it.
func confdPlanFor(t *testing.T, envv map[string]string, args ...string) (*confdPlan, []string, error) {
	t.Helper()
	c, warnings, err := parseConfd(args, func(k string) (string, bool) { v, ok := envv[k]; return v, ok })
	if err != nil {
		return nil, nil, err
	}
	noSRV := func(context.Context, string) ([]*net.SRV, error) { return nil, errors.New("no DNS in this test") }
	p, err := c.translate(context.Background(), noSRV)
	return p, warnings, err
}

func optionMap(p *confdPlan) map[string]string {
	m := map[string]string{}
	for _, kv := range p.options {
		m[kv[0]] = kv[1]
	}
	return m
}

// Each confd flag, with confd's meaning and default, lands on herald's option.
func TestConfdFlagsMapOntoHeraldOptions(t *testing.T) {
	base := map[string]string{"backend": "etcd://127.0.0.1:2379", "confdir": "/etc/confd", "log-level": "info", "prefix-mode": "replace"}
	with := func(cmd string, kv ...string) func() (string, map[string]string) {
		return func() (string, map[string]string) {
			m := map[string]string{}
			for k, v := range base {
				m[k] = v
			}
			for i := 0; i < len(kv); i += 2 {
				if kv[i+1] == "" {
					delete(m, kv[i])
				} else {
					m[kv[i]] = kv[i+1]
				}
			}
			return cmd, m
		}
	}
	for _, c := range []struct {
		args []string
		env  map[string]string
		want func() (string, map[string]string)
	}{
		// confd's defaults: backend etcd, confdir /etc/confd, poll every 600 s.
		{nil, nil, with("watch", "interval", "10m0s")},
		{[]string{"-onetime"}, nil, with("render")},
		{[]string{"-watch"}, nil, with("watch")},
		{[]string{"-onetime", "-watch"}, nil, with("render")},
		{[]string{"-interval", "5"}, nil, with("watch", "interval", "5s")},
		{[]string{"--interval=30", "--watch"}, nil, with("watch")}, // double dashes; -watch ignores -interval
		{[]string{"-onetime", "-backend", "etcdv3", "-node", "http://127.0.0.1:2379"}, nil, with("render")},
		{[]string{"-onetime", "-backend", "etcd", "-node", "https://a:2379", "-node", "https://b:2379/"}, nil, with("render", "backend", "etcds://a:2379,b:2379")},
		{[]string{"-onetime", "-backend", "etcd"}, map[string]string{"ETCDCTL_PEERS": "http://e1:2379,http://e2:2379"}, with("render", "backend", "etcd://e1:2379,e2:2379")},
		{[]string{"-onetime", "-backend", "etcdv3"}, map[string]string{"ETCDCTL_PEERS": "http://e1:2379"}, with("render")}, // only confd's etcd (v2) read it
		{[]string{"-onetime", "-backend", "consul"}, nil, with("render", "backend", "consul://127.0.0.1:8500")},
		{[]string{"-onetime", "-backend", "consul", "-node", "c1:8500", "-scheme", "https"}, nil, with("render", "backend", "consuls://c1:8500")},
		{[]string{"-onetime", "-backend", "zookeeper", "-node", "127.0.0.1:2181", "-node", "z2:2181"}, nil, with("render", "backend", "zookeeper://127.0.0.1:2181,z2:2181")},
		{[]string{"-onetime", "-backend", "zookeeper"}, nil, with("render", "backend", "zookeeper://127.0.0.1:2181")},
		{[]string{"-onetime", "-backend", "file", "-file", "a/", "-file", "b.yaml", "-filter", "*"}, nil, with("render", "backend", "file://a/,b.yaml?filter=%2A")},
		{[]string{"-onetime", "-backend", "file", "-file", "d/", "-filter", "*.yml"}, nil, with("render", "backend", "file://d/?filter=%2A.yml")},
		{[]string{"-onetime", "-backend", "env"}, nil, with("render", "backend", "env://")},
		{[]string{"-onetime", "-prefix", "/production"}, nil, with("render", "prefix", "/production")},
		{[]string{"-onetime", "-confdir", "./confdir"}, nil, with("render", "confdir", "./confdir")},
		{[]string{"-onetime", "-log-level", "debug"}, nil, with("render", "log-level", "debug")},
		{[]string{"-onetime", "-log-level", "warning"}, nil, with("render", "log-level", "warn")},
		{[]string{"-onetime", "-log-level", "fatal"}, nil, with("render", "log-level", "error")},
		{[]string{"-onetime", "-noop"}, nil, with("render", "dry-run", "true")},
		{[]string{"-onetime", "-sync-only"}, nil, with("render", "sync-only", "true")},
		{[]string{"-onetime", "-keep-stage-file"}, nil, with("render", "keep-stage-file", "true")},
		{[]string{"-onetime", "-client-cert", "c.pem", "-client-key", "k.pem", "-client-ca-keys", "ca.pem"}, nil,
			with("render", "tls-cert", "c.pem", "tls-key", "k.pem", "tls-ca", "ca.pem")},
		// confd reads CONFD_CLIENT_* for the TLS files the flags leave unset.
		{[]string{"-onetime", "-client-cert", "flag.pem"}, map[string]string{"CONFD_CLIENT_CERT": "env.pem", "CONFD_CLIENT_KEY": "k.pem", "CONFD_CLIENT_CAKEYS": "ca.pem"},
			with("render", "tls-cert", "flag.pem", "tls-key", "k.pem", "tls-ca", "ca.pem")},
		{[]string{"-onetime", "-basic-auth", "-username", "u", "-password", "p"}, nil, with("render", "username", "u", "password", "p")},
		{[]string{"-onetime", "-backend", "consul", "-basic-auth", "-username", "u", "-password", "p"}, nil,
			with("render", "backend", "consul://127.0.0.1:8500", "username", "u", "password", "p")},
		{[]string{"-onetime", "-username", "u", "-password", "p"}, nil, with("render")}, // confd ignores them without -basic-auth
		{[]string{"-onetime", "-backend", "consul", "-auth-token", "tok"}, nil, with("render", "backend", "consul://127.0.0.1:8500", "consul-token", "tok")},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			p, _, err := confdPlanFor(t, c.env, c.args...)
			if err != nil {
				t.Fatal(err)
			}
			cmd, want := c.want()
			if p.command != cmd || !reflect.DeepEqual(optionMap(p), want) {
				t.Fatalf("got %s %v\nwant %s %v", p.command, optionMap(p), cmd, want)
			}
		})
	}
}

func TestConfdIgnoredCredentialsWarn(t *testing.T) {
	p, _, err := confdPlanFor(t, nil, "-onetime", "-username", "u", "-password", "hunter2")
	if err != nil || len(p.warnings) != 1 || !strings.Contains(p.warnings[0], "-username/-password ignored: confd uses them only with -basic-auth") || strings.Contains(p.warnings[0], "hunter2") {
		t.Fatalf("warnings %q, %v", p.warnings, err)
	}
	p, _, err = confdPlanFor(t, nil, "-onetime", "-auth-token", "tok")
	if err != nil || len(p.warnings) != 1 || !strings.Contains(p.warnings[0], "-auth-token ignored") || strings.Contains(p.warnings[0], "tok ") {
		t.Fatalf("warnings %q, %v", p.warnings, err)
	}
}

func TestConfdRefusesWhatHeraldCannotDo(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"--bogus-flag=1"}, "flag provided but not defined: -bogus-flag"},
		{[]string{"-onetime", "extra"}, `unexpected argument "extra"`},
		{[]string{"-backend", "vault"}, "-backend vault is not supported by herald"},
		{[]string{"-backend", "redis"}, "-backend redis is not supported by herald"},
		{[]string{"-backend", "dynamodb"}, "-backend dynamodb is not supported by herald"},
		{[]string{"-backend", "ssm"}, "-backend ssm is not supported by herald"},
		{[]string{"-backend", "rancher"}, "-backend rancher is not supported by herald"},
		{[]string{"-backend", "nosuch"}, `-backend "nosuch": unknown backend`},
		{[]string{"-table", "t"}, "-table is DynamoDB's table, which herald does not support"},
		{[]string{"-separator", ":"}, "-separator is Redis's key separator, which herald does not support"},
		{[]string{"-auth-type", "token"}, "-auth-type is Vault's auth method"},
		{[]string{"-secret-keyring", "k.asc"}, "-secret-keyring is the keyring of confd's crypt functions"},
		{[]string{"-client-insecure"}, "-client-insecure is not supported"},
		{[]string{"-backend", "file"}, "-backend file needs -file"},
		{[]string{"-backend", "file", "-file", "d/", "-filter", "[x"}, `-filter "[x": syntax error in pattern`},
		{[]string{"-backend", "file", "-file", ""}, "-file: empty path"},
		{[]string{"-backend", "file", "-file", "a,b.yaml"}, `-file "a,b.yaml": a comma or question mark in a path is not supported`},
		{[]string{"-interval", "0"}, "-interval 0: want a positive number of seconds"},
		{[]string{"-interval", "9300000000"}, "-interval 9300000000: want a positive number of seconds"},
		{[]string{"-log-level", "loud"}, `-log-level "loud"`},
		{[]string{"-scheme", "ftp"}, `-scheme "ftp": want http or https`},
		{[]string{"-node", "http://a:2379", "-node", "https://b:2379"}, "some nodes are http and some https"},
		{[]string{"-node", "ftp://a:2379"}, `-node "a:2379": want host:port`},
		{[]string{"-node", "X::"}, `-node: backend etcd://X::: bad host "X::"`},
		{[]string{"-config-file", "/nonexistent/confd.toml"}, "-config-file /nonexistent/confd.toml: stat /nonexistent/confd.toml: no such file"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			_, _, err := confdPlanFor(t, nil, c.args...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
}

// confd.toml: confd's keys (its mix of '-' and '_'), flags beat it, unknown keys warn.
func TestConfdConfigFile(t *testing.T) {
	dir := writeFiles(t, map[string]string{"confd.toml": `backend = "consul"
nodes = ["c1:8500", "c2:8500"]
prefix = "/app"
confdir = "/srv/confd"
interval = 30
log-level = "debug"
noop = true
sync-only = true
keep_stage_file = true
scheme = "https"
client_cert = "c.pem"
client_key = "k.pem"
client_cakeys = "ca.pem"
basic_auth = true
username = "u"
password = "p"
auth_token = "tok"
etcd_nodes = ["http://old:4001"]
`})
	cfg := filepath.Join(dir, "confd.toml")
	p, warnings, err := confdPlanFor(t, nil, "-config-file", cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"backend": "consuls://c1:8500,c2:8500", "prefix": "/app", "confdir": "/srv/confd", "interval": "30s",
		"log-level": "debug", "dry-run": "true", "sync-only": "true", "keep-stage-file": "true",
		"tls-cert": "c.pem", "tls-key": "k.pem", "tls-ca": "ca.pem", "username": "u", "password": "p", "consul-token": "tok",
		"prefix-mode": "replace",
	}
	if p.command != "watch" || !reflect.DeepEqual(optionMap(p), want) {
		t.Fatalf("got %s %v\nwant watch %v", p.command, optionMap(p), want)
	}
	if len(warnings) != 1 || warnings[0] != cfg+`:18: unknown key "etcd_nodes" ignored` {
		t.Fatalf("warnings = %q", warnings)
	}
	// A flag beats the file; a repeated flag replaces the file's list.
	p, _, err = confdPlanFor(t, nil, "-config-file", cfg, "-onetime", "-node", "c3:8500", "-prefix", "/flag", "-confdir", "d")
	if err != nil {
		t.Fatal(err)
	}
	if m := optionMap(p); p.command != "render" || m["backend"] != "consuls://c3:8500" || m["prefix"] != "/flag" || m["confdir"] != "d" {
		t.Fatalf("flags over file: %s %v", p.command, m)
	}

	dir = writeFiles(t, map[string]string{
		"file.toml":  "backend = \"file\"\nfile = [\"a.yaml\", \"b/\"]\nwatch = true\nonetime = true\n",
		"bad.toml":   "backend = \"etcd\"\ninterval = \"often\"\n",
		"table.toml": "[confd]\nconfdir = \"/x\"\n",
		"ver.toml":   "version = true\nonetime = true\n",
		"pw.toml":    "password = 5\nbasic_auth = \"secret-ish\"\n",
	})
	p, _, err = confdPlanFor(t, nil, "-config-file", filepath.Join(dir, "file.toml"))
	if err != nil || p.command != "render" || optionMap(p)["backend"] != "file://a.yaml,b/?filter=%2A" {
		t.Fatalf("file list: %v %v", p, err)
	}
	_, _, err = confdPlanFor(t, nil, "-config-file", filepath.Join(dir, "bad.toml"))
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "bad.toml")+`:2: interval: invalid value "often"`) {
		t.Fatalf("bad value: %v", err)
	}
	_, warnings, err = confdPlanFor(t, nil, "-config-file", filepath.Join(dir, "table.toml"))
	if err != nil || len(warnings) != 1 || !strings.Contains(warnings[0], `table.toml:1: unknown key "confd" ignored`) {
		t.Fatalf("old [confd] table: %q %v", warnings, err)
	}
	p, warnings, err = confdPlanFor(t, nil, "-config-file", filepath.Join(dir, "ver.toml"))
	if err != nil || p.command != "render" || len(warnings) != 1 || !strings.Contains(warnings[0], `ver.toml:1: unknown key "version" ignored`) {
		t.Fatalf("version in confd.toml is not a flag: %v %q %v", p, warnings, err)
	}
	_, _, err = confdPlanFor(t, nil, "-config-file", filepath.Join(dir, "pw.toml"))
	if err == nil || !strings.Contains(err.Error(), "pw.toml:2: basic_auth: invalid value") {
		t.Fatalf("bad bool: %v", err)
	}
}

// The whole command line through run(): herald confd renders what confd -onetime would.
func TestConfdCommandLineRendersThroughRun(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"confdir/conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"out/a.conf\"\nkeys = [\"/app\"]\n",
		"confdir/templates/a.tmpl": "host={{getv \"/app/host\"}} port={{getv \"/app/port\" \"80\"}} {{if exists \"/app/empty\"}}present{{else}}absent{{end}}\n",
		"data/a.yaml":              "app:\n  host: db\n  port: ~\n",
		"data/more/b.yaml":         "app:\n  empty:\n",
		"confdir/out/.keep":        "",
	})
	confdir := filepath.Join(dir, "confdir")
	code, stdout, stderr := herald(t, nil, "confd", "-onetime", "-backend", "file", "-file", filepath.Join(dir, "data", "a.yaml"),
		"--file", filepath.Join(dir, "data", "more")+"/", "-confdir", confdir, "-log-level", "error")
	if code != 0 {
		t.Fatalf("exit %d %q %q", code, stdout, stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(confdir, "out", "a.conf")); string(b) != "host=db port=80 absent\n" {
		t.Fatalf("a.conf = %q", b)
	}
	if stderr != "" {
		t.Errorf("-log-level error: logged %q", stderr)
	}
	code, stdout, _ = herald(t, nil, "confd", "-version")
	if code != 0 || !strings.HasPrefix(stdout, "herald ") || !strings.Contains(stdout, "confd") {
		t.Errorf("-version: %d %q", code, stdout)
	}
	code, stdout, _ = herald(t, nil, "confd", "-help")
	if code != 0 || !strings.Contains(stdout, "-onetime") || !strings.Contains(stdout, "-srv-record") {
		t.Errorf("-help: %d %q", code, stdout)
	}
	code, stdout, stderr = herald(t, nil, "confd", "-onetime", "-bogus")
	if code != 2 || stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "-bogus") {
		t.Errorf("unknown flag: want one line naming it, got %d %q %q", code, stdout, stderr)
	}
	// -noop writes nothing.
	os.Remove(filepath.Join(confdir, "out", "a.conf"))
	code, _, stderr = herald(t, nil, "confd", "-onetime", "-noop", "-backend", "file", "-file", filepath.Join(dir, "data", "a.yaml"), "-confdir", confdir)
	if _, err := os.Stat(filepath.Join(confdir, "out", "a.conf")); code != 0 || err == nil {
		t.Errorf("-noop: exit %d %q, file written: %v", code, stderr, err == nil)
	}
}

// confd's -prefix replaces a resource's own prefix (confd's resource.go: "if
// config.Prefix != "" { tr.Prefix = config.Prefix }"); herald's own command line joins
// them unless --prefix-mode replace.
func TestConfdPrefixReplacesResourcePrefix(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"confdir/conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"out/a.conf\"\nprefix = \"/app\"\nkeys = [\"/host\"]\n",
		"confdir/templates/a.tmpl": "host={{getv \"/host\"}}\n",
		"data.yaml":                "app:\n  host: from-resource-prefix\nprod:\n  host: from-global-prefix\n  app:\n    host: joined\n",
		"confdir/out/.keep":        "",
	})
	confdir, data := filepath.Join(dir, "confdir"), filepath.Join(dir, "data.yaml")
	out := filepath.Join(confdir, "out", "a.conf")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"confd", "-onetime", "-backend", "file", "-file", data, "-confdir", confdir}, "host=from-resource-prefix\n"},
		{[]string{"confd", "-onetime", "-backend", "file", "-file", data, "-confdir", confdir, "-prefix", "/prod"}, "host=from-global-prefix\n"},
		{[]string{"render", "--backend", "file://" + data, "--confdir", confdir, "--prefix", "/prod"}, "host=joined\n"},
		{[]string{"render", "--backend", "file://" + data, "--confdir", confdir, "--prefix", "/prod", "--prefix-mode", "replace"}, "host=from-global-prefix\n"},
	} {
		if code, stdout, stderr := herald(t, nil, c.args...); code != 0 {
			t.Fatalf("%v: exit %d %q %q", c.args, code, stdout, stderr)
		}
		if b, _ := os.ReadFile(out); string(b) != c.want {
			t.Errorf("%v: a.conf = %q, want %q", c.args, b, c.want)
		}
	}
	if code, _, stderr := herald(t, nil, "render", "--backend", "file://"+data, "--confdir", confdir, "--prefix-mode", "swap"); code != 2 || !strings.Contains(stderr, "join or replace") {
		t.Errorf("--prefix-mode swap: exit %d %q", code, stderr)
	}
}

// -srv-domain and -srv-record look the nodes up in DNS, here a real DNS server on
// 127.0.0.1 answering SRV questions.
func TestConfdSRVLookup(t *testing.T) {
	addr := serveSRV(t, map[string][]net.SRV{
		"_etcdv3._tcp.example.test.":   {{Target: "e1.example.test.", Port: 2379}, {Target: "e2.example.test.", Port: 2380}},
		"_consul-http._tcp.corp.test.": {{Target: "c1.corp.test.", Port: 8501}},
	})
	dns := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "udp", addr)
	}}
	plan := func(args ...string) (*confdPlan, error) {
		c, _, err := parseConfd(args, func(string) (string, bool) { return "", false })
		if err != nil {
			return nil, err
		}
		return c.translate(context.Background(), func(ctx context.Context, r string) ([]*net.SRV, error) {
			_, addrs, err := dns.LookupSRV(ctx, "", "", r)
			return addrs, err
		})
	}
	p, err := plan("-onetime", "-backend", "etcdv3", "-srv-domain", "example.test")
	if err != nil || optionMap(p)["backend"] != "etcd://e1.example.test:2379,e2.example.test:2380" {
		t.Fatalf("-srv-domain: %v %v", p, err)
	}
	p, err = plan("-onetime", "-backend", "consul", "-scheme", "https", "-srv-record", "_consul-http._tcp.corp.test.", "-node", "ignored:1")
	if err != nil || optionMap(p)["backend"] != "consuls://c1.corp.test:8501" {
		t.Fatalf("-srv-record: %v %v", p, err)
	}
	if _, err = plan("-onetime", "-backend", "etcdv3", "-srv-domain", "missing.test"); err == nil || !strings.Contains(err.Error(), "-srv-record _etcdv3._tcp.missing.test.") {
		t.Fatalf("missing record: %v", err)
	}
}

// serveSRV answers SRV questions over UDP on 127.0.0.1 until the test ends.
func serveSRV(t *testing.T, records map[string][]net.SRV) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			h.Response, h.Authoritative = true, true
			srvs, ok := records[q.Name.String()]
			if !ok || q.Type != dnsmessage.TypeSRV {
				h.RCode = dnsmessage.RCodeNameError
			}
			b := dnsmessage.NewBuilder(nil, h)
			b.EnableCompression()
			b.StartQuestions()
			b.Question(q)
			b.StartAnswers()
			if q.Type == dnsmessage.TypeSRV {
				for i, s := range srvs { // priorities in order, so the resolver keeps it
					b.SRVResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60},
						dnsmessage.SRVResource{Priority: uint16(i), Weight: 1, Port: s.Port, Target: dnsmessage.MustNewName(s.Target)})
				}
			}
			out, err := b.Finish()
			if err == nil {
				pc.WriteTo(out, from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

// Through the whole command line: the nodes come from the SRV record (nothing listens
// there, so the render fails naming the node the record gave).
func TestConfdSRVThroughRun(t *testing.T) {
	addr := serveSRV(t, map[string][]net.SRV{"_etcdv3._tcp.example.test.": {{Target: "localhost.", Port: 1}}})
	dir := writeFiles(t, map[string]string{
		"conf.d/a.toml":    "[template]\nsrc = \"a.tmpl\"\ndest = \"a.out\"\n",
		"templates/a.tmpl": "{{getv \"/k\"}}",
	})
	errf, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	code := run(context.Background(), env{
		args:   []string{"confd", "-onetime", "-backend", "etcdv3", "-srv-domain", "example.test", "-confdir", dir},
		stdout: io.Discard,
		stderr: errf,
		lookup: func(k string) (string, bool) {
			return map[string]string{"HERALD_TIMEOUT": "1s"}[k], k == "HERALD_TIMEOUT"
		},
		dns: &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "udp", addr)
		}},
	})
	b, _ := os.ReadFile(errf.Name())
	if code != 1 || !strings.Contains(string(b), "etcd localhost:1") {
		t.Fatalf("exit %d, stderr %q; want a render failing against the SRV node localhost:1", code, b)
	}
}
