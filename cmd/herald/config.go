package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	iofs "io/fs"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/resources"
	"github.com/heraldhq/herald/template/regfile"
)

// Options are herald's global settings. Each comes from, in order of precedence: a flag,
// a HERALD_* environment variable, herald.toml, the default.
type Options struct {
	Config        string
	ConfDir       string
	Backend       string
	Prefix        string
	PrefixMode    string
	LogLevel      string
	LogFormat     string
	Timeout       time.Duration
	DryRun        bool
	SyncOnly      bool
	SpareFiles    bool
	KeepStageFile bool
	CheckTimeout  time.Duration
	ReloadTimeout time.Duration
	RenderTimeout time.Duration

	KeepCredentialEnv bool

	Username        string
	Password        string
	PasswordFile    string
	ConsulToken     string
	ConsulTokenFile string
	TLSCA           string
	TLSCert         string
	TLSKey          string
	TLSServerName   string

	ServicesRoot   string
	ServicesLayout string
	SessionTimeout time.Duration
	ConsulWait     time.Duration

	Interval     time.Duration
	Wait         string
	MinInstances string
	MaxDrop      string
	DropHold     time.Duration
	Listen       string
	Pprof        bool

	// Not options: what the file held beyond them (register tables).
	file fileConfig
}

// option describes one setting: its flag name (also the herald.toml key, with '-' as
// '_', and the HERALD_ variable, upper-cased), confd's spellings, and where it lands.
type option struct {
	name    string
	aliases []string
	usage   string
	secret  bool
	// credential: its variables are removed from herald's environment once read, so
	// commands, children, getenv and env:// never see them (see dropCredentialEnv).
	credential bool
	extEnv     []string // other variables honoured after HERALD_*, e.g. CONSUL_HTTP_TOKEN
	bind       func(fs *flag.FlagSet, name string)

	// For a subcommand's own options only (see ownflags.go):
	noEnv bool   // no HERALD_<NAME> variable
	list  bool   // repeatable; HERALD_<NAME> is comma-separated
	def   string // the default help shows, when the bound flag's is not it
}

