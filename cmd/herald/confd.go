package main

// confd's command line. herald takes it when its binary is called confd (a symlink or a
// copy) and as "herald confd ...": confd 0.16/0.17's flags, its confd.toml and its
// CONFD_* variables, with confd's meanings and defaults. They are translated into
// herald's own options (the table in config.go) and a command (render or watch), so
// that everything after the translation is herald's; nothing here forks the engine.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"maps"
	"math"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/resources"
	"github.com/heraldhq/herald/template/regfile"
)

// confdConfig holds confd's settings, by confd's flag names.
type confdConfig struct {
	configFile    string
	backend       string
	nodes         listFlag
	files         listFlag
	filter        string
	scheme        string
	prefix        string
	confDir       string
	interval      int
	logLevel      string
	noop          bool
	onetime       bool
	watch         bool
	syncOnly      bool
	keepStageFile bool
	clientCert    string
	clientKey     string
	clientCAKeys  string
	insecure      bool
	username      string
	password      string
	basicAuth     bool
	authToken     string
	srvDomain     string
	srvRecord     string
	version       bool
	etcdctlPeers  string // confd's etcd backend takes its default nodes from ETCDCTL_PEERS
	// confd's flags for backends herald does not have: an error when given.
	unsupported map[string]*string
}

// unsupportedConfdFlags are confd flags that only mean something to a backend herald
// does not support, with that backend.
var unsupportedConfdFlags = map[string]string{
	"table":          "DynamoDB's table",
	"separator":      "Redis's key separator",
	"auth-type":      "Vault's auth method",
	"app-id":         "Vault's app-id",
	"user-id":        "Vault's user-id",
	"role-id":        "Vault's role-id",
	"secret-id":      "Vault's secret-id",
	"path":           "Vault's auth mount path",
	"secret-keyring": "the keyring of confd's crypt functions (cget, cgets, ...)",
}

// unsupportedBackends are confd backends herald does not read.
var unsupportedBackends = []string{"vault", "redis", "dynamodb", "ssm", "rancher", "stackengine"}

