package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/backends/consul"
	"github.com/heraldhq/herald/backends/etcd"
	"github.com/heraldhq/herald/backends/open"
	"github.com/heraldhq/herald/resources/announce"
)

// registerSpecFor parses `herald register` args with envv and returns the one instance's spec.
func registerSpecFor(t *testing.T, envv map[string]string, args ...string) (registerSpec, *Options) {
	t.Helper()
	errf, _ := os.CreateTemp(t.TempDir(), "stderr")
	defer errf.Close()
	e := env{args: args, stderr: errf, lookup: func(k string) (string, bool) { v, ok := envv[k]; return v, ok }}
	o, rf, _, err := parseRegister(e, args)
	if err != nil {
		b, _ := os.ReadFile(errf.Name())
		t.Fatalf("parse %q: %v\n%s", args, err, b)
	}
	rc, err := rf.config()
	if err != nil {
		t.Fatal(err)
	}
	ep, err := backends.ParseURL(o.Backend)
	if err != nil {
		t.Fatal(err)
	}
	s, err := spec(rc, "herald register", true, o, discard())
	if err != nil {
		t.Fatal(err)
	}
	// The backend's policy, as announcers applies it; etcd's and Consul's need no
	// connection to answer.
	var r backends.Registrar = (*etcd.Store)(nil)
	if ep.Scheme == "consul" {
		r = (*consul.Store)(nil)
	}
	s.opts = s.opts.For(r)
	return s, o
}

func TestRegisterDefaults(t *testing.T) {
	s, _ := registerSpecFor(t, nil, "--backend", "etcd://127.0.0.1:2379", "--service", "web", "--address", "10.0.0.1", "--port", "8080")
	o := s.opts
	if o.Service.ID != "web-10.0.0.1-8080" || o.Register.TTL != 10*time.Second || o.CheckInterval != 2*time.Second ||
		o.CheckTimeout != time.Second || o.Check != nil || o.Register.Replace {
		t.Fatalf("defaults: %+v", o)
	}
	// A killed herald's lease lives up to one TTL: a restart waits that long for it.
	if o.ClaimWait != 10*time.Second+backends.ClaimMargin || o.IsTaken == nil {
		t.Fatalf("claim wait %v", o.ClaimWait)
	}
}

func TestRegisterFlagsEnvAndCheckTimeout(t *testing.T) {
	envv := map[string]string{
		"HERALD_SERVICE":       "api", // the flag wins
		"HERALD_TAG":           "a, b",
		"HERALD_META":          "zone=a,rack=r1",
		"HERALD_CHECK_TIMEOUT": "30s", // check_cmd's timeout for resources, not the health check's
		"HERALD_REPLACE":       "true",
	}
	s, o := registerSpecFor(t, envv, "--backend", "etcd://h:2379", "--service", "web", "--address", "::1", "--port", "80",
		"--check", "http://127.0.0.1:9/health", "--check-interval", "5s")
	if s.opts.Service.Name != "web" || strings.Join(s.opts.Service.Tags, ",") != "a,b" ||
		s.opts.Service.Meta["zone"] != "a" || s.opts.Service.Meta["rack"] != "r1" || !s.opts.Register.Replace {
		t.Fatalf("from env: %+v", s.opts.Service)
	}
	if s.opts.Service.ID != "web-1-80" {
		t.Fatalf("IPv6 default ID %q", s.opts.Service.ID)
	}
	if s.opts.CheckTimeout != time.Second || o.CheckTimeout != 30*time.Second {
		t.Fatalf("health check timeout %v (want the 1s default), resources' %v (want 30s from HERALD_CHECK_TIMEOUT)", s.opts.CheckTimeout, o.CheckTimeout)
	}
	if s.opts.Check != announce.HTTPCheck("http://127.0.0.1:9/health") || s.opts.CheckInterval != 5*time.Second {
		t.Fatalf("check %#v every %v", s.opts.Check, s.opts.CheckInterval)
	}

	s, _ = registerSpecFor(t, envv, "--backend", "etcd://h:2379", "--service", "web", "--address", "h", "--port", "80", "--check-timeout", "300ms")
	if s.opts.CheckTimeout != 300*time.Millisecond {
		t.Fatalf("--check-timeout: health check timeout %v, want 300ms", s.opts.CheckTimeout)
	}
}

// abandonedAsked reports whether s's Abandoned would ask the registry (on the nil
// Consul store of registerSpecFor, asking panics): Consul with herald's TTL check only.
func abandonedAsked(s registerSpec) (asked bool) {
	defer func() { asked = recover() != nil }()
	_, _ = s.opts.Abandoned(context.Background())
	return false
}