func (o *Options) table() []option {
	str, dur, boolean := strOpt, durOpt, boolOpt
	choice := func(p *string, def string, allowed ...string) func(*flag.FlagSet, string) {
		return func(fs *flag.FlagSet, n string) {
			*p = def
			fs.Func(n, "", func(v string) error {
				if !slices.Contains(allowed, v) {
					return fmt.Errorf("want %s", strings.Join(allowed, " or "))
				}
				*p = v
				return nil
			})
		}
	}
	return []option{
		{name: "config", usage: "herald.toml to read (default /etc/herald/herald.toml when it exists)", bind: str(&o.Config, "")},
		{name: "confdir", usage: "directory holding conf.d/ and templates/", bind: str(&o.ConfDir, "/etc/herald")},
		{name: "backend", usage: "registry URL: etcd://h:2379,h2:2379, etcds://, zookeeper://h:2181/chroot, zookeepers://, consul://h:8500?dc=x, consuls://, file://data.yaml, env://", bind: str(&o.Backend, "")},
		{name: "prefix", usage: "global key prefix, joined before each resource's own prefix (see --prefix-mode)", bind: str(&o.Prefix, "")},
		{name: "prefix-mode", usage: "join (default): --prefix goes before a resource's own prefix; replace: a non-empty --prefix replaces it, as in confd (herald confd sets replace)", bind: choice(&o.PrefixMode, "join", "join", "replace")},
		{name: "log-level", aliases: []string{"log_level"}, usage: "debug, info, warn or error", bind: str(&o.LogLevel, "info")},
		{name: "log-format", usage: "text or json", bind: str(&o.LogFormat, "text")},
		{name: "timeout", usage: "how long to wait for the registry before giving up (render, get, exec start)", bind: dur(&o.Timeout, 10*time.Second)},
		{name: "dry-run", aliases: []string{"noop"}, usage: "print a unified diff of what would change; write and run nothing", bind: boolean(&o.DryRun)},
		{name: "sync-only", aliases: []string{"sync_only"}, usage: "write files but run no check_cmd or reload_cmd", bind: boolean(&o.SyncOnly)},
		{name: "keep-stage-file", aliases: []string{"keep_stage_file"}, usage: "keep the stage file when check_cmd fails", bind: boolean(&o.KeepStageFile)},
		{name: "spare-files", usage: "default of every resource's spare_file (keep dest's previous inode beside it and rewrite it at the next change; Linux); a resource's own spare_file wins", bind: boolean(&o.SpareFiles)},
		{name: "check-timeout", usage: "default timeout of check_cmd", bind: dur(&o.CheckTimeout, 60*time.Second)},
		{name: "reload-timeout", usage: "default timeout of reload_cmd", bind: dur(&o.ReloadTimeout, 60*time.Second)},
		{name: "render-timeout", usage: "bound of one template execution; a resource's render_timeout overrides it", bind: dur(&o.RenderTimeout, resources.DefaultRenderTimeout)},
		{name: "username", usage: "etcd user; Consul: HTTP basic auth user (for a proxy in front of the agent)", bind: str(&o.Username, "")},
		{name: "password", credential: true, usage: "etcd password; ZooKeeper digest password; Consul: HTTP basic auth password (on the command line it shows in ps: prefer --password-file)", secret: true, bind: str(&o.Password, "")},
		{name: "password-file", credential: true, usage: "read the password from this file (its first line), so it never shows in ps or the environment", bind: str(&o.PasswordFile, "")},
		{name: "consul-token", credential: true, usage: "Consul ACL token (also CONSUL_HTTP_TOKEN; on the command line it shows in ps: prefer --consul-token-file)", secret: true, extEnv: []string{"CONSUL_HTTP_TOKEN"}, bind: str(&o.ConsulToken, "")},
		{name: "consul-token-file", credential: true, usage: "read the Consul ACL token from this file (also CONSUL_HTTP_TOKEN_FILE)", extEnv: []string{"CONSUL_HTTP_TOKEN_FILE"}, bind: str(&o.ConsulTokenFile, "")},
		{name: "keep-credential-env", usage: "leave herald's credential variables (HERALD_PASSWORD, HERALD_CONSUL_TOKEN, CONSUL_HTTP_TOKEN, their _FILE forms, HERALD_TLS_KEY) in the environment of check/reload commands, exec's child, getenv and env://; by default herald removes them", bind: boolean(&o.KeepCredentialEnv)},
		{name: "tls-ca", aliases: []string{"client-ca-keys"}, usage: "CA bundle to verify the registry", bind: str(&o.TLSCA, "")},
		{name: "tls-cert", aliases: []string{"client-cert"}, usage: "client certificate", bind: str(&o.TLSCert, "")},
		{name: "tls-key", credential: true, aliases: []string{"client-key"}, usage: "client key", bind: str(&o.TLSKey, "")},
		{name: "tls-server-name", usage: "server name to verify, when it differs from the host dialled", bind: str(&o.TLSServerName, "")},
		{name: "services-root", usage: "where etcd and ZooKeeper keep service instances", bind: str(&o.ServicesRoot, "/services")},
		{name: "services-layout", usage: "what the levels under --services-root mean, e.g. {name}/{dc}/{id} or /services/{name}/{dc}/{id}; several patterns comma-separated (default {name}/{id})", bind: str(&o.ServicesLayout, "")},
		{name: "session-timeout", usage: "ZooKeeper session timeout", bind: dur(&o.SessionTimeout, 10*time.Second)},
		{name: "consul-wait", usage: "Consul blocking query wait", bind: dur(&o.ConsulWait, 5*time.Minute)},
		{name: "interval", usage: "watch: also re-read everything this often (0: only watch)", bind: dur(&o.Interval, 0)},
		{name: "wait", usage: "watch: default quiescence min[:max], e.g. 2s:10s", bind: str(&o.Wait, "")},
		{name: "min-instances", usage: "watch: hold back a render whose service list falls below this many instances (0: off)", bind: str(&o.MinInstances, "1")},
		{name: "max-drop", usage: "watch: hold back a render whose service list loses more than this share at once (100%: off)", bind: str(&o.MaxDrop, "50%")},
		{name: "drop-hold", usage: "watch: how long a held-back smaller service list must persist before it is written", bind: dur(&o.DropHold, 30*time.Second)},
		{name: "listen", usage: "watch: serve /healthz and /metrics on this address, e.g. 127.0.0.1:9100", bind: str(&o.Listen, "")},
		{name: "pprof", usage: "watch: also serve Go profiles under /debug/pprof/ on --listen (for bug reports)", bind: boolean(&o.Pprof)},
	}
}