// flags defines confd's flags, with confd's defaults, on a new flag set. They stay out
// of the option tables (config.go, ownflags.go): they emulate confd 0.16's command line,
// single-dash names, defaults and all, and have no HERALD_* variable or herald.toml key;
// confd's own CONFD_* variables and confd.toml are read by confd's rules instead.
func (c *confdConfig) flags() *flag.FlagSet {
	fs := flag.NewFlagSet("confd", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // an error names the flag; no usage dump
	fs.Usage = func() {}
	fs.StringVar(&c.configFile, "config-file", "/etc/confd/confd.toml", "confd.toml to read (skipped when the default is missing)")
	fs.StringVar(&c.backend, "backend", "etcd", "etcd, etcdv3 (both etcd v3 in herald), consul, zookeeper, file or env")
	fs.Var(&c.nodes, "node", "a backend node, host:port or a URL (repeatable)")
	fs.Var(&c.files, "file", "a YAML/JSON file or directory (repeatable; -backend file)")
	fs.StringVar(&c.filter, "filter", "*", "which files of a -file directory to read, recursively (-backend file)")
	fs.StringVar(&c.scheme, "scheme", "http", "http or https: how to reach SRV nodes and Consul")
	fs.StringVar(&c.prefix, "prefix", "", "key path prefix")
	fs.StringVar(&c.confDir, "confdir", "/etc/confd", "directory holding conf.d/ and templates/")
	fs.IntVar(&c.interval, "interval", 600, "seconds between re-reads when neither -onetime nor -watch")
	fs.StringVar(&c.logLevel, "log-level", "", "debug, info, warn(ing), error, fatal or panic")
	fs.BoolVar(&c.noop, "noop", false, "show pending changes, write nothing")
	fs.BoolVar(&c.onetime, "onetime", false, "render once and exit")
	fs.BoolVar(&c.watch, "watch", false, "watch the backend for changes")
	fs.BoolVar(&c.syncOnly, "sync-only", false, "write files but run no check_cmd or reload_cmd")
	fs.BoolVar(&c.keepStageFile, "keep-stage-file", false, "keep the stage file when check_cmd fails")
	fs.StringVar(&c.clientCert, "client-cert", "", "client certificate")
	fs.StringVar(&c.clientKey, "client-key", "", "client key")
	fs.StringVar(&c.clientCAKeys, "client-ca-keys", "", "CA bundle to verify the backend")
	fs.BoolVar(&c.insecure, "client-insecure", false, "not supported: herald always verifies certificates")
	fs.StringVar(&c.username, "username", "", "etcd user, Consul basic auth user (with -basic-auth)")
	fs.StringVar(&c.password, "password", "", "its password (with -basic-auth)")
	fs.BoolVar(&c.basicAuth, "basic-auth", false, "authenticate with -username/-password (etcd, consul)")
	fs.StringVar(&c.authToken, "auth-token", "", "Consul ACL token")
	fs.StringVar(&c.srvDomain, "srv-domain", "", "look the nodes up as the SRV record _<backend>._tcp.<domain>")
	fs.StringVar(&c.srvRecord, "srv-record", "", "look the nodes up as this SRV record")
	fs.BoolVar(&c.version, "version", false, "print the version and exit")
	c.unsupported = map[string]*string{}
	for name, what := range unsupportedConfdFlags {
		c.unsupported[name] = fs.String(name, "", "not supported: "+what)
	}
	return fs
}

// parseConfd reads confd's settings the way confd does: defaults, then confd.toml, then
// CONFD_CLIENT_* for the TLS files still unset; flags beat all of them (confd lets
// confd.toml override its flags; herald does not). It returns the settings and the
// warnings (confd.toml keys it does not know).
func parseConfd(args []string, lookup func(string) (string, bool)) (*confdConfig, []string, error) {
	c := &confdConfig{}
	fs := c.flags()
	if err := fs.Parse(args); err != nil {
		return nil, nil, confdFlagError(err)
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected argument %q: confd takes only flags", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var warnings []string
	if !c.version {
		w, err := c.applyFile(fs, set)
		if err != nil {
			return nil, nil, err
		}
		warnings = w
	}
	for _, v := range []struct {
		name string
		to   *string
	}{{"CONFD_CLIENT_CAKEYS", &c.clientCAKeys}, {"CONFD_CLIENT_CERT", &c.clientCert}, {"CONFD_CLIENT_KEY", &c.clientKey}} {
		if s, ok := lookup(v.name); ok && s != "" && *v.to == "" {
			*v.to = s
		}
	}
	c.etcdctlPeers, _ = lookup("ETCDCTL_PEERS")
	return c, warnings, nil
}

func confdFlagError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	// flag's own wording names the flag: "flag provided but not defined: -foo".
	return fmt.Errorf("%w (herald takes confd 0.16's flags; see \"Coming from confd\" in herald's README)", err)
}

// confdKey maps confd.toml's spelling of a key onto the flag it sets: confd's TOML tags
// mix '-' and '_' (log-level, sync-only, client_cert) and its untagged fields match any
// case, so both separators and any case are accepted.
func confdKey(k string) string {
	n := strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(k))
	if n == "nodes" {
		return "node"
	}
	return n
}

// applyFile sets the flags confd.toml gives, except those set on the command line. A
// missing file is skipped when it is the default (as confd does) and an error when named
// with -config-file.
func (c *confdConfig) applyFile(fs *flag.FlagSet, set map[string]bool) ([]string, error) {
	raw, err := regfile.Read(c.configFile, maxConfigFile) // herald.toml's guard and bound
	if errors.Is(err, iofs.ErrNotExist) && !set["config-file"] {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("-config-file %s: %w", c.configFile, err)
	}
	return applyConfdTOML(fs, set, c.configFile, raw)
}

