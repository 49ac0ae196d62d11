//go:build linux

package harness

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// ConsulNodeName is the node name of every harness agent (each is its own one-node
// cluster, so the name never clashes).
const ConsulNodeName = "herald-test"

// Consul is a real `consul agent -dev` (server, in-memory raft) on 127.0.0.1.
type Consul struct {
	Addr   string // "127.0.0.1:PORT": the HTTP API, or the HTTPS API with ConsulTLS
	Proc   *Proc
	Token  string // management token when ACLs are on, else ""
	CAFile string // with ConsulTLS: the CA that signed the agent's certificate

	Scheme     string // "http" or "https"
	Certs      *Certs // with ConsulTLS; Certs.ClientCert/ClientKey are accepted by the agent
	Datacenter string // "dc1"
	Node       string // ConsulNodeName
	ConfigPath string // the agent's JSON configuration
	DNSPort    int    // with ConsulDNS: the DNS interface's port on 127.0.0.1 (UDP and TCP); else 0
	WANAddr    string // serf_wan on 127.0.0.1 when the agent joins other datacenters; else ""
}

// ConsulOption configures StartConsul.
type ConsulOption func(*consulConfig)

type consulConfig struct {
	acl   bool
	certs *Certs
	dc    string   // default dc1
	wan   int      // serf_wan port; 0: WAN off, -1: a free one
	join  []string // WAN addresses to (re)join, each start
	peers []string // datacenters that must be known before the agent counts as ready
	dns   bool
}

// ConsulACL enables ACLs with default policy deny; Consul.Token holds the initial
// management token (also used as the agent token, so the node registers itself).
func ConsulACL() ConsulOption { return func(c *consulConfig) { c.acl = true } }

// ConsulDNS turns the agent's DNS interface on, on a free port on 127.0.0.1
// (Consul.DNSPort); off otherwise, as every port a test does not use.
func ConsulDNS() ConsulOption { return func(c *consulConfig) { c.dns = true } }

// ConsulTLS serves the API over HTTPS only (plain HTTP off) with c's server certificate
// and verify_incoming: clients must present a certificate signed by c's CA.
func ConsulTLS(c *Certs) ConsulOption { return func(cfg *consulConfig) { cfg.certs = c } }

// ConsulWANJoin puts the agent in datacenter dc, its own one-server cluster, joined over
// the WAN to the agents given (each started with a WAN port, as StartConsulPair's); it
// is ready once it lists their datacenters and its own.
func ConsulWANJoin(dc string, to ...*Consul) ConsulOption {
	return func(c *consulConfig) {
		c.dc, c.wan, c.join, c.peers = dc, -1, nil, []string{dc}
		for _, o := range to {
			c.join = append(c.join, o.WANAddr)
			c.peers = append(c.peers, o.Datacenter)
		}
	}
}

// StartConsulPair starts two agents, in datacenters dc1 and dc2, each its own one-server
// cluster, joined over the WAN on loopback (serf_wan on free ports, each told to rejoin
// the other on every start, so a restarted dc2 comes back on its own). It returns once
// each lists both datacenters.
func StartConsulPair(t testing.TB) (dc1, dc2 *Consul) {
	t.Helper()
	w1, w2 := FreePort(t), FreePort(t)
	at := func(p int) []string { return []string{fmt.Sprintf("127.0.0.1:%d", p)} }
	both := []string{"dc1", "dc2"}
	dc1 = StartConsul(t, func(c *consulConfig) { c.dc, c.wan, c.join = "dc1", w1, at(w2) })
	dc2 = StartConsul(t, func(c *consulConfig) { c.dc, c.wan, c.join, c.peers = "dc2", w2, at(w1), both })
	return dc1, dc2
}