func envName(opt string) string {
	return "HERALD_" + strings.ToUpper(strings.ReplaceAll(opt, "-", "_"))
}

// fileConfig is herald.toml: every option by its name with '_', plus register tables.
type fileConfig struct {
	raw      []byte
	values   map[string]any
	Register []RegisterConfig
}

// bindOptions defines the global flags (and their confd aliases) on fs, except those
// named in skip (a command that gives the name its own meaning), and returns them.
func (o *Options) bindOptions(fs *flag.FlagSet, skip ...string) []option {
	var tbl []option
	for _, opt := range o.table() {
		if !slices.Contains(skip, opt.name) {
			tbl = append(tbl, opt)
		}
	}
	for _, opt := range tbl {
		opt.bind(fs, opt.name)
		f := fs.Lookup(opt.name)
		f.Usage = opt.usage
		for _, a := range opt.aliases {
			fs.Var(f.Value, a, "alias of --"+opt.name)
		}
	}
	return tbl
}

// resolve fills every option not given as a flag from the environment, then herald.toml.
func (o *Options) resolve(fs *flag.FlagSet, tbl []option, env func(string) (string, bool)) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	isSet := func(opt option) bool {
		if set[opt.name] {
			return true
		}
		for _, a := range opt.aliases {
			if set[a] {
				return true
			}
		}
		return false
	}
	fromEnv := map[string]bool{}
	fromFile := map[string]bool{}
	rank := func(name string) int {
		for _, opt := range tbl {
			if opt.name == name {
				switch {
				case isSet(opt):
					return 3
				case fromEnv[name]:
					return 2
				case fromFile[name]:
					return 1
				}
			}
		}
		return 0
	}
	for _, opt := range tbl {
		if isSet(opt) {
			continue
		}
		for _, name := range append([]string{envName(opt.name)}, opt.extEnv...) {
			if v, ok := env(name); ok {
				if err := fs.Set(opt.name, v); err != nil {
					return fmt.Errorf("%s: %w", name, badValue(v, err, opt.secret))
				}
				fromEnv[opt.name] = true
				break
			}
		}
	}
	path, explicit := o.Config, o.Config != ""
	if !explicit {
		path = "/etc/herald/herald.toml"
	}
	// Every option is a valid herald.toml key, even one this command gives another meaning.
	fc, err := readFileConfig(path, o.table())
	if errors.Is(err, iofs.ErrNotExist) && !explicit {
		return o.readSecretFiles(rank)
	}
	if err != nil {
		return err
	}
	o.file = fc
	for _, opt := range tbl {
		key := strings.ReplaceAll(opt.name, "-", "_")
		v, ok := fc.values[key]
		if !ok || isSet(opt) || fromEnv[opt.name] {
			continue
		}
		if err := fs.Set(opt.name, fmt.Sprint(v)); err != nil {
			return fmt.Errorf("%s:%d: %s: %w", path, resources.KeyLine(fc.raw, key), key, badValue(fmt.Sprint(v), err, opt.secret))
		}
		fromFile[opt.name] = true
	}
	return o.readSecretFiles(rank)
}