// applyConfdTOML is applyFile's parser, apart so that it can be fuzzed.
func applyConfdTOML(fs *flag.FlagSet, set map[string]bool, path string, raw []byte) ([]string, error) {
	doc, err := decodeTOML(path, raw)
	if err != nil {
		return nil, err
	}
	byKey := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) { byKey[confdKey(f.Name)] = f.Name })
	var warnings []string
	for _, k := range slices.Sorted(maps.Keys(doc)) {
		name, ok := byKey[confdKey(k)]
		if !ok || name == "config-file" || name == "version" {
			// confd ignores keys it does not know (old files hold etcd_nodes, [confd]).
			warnings = append(warnings, fmt.Sprintf("%s:%d: unknown key %q ignored", path, resources.KeyLine(raw, k), k))
			continue
		}
		if set[name] {
			continue
		}
		vals := []any{doc[k]}
		if list, isList := doc[k].([]any); isList {
			vals = list
		}
		for _, v := range vals {
			if _, nested := v.(map[string]any); nested {
				return nil, fmt.Errorf("%s:%d: %s: want a value, not a table", path, resources.KeyLine(raw, k), k)
			}
			if err := fs.Set(name, fmt.Sprint(v)); err != nil {
				return nil, fmt.Errorf("%s:%d: %s: %w", path, resources.KeyLine(raw, k), k, badValue(fmt.Sprint(v), err, name == "password" || name == "auth-token"))
			}
		}
	}
	return warnings, nil
}

// confdPlan is what a confd command line means in herald's terms.
type confdPlan struct {
	command  string      // render or watch
	options  [][2]string // herald option name and value, in order
	warnings []string
}

func (p *confdPlan) set(name, value string) { p.options = append(p.options, [2]string{name, value}) }

// translate turns confd's settings into herald options. lookupSRV resolves -srv-record.
func (c *confdConfig) translate(ctx context.Context, lookupSRV func(context.Context, string) ([]*net.SRV, error)) (*confdPlan, error) {
	p := &confdPlan{}
	for _, name := range slices.Sorted(maps.Keys(c.unsupported)) {
		if *c.unsupported[name] != "" {
			return nil, fmt.Errorf("-%s is %s, which herald does not support", name, unsupportedConfdFlags[name])
		}
	}
	if c.insecure {
		return nil, errors.New("-client-insecure is not supported: herald always verifies the backend's certificate; pass its CA with -client-ca-keys")
	}
	backend, err := c.backendURL(ctx, lookupSRV)
	if err != nil {
		return nil, err
	}
	p.set("backend", backend)
	p.set("confdir", c.confDir)
	if c.prefix != "" {
		p.set("prefix", c.prefix)
	}
	p.set("prefix-mode", "replace") // confd: -prefix replaces a resource's own prefix
	lvl, err := confdLogLevel(c.logLevel)
	if err != nil {
		return nil, err
	}
	p.set("log-level", lvl)
	for _, b := range []struct {
		name string
		on   bool
	}{{"dry-run", c.noop}, {"sync-only", c.syncOnly}, {"keep-stage-file", c.keepStageFile}} {
		if b.on {
			p.set(b.name, "true")
		}
	}
	for _, f := range [][2]string{{"tls-cert", c.clientCert}, {"tls-key", c.clientKey}, {"tls-ca", c.clientCAKeys}} {
		if f[1] != "" {
			p.set(f[0], f[1])
		}
	}
	c.credentials(p)
	switch {
	case c.onetime: // confd: -onetime wins over -watch
		p.command = "render"
	case c.watch:
		p.command = "watch"
	default: // confd polls every -interval; herald watches and re-reads that often too
		if c.interval <= 0 || int64(c.interval) > math.MaxInt64/int64(time.Second) { // int64: 32-bit platforms
			return nil, fmt.Errorf("-interval %d: want a positive number of seconds", c.interval)
		}
		p.command = "watch"
		p.set("interval", (time.Duration(c.interval) * time.Second).String())
	}
	return p, nil
}