func TestRegisterConsulChecks(t *testing.T) {
	base := []string{"--backend", "consul://127.0.0.1:8500", "--service", "db", "--address", "10.0.0.5", "--port", "5432"}
	s, _ := registerSpecFor(t, nil, append(base, "--check", "tcp://127.0.0.1:5432", "--check-interval", "3s")...)
	r := s.opts.Register
	if s.opts.Check != nil || r.CheckTCP != "127.0.0.1:5432" || r.CheckInterval != 3*time.Second || r.CheckTimeout != time.Second ||
		r.DeregisterAfter != time.Minute || abandonedAsked(s) || s.opts.ClaimWait != 0 {
		t.Fatalf("tcp check on consul is Consul's: %+v / %+v", s.opts, s)
	}
	s, _ = registerSpecFor(t, nil, append(base, "--check", "http://127.0.0.1:8080/health")...)
	if s.opts.Check != nil || s.opts.Register.CheckHTTP != "http://127.0.0.1:8080/health" {
		t.Fatalf("http check on consul is Consul's: %+v", s.opts)
	}
	s, _ = registerSpecFor(t, nil, append(base, "--check-cmd", "pg_isready", "--deregister-after", "5m")...)
	if s.opts.Check != announce.CommandCheck("pg_isready") || s.opts.Register.CheckHTTP != "" || !abandonedAsked(s) ||
		s.opts.Register.DeregisterAfter != 5*time.Minute || s.opts.ClaimWait != 10*time.Second+backends.ClaimMargin {
		t.Fatalf("command check on consul is herald's, over a TTL check: %+v", s.opts)
	}
}

func TestRegisterUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"register", "--backend", "etcd://h:1"}, 2, []string{"nothing to register", "--service"}},
		{[]string{"register", "--service", "web", "--address", "h", "--port", "80"}, 2, []string{"no backend"}},
		{[]string{"register", "--backend", "etcd://h:1", "--service", "web", "--port", "0", "--ttl", "soon"}, 2,
			[]string{"--address: missing", "--port 0", `--ttl "soon"`}},
		{[]string{"register", "--backend", "etcd://h:1", "--service", "web", "--address", "h", "--port", "1", "--check", "tcp://x:1", "--check-cmd", "true"}, 2,
			[]string{"--check and --check-cmd"}},
		{[]string{"register", "--backend", "etcd://h:1", "--service", "web", "--address", "h", "--port", "1", "--check", "ftp://u:pw@x/"}, 2,
			[]string{"--check", "ftp://REDACTED@x/"}},
		{[]string{"register", "--backend", "etcd://h:1", "--service", "web", "--address", "h", "--port", "1", "--meta", "novalue"}, 2,
			[]string{`--meta "novalue"`}},
		{[]string{"register", "--backend", "file://" + filepath.Join(t.TempDir(), "d.yaml"), "--service", "web", "--address", "h", "--port", "1"}, 1,
			[]string{"cannot register services"}},
		{[]string{"register", "--nope"}, 2, []string{"flag provided but not defined: -nope"}},
	}
	for _, c := range cases {
		code, _, stderr := herald(t, nil, c.args...)
		if code != c.code {
			t.Errorf("%q: exit %d, want %d\n%s", c.args, code, c.code, stderr)
		}
		for _, w := range c.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%q: stderr lacks %q:\n%s", c.args, w, stderr)
			}
		}
		if strings.Contains(stderr, ":pw@") {
			t.Errorf("%q: a password is shown:\n%s", c.args, stderr)
		}
	}
	code, _, stderr := herald(t, nil, "register", "-h")
	if code != 0 || !strings.Contains(stderr, "--check-fall") || !strings.Contains(stderr, "--session-timeout") {
		t.Errorf("-h: exit %d\n%s", code, stderr)
	}
}

func TestRegisterTablesInHeraldToml(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"data.yaml": "a: 1\n",
		"herald.toml": `backend = "etcd://127.0.0.1:1"
[[register]]
service = "web"
address = "10.0.0.1"
port = 80

[[register]]
service = "api"
address = "10.0.0.2"
port = 0
check_interval = "fast"

[[register]]
service = "web"
address = "10.0.0.1"
port = 80
`,
	})
	o := &Options{Config: filepath.Join(dir, "herald.toml"), Timeout: 10 * time.Second, SessionTimeout: 10 * time.Second}
	fc, err := readFileConfig(o.Config, o.table())
	if err != nil {
		t.Fatal(err)
	}
	o.file = fc
	_, err = registerSpecs(o, fc.Register, false, discard())
	if err == nil {
		t.Fatal("bad [[register]] tables accepted")
	}
	for _, w := range []string{"[[register]] #2 (api)", "port 0", `check_interval "fast"`, "#3 (web): instance web/web-10.0.0.1-80 is also registered by", "#1 (web)"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}

	// A backend that cannot register refuses [[register]] tables when watch starts.
	o.file.Register = fc.Register[:1]
	o.Backend = "file://" + filepath.Join(dir, "data.yaml")
	store, err := open.Open(context.Background(), backends.Config{URL: o.Backend})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, err := startRegistrations(context.Background(), o, store, discard()); err == nil || !strings.Contains(err.Error(), "cannot register services") {
		t.Fatalf("startRegistrations on a file backend = %v", err)
	}
	o.file.Register = nil
	stop, err := startRegistrations(context.Background(), o, store, discard())
	if err != nil {
		t.Fatalf("no [[register]] tables: %v", err)
	}
	stop()
}