// resolveOptions is how every command resolves its options: o.resolve from e's
// environment, then herald's credential variables dropped from it.
func (e env) resolveOptions(o *Options, fs *flag.FlagSet, tbl []option) error {
	if err := o.resolve(fs, tbl, e.lookup); err != nil {
		return err
	}
	o.dropCredentialEnv(e.unsetenv)
	return nil
}

// dropCredentialEnv removes herald's own credential variables from its environment once
// they are read (unless --keep-credential-env): everything herald starts inherits its
// environment, and a check command, exec's child, a template's getenv or env:// has no
// business with the registry password. unset is os.Unsetenv (nil in in-process tests).
func (o *Options) dropCredentialEnv(unset func(string) error) {
	if o.KeepCredentialEnv || unset == nil {
		return
	}
	for _, opt := range o.table() {
		if opt.credential {
			for _, name := range append([]string{envName(opt.name)}, opt.extEnv...) {
				unset(name)
			}
		}
	}
}

// readSecretFiles fills --password and --consul-token from their files. Given both
// ways, the one from the stronger source wins (flag, then variable, then herald.toml);
// from the same source the value wins over the file, as Consul does with
// CONSUL_HTTP_TOKEN and CONSUL_HTTP_TOKEN_FILE. rank says where each option came from.
func (o *Options) readSecretFiles(rank func(name string) int) error {
	for _, s := range []struct {
		name, file string
		to         *string
	}{{"password", o.PasswordFile, &o.Password}, {"consul-token", o.ConsulTokenFile, &o.ConsulToken}} {
		if s.file == "" || *s.to != "" && rank(s.name) >= rank(s.name+"-file") {
			continue
		}
		b, err := os.ReadFile(s.file)
		if err != nil {
			return fmt.Errorf("--%s-file: %w", s.name, err)
		}
		// The first line, without its end: files written by echo or an editor end
		// with a newline that is not part of the secret.
		line, _, _ := strings.Cut(string(b), "\n")
		if *s.to = strings.TrimSuffix(line, "\r"); *s.to == "" {
			return fmt.Errorf("--%s-file %s: empty", s.name, s.file)
		}
	}
	return nil
}

// badValue describes a value that did not parse, without echoing secrets.
func badValue(v string, err error, secret bool) error {
	if secret {
		return errors.New("invalid value (not shown: secret)")
	}
	return fmt.Errorf("invalid value %q: %w", v, err)
}

var fileLineRe = regexp.MustCompile(`line (\d+)`)

// decodeTOML reads a TOML file's top-level keys; a syntax error names file and line.
func decodeTOML(path string, raw []byte) (map[string]any, error) {
	var doc map[string]any
	if _, err := toml.Decode(string(raw), &doc); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%s:%d: bad TOML: %s", path, pe.Position.Line, pe.Message)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return doc, nil
}

// maxConfigFile bounds herald.toml: a FIFO or a link to /dev/zero there must not hang or
// exhaust herald (see regfile).
const maxConfigFile = 1 << 20

func readFileConfig(path string, tbl []option) (fileConfig, error) {
	var fc fileConfig
	raw, err := regfile.Read(path, maxConfigFile)
	if errors.Is(err, iofs.ErrNotExist) {
		return fc, err
	}
	if err != nil {
		return fc, fmt.Errorf("%s: %w", path, err)
	}
	doc, err := decodeTOML(path, raw)
	if err != nil {
		return fc, err
	}
	known := map[string]bool{"register": true}
	for _, opt := range tbl {
		known[strings.ReplaceAll(opt.name, "-", "_")] = true
	}
	var errs []error
	fc.raw = raw
	fc.values = map[string]any{}
	for k, v := range doc {
		if !known[k] {
			errs = append(errs, fmt.Errorf("%s:%d: unknown key %q", path, resources.KeyLine(raw, k), k))
			continue
		}
		if k != "register" {
			fc.values[k] = v
		}
	}
	if _, ok := doc["register"]; ok {
		var regs struct {
			Register []RegisterConfig `toml:"register"`
		}
		md, err := toml.Decode(string(raw), &regs)
		if err != nil {
			return fc, fmt.Errorf("%s: register: %w", path, err)
		}
		for _, k := range md.Undecoded() {
			if len(k) > 1 && k[0] == "register" {
				errs = append(errs, fmt.Errorf("%s:%d: unknown key %q", path, resources.KeyLine(raw, k[len(k)-1]), k.String()))
			}
		}
		fc.Register = regs.Register
	}
	return fc, errors.Join(errs...)
}