// credentials maps -username/-password/-basic-auth/-auth-token. confd's etcd and Consul
// clients use the username and password only with -basic-auth, and so does herald.
func (c *confdConfig) credentials(p *confdPlan) {
	kind := c.backendKind()
	if c.basicAuth && (kind == "etcd" || kind == "consul") {
		if c.username != "" {
			p.set("username", c.username)
		}
		if c.password != "" {
			p.set("password", c.password)
		}
	} else if c.username != "" || c.password != "" {
		p.warnings = append(p.warnings, fmt.Sprintf("-username/-password ignored: confd uses them only with -basic-auth and -backend etcd, etcdv3 or consul (backend %s)", c.backend))
	}
	if c.authToken != "" {
		if kind == "consul" {
			p.set("consul-token", c.authToken)
		} else {
			p.warnings = append(p.warnings, fmt.Sprintf("-auth-token ignored: herald uses it only as Consul's ACL token (backend %s)", c.backend))
		}
	}
}

func (c *confdConfig) backendKind() string {
	if c.backend == "etcdv3" {
		return "etcd"
	}
	return c.backend
}

// confdDefaultNodes are confd's defaults, except etcd's: confd's etcd backend speaks
// the v2 API on the legacy port 4001; herald's speaks v3 on etcd's client port.
var confdDefaultNodes = map[string]string{"etcd": "127.0.0.1:2379", "consul": "127.0.0.1:8500", "zookeeper": "127.0.0.1:2181"}

// backendURL builds herald's --backend from -backend, -node, -scheme, -srv-* and -file.
func (c *confdConfig) backendURL(ctx context.Context, lookupSRV func(context.Context, string) ([]*net.SRV, error)) (string, error) {
	kind := c.backendKind()
	switch kind {
	case "env":
		return "env://", nil
	case "file":
		if len(c.files) == 0 {
			return "", errors.New("-backend file needs -file (a YAML file or a directory; repeatable)")
		}
		for _, f := range c.files {
			if strings.TrimSpace(f) == "" {
				return "", errors.New("-file: empty path")
			}
			if strings.ContainsAny(f, ",?") {
				return "", fmt.Errorf("-file %q: a comma or question mark in a path is not supported", f)
			}
		}
		// confd walks -file directories recursively for files matching -filter ("*").
		filter := c.filter
		if filter == "" {
			filter = "*"
		}
		if _, err := filepath.Match(filter, ""); err != nil {
			return "", fmt.Errorf("-filter %q: %w", filter, err)
		}
		return "file://" + strings.Join(c.files, ",") + "?" + url.Values{"filter": {filter}}.Encode(), nil
	case "etcd", "consul", "zookeeper":
	default:
		if slices.Contains(unsupportedBackends, c.backend) {
			return "", fmt.Errorf("-backend %s is not supported by herald (it reads etcd, etcdv3, consul, zookeeper, file and env)", c.backend)
		}
		return "", fmt.Errorf("-backend %q: unknown backend (want etcd, etcdv3, consul, zookeeper, file or env)", c.backend)
	}
	nodes := c.nodes
	if c.srvDomain != "" && c.srvRecord == "" {
		c.srvRecord = fmt.Sprintf("_%s._tcp.%s.", c.backend, c.srvDomain)
	}
	if c.srvRecord != "" {
		addrs, err := lookupSRV(ctx, c.srvRecord)
		if err != nil {
			return "", fmt.Errorf("-srv-record %s: %w", c.srvRecord, err)
		}
		nodes = nil
		for _, a := range addrs {
			nodes = append(nodes, net.JoinHostPort(strings.TrimSuffix(a.Target, "."), strconv.Itoa(int(a.Port))))
		}
		if len(nodes) == 0 {
			return "", fmt.Errorf("-srv-record %s: no records", c.srvRecord)
		}
	}
	if len(nodes) == 0 {
		nodes = []string{confdDefaultNodes[kind]}
		if c.backend == "etcd" && c.etcdctlPeers != "" {
			nodes = strings.Split(c.etcdctlPeers, ",")
		}
	}
	u, err := nodesURL(kind, c.scheme, nodes)
	if err != nil {
		return "", err
	}
	// Whatever nodesURL lets through must be a URL herald itself accepts, or the user
	// would meet the error later and in herald's terms instead of confd's -node.
	if _, err := backends.ParseURL(u); err != nil {
		return "", fmt.Errorf("-node: %w", err)
	}
	return u, nil
}

var schemeRe = regexp.MustCompile(`^([a-zA-Z][a-zA-Z0-9+.-]*)://`)

