package main

import (
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Issue 17: URLs with a password in any shape are refused by every command without
// showing any of it (nor, for a URL without a scheme, of the rest).
func TestURLPasswordNeverShown(t *testing.T) {
	dir := writeFiles(t, map[string]string{"conf.d/a.toml": "[template]\nsrc = \"a.tmpl\"\ndest = \"out\"\n", "templates/a.tmpl": "x"})
	for _, c := range []struct{ url, secret string }{
		{"etcd://root:pa/ss@host:2379", "pa/ss"},
		{"etcd://root:p@ss@h", "p@ss"},
		{"root:s3cret@h:2379", "s3cret"},
		{"file://user:pw-Secret@host/data.yaml", "pw-Secret"},
		{"consul://tok:en?x@h", "en?x"},
	} {
		for _, args := range [][]string{
			{"render", "--confdir", dir},
			{"get", "/x"},
			{"exec", "--prefix", "/x", "--", "true"},
			{"register", "--service", "web", "--address", "h", "--port", "1"},
		} {
			full := append([]string{args[0], "--backend", c.url}, args[1:]...)
			code, stdout, stderr := herald(t, nil, full...)
			if code == 0 || strings.Contains(stdout+stderr, c.secret) || !strings.Contains(stderr, "REDACTED@") {
				t.Errorf("%s %s: exit %d, output %q %q; want a failure naming the URL as REDACTED@..., without %q", args[0], c.url, code, stdout, stderr, c.secret)
			}
		}
	}
}

func TestPasswordAndTokenFiles(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	tok := filepath.Join(dir, "tok")
	os.WriteFile(pw, []byte("from-file\n"), 0o600)
	os.WriteFile(tok, []byte("token-from-file\r\nignored\n"), 0o600)
	resolve := func(envv map[string]string, args ...string) (Options, error) {
		var o Options
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		tbl := o.bindOptions(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		err := o.resolve(fs, tbl, func(k string) (string, bool) { v, ok := envv[k]; return v, ok })
		return o, err
	}
	for _, c := range []struct {
		env  map[string]string
		args []string
	}{
		{nil, []string{"--password-file", pw, "--consul-token-file", tok}},
		{map[string]string{"HERALD_PASSWORD_FILE": pw, "HERALD_CONSUL_TOKEN_FILE": tok}, nil},
		{map[string]string{"HERALD_PASSWORD_FILE": pw, "CONSUL_HTTP_TOKEN_FILE": tok}, nil},
	} {
		o, err := resolve(c.env, append(c.args, "--config", filepath.Join(dir, "none.toml"))...)
		if err == nil {
			t.Fatalf("explicit missing --config: no error")
		}
		o, err = resolve(c.env, c.args...)
		if err != nil || o.Password != "from-file" || o.ConsulToken != "token-from-file" {
			t.Errorf("%v %v: password %q token %q, %v", c.env, c.args, o.Password, o.ConsulToken, err)
		}
	}
	// Both: the stronger source wins; from one source, the value.
	for _, c := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{"HERALD_PASSWORD": "from-env"}, []string{"--password-file", pw}, "from-file"},
		{map[string]string{"HERALD_PASSWORD_FILE": pw}, []string{"--password", "from-flag"}, "from-flag"},
		{map[string]string{"HERALD_PASSWORD_FILE": pw, "HERALD_PASSWORD": "from-env"}, nil, "from-env"},
		{nil, []string{"--password-file", pw, "--password", "from-flag"}, "from-flag"},
	} {
		if o, err := resolve(c.env, c.args...); err != nil || o.Password != c.want {
			t.Errorf("%v %v: password %q, %v; want %q", c.env, c.args, o.Password, err, c.want)
		}
	}
	if _, err := resolve(nil, "--password-file", filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "--password-file") {
		t.Errorf("missing file: %v", err)
	}
	// --help says to prefer the files.
	_, _, stderr := herald(t, nil, "render", "-h")
	for _, w := range []string{"--password-file", "--consul-token-file", "shows in ps", "[HERALD_PASSWORD_FILE]"} {
		if !strings.Contains(stderr, w) {
			t.Errorf("render -h lacks %q", w)
		}
	}
}

func TestDropCredentialEnv(t *testing.T) {
	var dropped []string
	unset := func(n string) error { dropped = append(dropped, n); return nil }
	(&Options{}).dropCredentialEnv(unset)
	want := []string{"HERALD_PASSWORD", "HERALD_PASSWORD_FILE", "HERALD_CONSUL_TOKEN", "CONSUL_HTTP_TOKEN", "HERALD_CONSUL_TOKEN_FILE", "CONSUL_HTTP_TOKEN_FILE", "HERALD_TLS_KEY"}
	if strings.Join(dropped, " ") != strings.Join(want, " ") {
		t.Errorf("dropped %v, want %v", dropped, want)
	}
	dropped = nil
	(&Options{KeepCredentialEnv: true}).dropCredentialEnv(unset)
	if dropped != nil {
		t.Errorf("--keep-credential-env dropped %v", dropped)
	}
}

// --listen warns unless only this host can connect (0.0.0.0 and :: reach every
// interface).
func TestListenWarnsUnlessLoopback(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:9100": true, "[::1]:9100": true, "127.1.2.3:1": true, "0.0.0.0:9100": false, "[::]:9100": false, "10.0.0.1:9100": false} {
		a, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := isLoopback(a); got != want {
			t.Errorf("isLoopback(%s) = %v, want %v", addr, got, want)
		}
	}
}