// logger builds the slog logger the options ask for.
func (o *Options) logger(w *os.File) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.LogLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", o.LogLevel)
	}
	hopts := &slog.HandlerOptions{Level: lvl}
	switch o.LogFormat {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, hopts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, hopts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", o.LogFormat)
}

// backendConfig turns the options into what backends.open needs.
func (o *Options) backendConfig(log *slog.Logger) (backends.Config, error) {
	cfg := backends.Config{
		URL:            o.Backend,
		Username:       o.Username,
		Password:       o.Password,
		Token:          o.ConsulToken,
		DialTimeout:    min(o.Timeout, 5*time.Second),
		SessionTimeout: o.SessionTimeout,
		ServicesRoot:   o.ServicesRoot,
		ServicesLayout: o.ServicesLayout,
		ConsulWait:     o.ConsulWait,
		Environ:        os.Environ(),
		Logger:         log,
	}
	if _, err := cfg.Layout(); err != nil {
		return cfg, fmt.Errorf("--services-layout: %w", err)
	}
	if o.Backend == "" {
		return cfg, errors.New("no backend: pass --backend (e.g. file://data.yaml or etcd://127.0.0.1:2379), set HERALD_BACKEND, or put backend in herald.toml")
	}
	if o.TLSCA != "" || o.TLSCert != "" || o.TLSKey != "" || o.TLSServerName != "" {
		t := &tls.Config{ServerName: o.TLSServerName, MinVersion: tls.VersionTLS12}
		if o.TLSCA != "" {
			pem, err := os.ReadFile(o.TLSCA)
			if err != nil {
				return cfg, fmt.Errorf("--tls-ca: %w", err)
			}
			t.RootCAs = x509.NewCertPool()
			if !t.RootCAs.AppendCertsFromPEM(pem) {
				return cfg, fmt.Errorf("--tls-ca %s: no PEM certificate in it", o.TLSCA)
			}
		}
		if (o.TLSCert == "") != (o.TLSKey == "") {
			return cfg, errors.New("--tls-cert and --tls-key go together")
		}
		if o.TLSCert != "" {
			c, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
			if err != nil {
				return cfg, fmt.Errorf("--tls-cert/--tls-key: %w", err)
			}
			t.Certificates = []tls.Certificate{c}
		}
		cfg.TLS = t
	}
	return cfg, nil
}

// guard is the runner's empty-drop guard from --min-instances, --max-drop, --drop-hold.
func (o *Options) guard() (*resources.Guard, error) {
	n, err := strconv.Atoi(strings.TrimSpace(o.MinInstances))
	if err != nil || n < 0 {
		return nil, fmt.Errorf("--min-instances %q: want a whole number, 0 or more", o.MinInstances)
	}
	share, err := resources.ParseShare(o.MaxDrop)
	if err != nil {
		return nil, fmt.Errorf("--max-drop: %w", err)
	}
	if o.DropHold < 0 {
		return nil, fmt.Errorf("--drop-hold %s is negative", o.DropHold)
	}
	return &resources.Guard{MinInstances: n, MaxDrop: share, Hold: o.DropHold}, nil
}

// listFlag is a repeatable flag (--tag a --tag b, --prefix /a --prefix /b): every
// subcommand's list flags use it.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }
