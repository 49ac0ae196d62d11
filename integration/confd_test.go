package integration

// confd's own command lines, run through a binary called confd (a symlink to herald, as
// a user installs it), against each real registry: the output files must be what the
// same confd setup renders.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	consulapi "github.com/hashicorp/consul/api"

	"github.com/heraldhq/herald/integration/harness"
)

type consulKV = consulapi.KVPair

// startConfd runs a long-lived confd command line (-watch, or polling).
func startConfd(t *testing.T, confd string, args ...string) *heraldProc {
	t.Helper()
	return startHeraldAs(t, confd, nil, nil, args...)
}

// confdTemplate uses confd's functions the way real setups do: getv with and without a
// default, gets over a directory, exists. /app/port and /app/debug are never set.
const confdTemplate = `name={{getv "/app/name"}}
port={{getv "/app/port" "8080"}}
{{range gets "/app/upstreams/*"}}server {{base .Key}} {{.Value}}
{{end}}{{if exists "/app/debug"}}debug{{else}}nodebug{{end}}
`

// confdWant is what confd renders from confdData with confdTemplate.
const confdWant = "name=shop\nport=8080\nserver a 10.0.0.1:80\nserver b 10.0.0.2:80\nnodebug\n"

var confdData = map[string]string{"/app/name": "shop", "/app/upstreams/a": "10.0.0.1:80", "/app/upstreams/b": "10.0.0.2:80"}

// confdSetup writes a confd confdir (conf.d, templates, the dest's directory) and a
// confd symlink to herald; it returns the confdir, the dest and the symlink.
func confdSetup(t *testing.T) (confdir, dest, confd string) {
	t.Helper()
	dir := t.TempDir()
	confdir = filepath.Join(dir, "confdir")
	dest = filepath.Join(dir, "out", "app.conf")
	writeTree(t, confdir, map[string]string{
		"conf.d/app.toml":    "[template]\nsrc = \"app.tmpl\"\ndest = \"" + dest + "\"\nkeys = [\"/app\"]\nmode = \"0640\"\n",
		"templates/app.tmpl": confdTemplate,
	})
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		t.Fatal(err)
	}
	confd = filepath.Join(dir, "bin", "confd")
	if err := os.MkdirAll(filepath.Dir(confd), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(heraldBinary(t), confd); err != nil {
		t.Fatal(err)
	}
	return confdir, dest, confd
}

// runConfd runs a confd -onetime command line to its end and checks the file.
func runConfd(t *testing.T, confd, dest string, env []string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, confd, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("confd %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	got, err := os.ReadFile(dest)
	if err != nil || string(got) != confdWant {
		t.Fatalf("confd %s: %s = %q (%v), want %q\noutput:\n%s", strings.Join(args, " "), dest, got, err, confdWant, out)
	}
	if fi, _ := os.Stat(dest); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", fi.Mode().Perm())
	}
}

func TestConfdCommandLineEtcd(t *testing.T) {
	t.Parallel()
	e := harness.StartEtcd(t)
	c := e.Client(t)
	ctx := zkCtx(t, 20*time.Second)
	for k, v := range confdData {
		if _, err := c.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Put(ctx, "/production"+k, v); err != nil {
			t.Fatal(err)
		}
	}
	confdir, dest, confd := confdSetup(t)
	host := strings.TrimPrefix(e.Endpoints[0], "http://")
	runConfd(t, confd, dest, nil, "-onetime", "-backend", "etcdv3", "-node", e.Endpoints[0], "-confdir", confdir, "-log-level", "debug")
	os.Remove(dest)
	// confd 0.16's etcd backend is v2; herald's is v3 for both names. Nodes without a scheme.
	runConfd(t, confd, dest, nil, "--onetime", "--backend=etcd", "--node="+host, "--confdir", confdir)
	os.Remove(dest)
	// confd.toml, as confd reads it, with a prefix.
	cfg := filepath.Join(t.TempDir(), "confd.toml")
	writeTree(t, filepath.Dir(cfg), map[string]string{"confd.toml": "backend = \"etcdv3\"\nnodes = [\"" + e.Endpoints[0] + "\"]\nprefix = \"/production\"\nconfdir = \"" + confdir + "\"\nlog-level = \"error\"\n"})
	runConfd(t, confd, dest, nil, "-onetime", "-config-file", cfg)

	// -watch: a change reaches the file.
	os.Remove(dest)
	followConfd(t, confd, dest, func() {
		if _, err := c.Put(ctx, "/app/name", "mall"); err != nil {
			t.Fatal(err)
		}
	}, strings.Replace(confdWant, "shop", "mall", 1), "-watch", "-backend", "etcdv3", "-node", e.Endpoints[0], "-confdir", confdir)
}