// nodesURL joins nodes (host:port or http(s)://host:port) into one herald URL. TLS is
// on when the nodes say https, or -scheme does and the nodes say nothing.
func nodesURL(kind, scheme string, nodes []string) (string, error) {
	if scheme != "http" && scheme != "https" {
		return "", fmt.Errorf("-scheme %q: want http or https", scheme)
	}
	tls := map[bool]bool{}
	hosts := make([]string, 0, len(nodes))
	for _, n := range nodes {
		n = strings.TrimSpace(n)
		s := scheme
		if m := schemeRe.FindStringSubmatch(n); m != nil {
			s = strings.ToLower(m[1])
			n = n[len(m[0]):]
		}
		if s != "http" && s != "https" {
			return "", fmt.Errorf("-node %q: want host:port, http://host:port or https://host:port", n)
		}
		n = strings.TrimSuffix(n, "/")
		if n == "" || strings.ContainsAny(n, "/@,?") {
			return "", fmt.Errorf("-node %q: want host:port, http://host:port or https://host:port", n)
		}
		tls[s == "https"] = true
		hosts = append(hosts, n)
	}
	if len(tls) > 1 {
		return "", errors.New("-node: some nodes are http and some https; herald uses one scheme for all")
	}
	if tls[true] {
		kind += "s"
	}
	return kind + "://" + strings.Join(hosts, ","), nil
}

// confdLogLevel maps logrus's levels, which confd uses, onto herald's.
func confdLogLevel(l string) (string, error) {
	switch strings.ToLower(l) {
	case "", "info":
		return "info", nil
	case "debug", "trace":
		return "debug", nil
	case "warn", "warning":
		return "warn", nil
	case "error", "fatal", "panic":
		return "error", nil
	}
	return "", fmt.Errorf("-log-level %q: want debug, info, warn, error, fatal or panic", l)
}

// runConfd runs a confd command line.
func runConfd(ctx context.Context, e env, args []string) int {
	fail := func(code int, err error) int {
		fmt.Fprintln(e.stderr, "herald confd:", err)
		return code
	}
	c, fileWarnings, err := parseConfd(args, e.lookup)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(e.stdout, "Usage: confd [flags]  (herald running confd's command line; see \"Coming from confd\" in herald's README)")
		fs := (&confdConfig{}).flags()
		fs.SetOutput(e.stdout)
		fs.PrintDefaults()
		return 0
	}
	if err != nil {
		return fail(2, err)
	}
	if c.version {
		fmt.Fprintln(e.stdout, "herald", versionString(), "(confd 0.16 command line)")
		return 0
	}
	lookupSRV := func(ctx context.Context, record string) ([]*net.SRV, error) {
		_, addrs, err := e.resolver().LookupSRV(ctx, "", "", record)
		return addrs, err
	}
	plan, err := c.translate(ctx, lookupSRV)
	if err != nil {
		return fail(2, err)
	}
	var o Options
	fs := flag.NewFlagSet("herald confd", flag.ContinueOnError)
	tbl := o.bindOptions(fs)
	for _, kv := range plan.options {
		if err := fs.Set(kv[0], kv[1]); err != nil {
			return fail(2, fmt.Errorf("%s: %w", kv[0], err))
		}
	}
	// HERALD_* variables and herald.toml still give what confd has no flag for.
	if err := e.resolveOptions(&o, fs, tbl); err != nil {
		return fail(2, err)
	}
	if !o.KeepCredentialEnv && e.unsetenv != nil {
		e.unsetenv("CONFD_CLIENT_KEY") // confd's spelling of HERALD_TLS_KEY, read above
	}
	log, err := o.logger(e.stderr)
	if err != nil {
		return fail(2, err)
	}
	for _, w := range append(fileWarnings, plan.warnings...) {
		log.Warn(w)
	}
	cmd := map[string]func(context.Context, env, *Options, []string) error{"render": cmdRender, "watch": cmdWatch}[plan.command]
	if err := cmd(ctx, e, &o, nil); err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			return fail(2, err)
		}
		return fail(1, err)
	}
	return 0
}