// StartConsul starts `consul agent -dev` on loopback with free ports and a data dir in
// t.TempDir(), and waits until it has a leader, the KV endpoint answers and the node is
// in the catalog.
func StartConsul(t testing.TB, opts ...ConsulOption) *Consul {
	t.Helper()
	var cfg consulConfig
	for _, o := range opts {
		o(&cfg)
	}
	bin := Binary(t, "consul")
	begin := time.Now()
	dir := t.TempDir()
	apiPort, serfPort, serverPort := FreePort(t), FreePort(t), FreePort(t)
	if cfg.dc == "" {
		cfg.dc = "dc1"
	}
	c := &Consul{
		Addr:       fmt.Sprintf("127.0.0.1:%d", apiPort),
		Scheme:     "http",
		Datacenter: cfg.dc,
		Node:       ConsulNodeName,
		ConfigPath: filepath.Join(dir, "consul.json"),
	}
	portsCfg := map[string]int{
		"http": apiPort, "https": -1, "dns": -1, "grpc": -1, "grpc_tls": -1,
		"serf_lan": serfPort, "serf_wan": -1, "server": serverPort,
	}
	conf := map[string]any{
		"disable_update_check": true,
		"node_name":            ConsulNodeName,
		"datacenter":           c.Datacenter,
		"bind_addr":            "127.0.0.1",
		"client_addr":          "127.0.0.1",
		"advertise_addr":       "127.0.0.1",
		"data_dir":             filepath.Join(dir, "data"),
		"log_level":            "info",
		"ports":                portsCfg,
	}
	if cfg.dns {
		c.DNSPort = FreePort(t)
		portsCfg["dns"] = c.DNSPort
	}
	if cfg.wan < 0 {
		cfg.wan = FreePort(t)
	}
	if cfg.wan != 0 {
		c.WANAddr = fmt.Sprintf("127.0.0.1:%d", cfg.wan)
		portsCfg["serf_wan"] = cfg.wan
		conf["retry_join_wan"] = cfg.join
		conf["retry_interval_wan"] = "1s"
	}
	if cfg.acl {
		c.Token = uuid(t)
		conf["acl"] = map[string]any{
			"enabled":                  true,
			"default_policy":           "deny",
			"down_policy":              "extend-cache",
			"enable_token_persistence": false,
			"tokens": map[string]any{
				"initial_management": c.Token,
				"agent":              c.Token,
			},
		}
	}
	if cc := cfg.certs; cc != nil {
		c.Scheme, c.Certs, c.CAFile = "https", cc, cc.CAFile
		portsCfg["https"], portsCfg["http"] = apiPort, -1
		conf["tls"] = map[string]any{
			"defaults": map[string]any{"ca_file": cc.CAFile, "cert_file": cc.ServerCert, "key_file": cc.ServerKey},
			"https":    map[string]any{"verify_incoming": true},
		}
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		t.Fatalf("harness: consul config: %v", err)
	}
	if err := os.WriteFile(c.ConfigPath, b, 0o600); err != nil {
		t.Fatalf("harness: consul config: %v", err)
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	if c.Certs != nil {
		hc.Transport = &http.Transport{DisableKeepAlives: true, TLSClientConfig: c.Certs.ClientTLS(t)}
	}
	c.Proc = startProc(t, procSpec{
		name:         "consul",
		path:         bin,
		args:         []string{"agent", "-dev", "-config-file", c.ConfigPath},
		env:          cleanEnv("CONSUL_"),
		dir:          dir,
		logPath:      filepath.Join(dir, "consul.log"),
		ready:        func(ctx context.Context, _ *Proc) error { return c.ready(ctx, hc, cfg.peers) },
		readyTimeout: 30 * time.Second,
	}, true)
	t.Logf("harness: consul at %s://%s ready in %v", c.Scheme, c.Addr, time.Since(begin).Round(time.Millisecond))
	return c
}

func (c *Consul) ready(ctx context.Context, hc *http.Client, peers []string) error {
	get := func(path string) (int, []byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Scheme+"://"+c.Addr+path, nil)
		if err != nil {
			return 0, nil, err
		}
		if c.Token != "" {
			req.Header.Set("X-Consul-Token", c.Token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, body, err
	}
	code, body, err := get("/v1/status/leader")
	if err != nil {
		return err
	}
	var leader string
	if code != http.StatusOK || json.Unmarshal(body, &leader) != nil || leader == "" {
		return fmt.Errorf("/v1/status/leader: %d %q", code, body)
	}
	// The KV endpoint answers (404 for a missing key) once ACLs are bootstrapped, too.
	code, body, err = get("/v1/kv/herald-harness-ready")
	if err != nil {
		return err
	}
	if code != http.StatusNotFound && code != http.StatusOK {
		return fmt.Errorf("/v1/kv: %d %q", code, body)
	}
	// Health queries see the node only after anti-entropy has registered it.
	code, body, err = get("/v1/catalog/node/" + c.Node)
	if err != nil {
		return err
	}
	if code != http.StatusOK || string(body) == "null" || len(body) == 0 {
		return fmt.Errorf("/v1/catalog/node/%s: %d %q", c.Node, code, body)
	}
	if len(peers) > 0 {
		code, body, err = get("/v1/catalog/datacenters")
		if err != nil {
			return err
		}
		var dcs []string
		if code != http.StatusOK || json.Unmarshal(body, &dcs) != nil {
			return fmt.Errorf("/v1/catalog/datacenters: %d %q", code, body)
		}
		for _, p := range peers {
			if !slices.Contains(dcs, p) {
				return fmt.Errorf("datacenter %s not joined yet (known: %v)", p, dcs)
			}
		}
	}
	return nil
}

// APIConfig is the github.com/hashicorp/consul/api configuration for this agent, with
// the management token and the client certificate when those are on.
func (c *Consul) APIConfig() *api.Config {
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = c.Addr
	cfg.Scheme = c.Scheme
	cfg.Datacenter = c.Datacenter
	cfg.Token = c.Token
	// DefaultNonPooledConfig reads CONSUL_* from the environment: none of it applies here.
	cfg.TokenFile, cfg.HttpAuth, cfg.Namespace, cfg.Partition = "", nil, "", ""
	cfg.TLSConfig = api.TLSConfig{}
	if c.Certs != nil {
		cfg.TLSConfig = api.TLSConfig{
			Address:  "127.0.0.1",
			CAFile:   c.Certs.CAFile,
			CertFile: c.Certs.ClientCert,
			KeyFile:  c.Certs.ClientKey,
		}
	}
	return cfg
}

// Client returns a consul API client configured by APIConfig.
func (c *Consul) Client(t testing.TB) *api.Client {
	t.Helper()
	cl, err := api.NewClient(c.APIConfig())
	if err != nil {
		t.Fatalf("harness: consul client: %v", err)
	}
	return cl
}

// TLS returns a client TLS configuration with the client certificate (nil without TLS).
func (c *Consul) TLS(t testing.TB) *tls.Config {
	t.Helper()
	if c.Certs == nil {
		return nil
	}
	return c.Certs.ClientTLS(t)
}

func uuid(t testing.TB) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("harness: uuid: %v", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