// followConfd runs a long-lived confd command line: it renders confdWant, then want
// after change, and exits 0 on SIGTERM.
func followConfd(t *testing.T, confd, dest string, change func(), want string, args ...string) {
	t.Helper()
	p := startConfd(t, confd, args...)
	waitFile(t, dest, confdWant, 30*time.Second)
	change()
	waitFile(t, dest, want, 30*time.Second)
	if code := p.stop(t, syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("confd %s exited %d on SIGTERM\n%s", strings.Join(args, " "), code, p.Output())
	}
}

// confd's TLS flags, and the CONFD_CLIENT_* variables confd reads for them, against an
// etcd that requires client certificates.
func TestConfdCommandLineEtcdTLS(t *testing.T) {
	t.Parallel()
	certs := harness.GenCerts(t)
	e := harness.StartEtcd(t, harness.EtcdTLS(certs))
	c := e.Client(t)
	ctx := zkCtx(t, 20*time.Second)
	for k, v := range confdData {
		if _, err := c.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	confdir, dest, confd := confdSetup(t)
	runConfd(t, confd, dest, nil, "-onetime", "-backend", "etcdv3", "-node", e.Endpoints[0], "-confdir", confdir,
		"-client-cert", certs.ClientCert, "-client-key", certs.ClientKey, "-client-ca-keys", certs.CAFile)
	os.Remove(dest)
	runConfd(t, confd, dest, []string{"CONFD_CLIENT_CERT=" + certs.ClientCert, "CONFD_CLIENT_KEY=" + certs.ClientKey, "CONFD_CLIENT_CAKEYS=" + certs.CAFile},
		"-onetime", "-backend", "etcdv3", "-node", e.Endpoints[0], "-confdir", confdir)
}

// confdConsul starts Consul holding confdData.
func confdConsul(t *testing.T) (*harness.Consul, *consulapi.KV) {
	t.Helper()
	srv := harness.StartConsul(t)
	kv := srv.Client(t).KV()
	for k, v := range confdData {
		if _, err := kv.Put(&consulKV{Key: strings.TrimPrefix(k, "/"), Value: []byte(v)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	return srv, kv
}

func TestConfdCommandLineConsul(t *testing.T) {
	t.Parallel()
	srv, kv := confdConsul(t)
	confdir, dest, confd := confdSetup(t)
	runConfd(t, confd, dest, nil, "-onetime", "-backend", "consul", "-node", srv.Addr, "-confdir", confdir)

	// Neither -onetime nor -watch: confd's polling mode, every -interval seconds; herald
	// also watches, so a change arrives without waiting for the interval.
	os.Remove(dest)
	followConfd(t, confd, dest, func() {
		if _, err := kv.Put(&consulKV{Key: "app/upstreams/c", Value: []byte("10.0.0.3:80")}, nil); err != nil {
			t.Fatal(err)
		}
	}, strings.Replace(confdWant, "nodebug", "server c 10.0.0.3:80\nnodebug", 1), "-interval", "600", "-backend", "consul", "-node", srv.Addr, "-confdir", confdir)
}

func TestConfdCommandLineZooKeeper(t *testing.T) {
	t.Parallel()
	z := harness.StartZooKeeper(t)
	c := zkClient(t, z.Servers, 10*time.Second)
	for k, v := range confdData {
		zkPut(t, c, k, v)
	}
	confdir, dest, confd := confdSetup(t)
	runConfd(t, confd, dest, nil, "-onetime", "-backend", "zookeeper", "-node", z.Servers[0], "-confdir", confdir)
}

func TestConfdCommandLineFileAndEnv(t *testing.T) {
	t.Parallel()
	confdir, dest, confd := confdSetup(t)
	data := t.TempDir()
	// Two -file values, a file and a directory read recursively for -filter; null and
	// empty values are absent (the template's defaults apply), as in confd.
	writeTree(t, data, map[string]string{
		"a.yaml":                       "app:\n  name: shop\n  port: ~\n  debug:\n",
		"more/upstreams.yaml":          "app:\n  upstreams:\n    a: 10.0.0.1:80\n",
		"more/nested/upstreams-b.yaml": "app:\n  upstreams:\n    b: 10.0.0.2:80\n    z: null\n",
		"more/README.txt":              "not YAML: [\n",
	})
	runConfd(t, confd, dest, nil, "-onetime", "-backend", "file", "-file", filepath.Join(data, "a.yaml"), "-file", filepath.Join(data, "more"), "-filter", "*.yaml", "-confdir", confdir)
	os.Remove(dest)
	// Without -filter, confd reads every file below the directory, README.txt too.
	out, err := exec.Command(confd, "-onetime", "-backend", "file", "-file", filepath.Join(data, "more"), "-confdir", confdir).CombinedOutput()
	if err == nil || !strings.Contains(string(out), filepath.Join(data, "more", "README.txt")+":2: did not find expected node content") {
		t.Fatalf("a file that is not YAML under -file: %v\n%s", err, out)
	}
	runConfd(t, confd, dest, []string{"APP_NAME=shop", "APP_UPSTREAMS_A=10.0.0.1:80", "APP_UPSTREAMS_B=10.0.0.2:80"},
		"-onetime", "-backend", "env", "-confdir", confdir)

	// An unknown flag: one line naming it, no usage dump, and nothing written.
	os.Remove(dest)
	out, err = exec.Command(confd, "-onetime", "-backend", "env", "-confdir", confdir, "-frobnicate").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "flag provided but not defined: -frobnicate") || strings.Count(string(out), "\n") != 1 {
		t.Fatalf("unknown flag: %v\n%s", err, out)
	}
	if _, err := os.Stat(dest); err == nil {
		t.Fatal("a refused command line wrote the file")
	}
	// herald confd is the same command line.
	out, err = exec.Command(heraldBinary(t), "confd", "-onetime", "-backend", "env", "-confdir", confdir).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `key does not exist: /app/name`) {
		// The environment has no APP_NAME here: confd fails the same way.
		t.Fatalf("herald confd without APP_NAME: %v\n%s", err, out)
	}
}

// confd's -basic-auth with Consul is for a proxy in front of the agent: here a real nginx
// with auth_basic. Without -basic-auth, confd (and herald) send no credentials.
func TestConfdCommandLineConsulBasicAuthThroughNginx(t *testing.T) {
	t.Parallel()
	srv, _ := confdConsul(t)
	// nginx's workers (not root) read the password file on each request.
	pwDir, err := os.MkdirTemp("", "herald-htpasswd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pwDir) })
	if err := os.Chmod(pwDir, 0o755); err != nil {
		t.Fatal(err)
	}
	const password = "s3cret-basic-pw"
	writeTree(t, pwDir, map[string]string{"htpasswd": "herald:{PLAIN}" + password + "\n"})
	port := harness.FreePort(t)
	cfg := filepath.Join(t.TempDir(), "nginx.conf")
	writeTree(t, filepath.Dir(cfg), map[string]string{"nginx.conf": fmt.Sprintf(`worker_processes 1;
events { worker_connections 256; }
http {
%s
  server {
    listen 127.0.0.1:%d;
    location / {
      auth_basic "consul";
      auth_basic_user_file %s;
      proxy_pass http://%s;
      proxy_read_timeout 600s;
    }
  }
}
`, harness.NginxHTTPDefaults(), port, filepath.Join(pwDir, "htpasswd"), srv.Addr)})
	harness.StartNginx(t, cfg)
	node := fmt.Sprintf("127.0.0.1:%d", port)

	confdir, dest, confd := confdSetup(t)
	runConfd(t, confd, dest, nil, "-onetime", "-backend", "consul", "-node", node, "-basic-auth", "-username", "herald", "-password", password, "-confdir", confdir)

	os.Remove(dest)
	out, err := exec.Command(confd, "-onetime", "-backend", "consul", "-node", node, "-username", "herald", "-password", password, "-confdir", confdir).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "401") || !strings.Contains(string(out), "-username/-password ignored") {
		t.Fatalf("without -basic-auth: %v\n%s", err, out)
	}
	if strings.Contains(string(out), password) {
		t.Fatalf("the password is in the output:\n%s", out)
	}
}
