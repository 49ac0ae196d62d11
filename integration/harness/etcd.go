//go:build linux

package harness

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Etcd is a single etcd server or a cluster, started from Debian's etcd-server (3.4).
// Endpoints[i] is the client URL of Members[i].
type Etcd struct {
	Endpoints []string // "http://127.0.0.1:PORT", or https with EtcdTLS
	Members   []*Proc
	Certs     *Certs // non-nil with EtcdTLS: clients need Certs.ClientTLS
	PeerURLs  []string
}

// EtcdOption configures StartEtcd and StartEtcdCluster.
type EtcdOption func(*etcdConfig)

type etcdConfig struct {
	certs                *Certs
	heartbeatMS, electMS int
}

// EtcdTLS serves the client URLs over https with c's server certificate and requires a
// client certificate signed by c's CA (--client-cert-auth). Peer traffic stays plain.
func EtcdTLS(c *Certs) EtcdOption { return func(cfg *etcdConfig) { cfg.certs = c } }

// EtcdElection overrides the raft timing (default heartbeat 10 ms, election 100 ms).
func EtcdElection(heartbeatMS, electionMS int) EtcdOption {
	return func(cfg *etcdConfig) { cfg.heartbeatMS, cfg.electMS = heartbeatMS, electionMS }
}

// StartEtcd starts a single-node etcd and waits until /health reports true.
func StartEtcd(t testing.TB, opts ...EtcdOption) *Etcd {
	t.Helper()
	return startEtcd(t, 1, opts)
}

// StartEtcdCluster starts an n-member cluster (static bootstrap over peer ports) and
// waits until every member's /health reports true.
func StartEtcdCluster(t testing.TB, n int, opts ...EtcdOption) *Etcd {
	t.Helper()
	if n < 1 {
		t.Fatalf("harness: StartEtcdCluster: n = %d", n)
	}
	return startEtcd(t, n, opts)
}

func startEtcd(t testing.TB, n int, opts []EtcdOption) *Etcd {
	t.Helper()
	cfg := etcdConfig{heartbeatMS: 10, electMS: 100}
	for _, o := range opts {
		o(&cfg)
	}
	bin := Binary(t, "etcd")
	begin := time.Now()
	scheme := "http"
	if cfg.certs != nil {
		scheme = "https"
	}
	e := &Etcd{Certs: cfg.certs}
	names := make([]string, n)
	var initial []string
	for i := range n {
		names[i] = "m" + strconv.Itoa(i)
		e.Endpoints = append(e.Endpoints, fmt.Sprintf("%s://127.0.0.1:%d", scheme, FreePort(t)))
		e.PeerURLs = append(e.PeerURLs, fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)))
		initial = append(initial, names[i]+"="+e.PeerURLs[i])
	}
	token := fmt.Sprintf("herald-%d-%d", time.Now().UnixNano(), FreePort(t))
	env := cleanEnv("ETCD_", "ETCDCTL_")
	healthClient := e.httpClient(t)
	for i := range n {
		dir := t.TempDir()
		args := []string{
			"--name", names[i],
			"--data-dir", filepath.Join(dir, "data"),
			"--listen-client-urls", e.Endpoints[i],
			"--advertise-client-urls", e.Endpoints[i],
			"--listen-peer-urls", e.PeerURLs[i],
			"--initial-advertise-peer-urls", e.PeerURLs[i],
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new",
			"--initial-cluster-token", token,
			"--heartbeat-interval", strconv.Itoa(cfg.heartbeatMS),
			"--election-timeout", strconv.Itoa(cfg.electMS),
			"--logger", "zap",
			"--log-outputs", "stderr",
		}
		if c := cfg.certs; c != nil {
			args = append(args,
				"--cert-file", c.ServerCert,
				"--key-file", c.ServerKey,
				"--trusted-ca-file", c.CAFile,
				"--client-cert-auth")
		}
		endpoint := e.Endpoints[i]
		name := "etcd " + names[i]
		if n == 1 {
			name = "etcd"
		}
		e.Members = append(e.Members, startProc(t, procSpec{
			name:         name,
			path:         bin,
			args:         args,
			env:          env,
			dir:          dir,
			logPath:      filepath.Join(dir, "etcd.log"),
			ready:        func(ctx context.Context, _ *Proc) error { return etcdHealthy(ctx, healthClient, endpoint) },
			readyTimeout: 30 * time.Second,
		}, false))
	}
	// Members become healthy only together (a leader needs a quorum), so start all first.
	for _, m := range e.Members {
		if err := m.awaitReady(); err != nil {
			t.Fatalf("harness: %s not ready: %v\n--- %s log (tail) ---\n%s", m.Name(), err, m.Name(), m.logTail())
		}
	}
	t.Logf("harness: etcd %d member(s) at %s ready in %v", n, strings.Join(e.Endpoints, ","), time.Since(begin).Round(time.Millisecond))
	return e
}

func (e *Etcd) httpClient(t testing.TB) *http.Client {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	if e.Certs != nil {
		tr.TLSClientConfig = e.Certs.ClientTLS(t)
	}
	return &http.Client{Transport: tr, Timeout: 2 * time.Second}
}

// etcdHealthy reports nil when GET endpoint/health says {"health":"true"} (the member
// sees a leader and has no alarm).
func etcdHealthy(ctx context.Context, c *http.Client, endpoint string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return err
	}
	var h struct {
		Health string `json:"health"`
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal(body, &h); err != nil {
		return fmt.Errorf("/health: %s: %q", resp.Status, body)
	}
	if h.Health != "true" {
		return fmt.Errorf("/health: %s", body)
	}
	return nil
}

// TLS returns the client TLS configuration for the cluster (nil without EtcdTLS).
func (e *Etcd) TLS(t testing.TB) *tls.Config {
	t.Helper()
	if e.Certs == nil {
		return nil
	}
	return e.Certs.ClientTLS(t)
}

// Client returns an etcd v3 client for all endpoints (with the client certificate when
// TLS is on), closed at the end of the test.
func (e *Etcd) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	return e.client(t, e.Endpoints...)
}

func (e *Etcd) client(t testing.TB, endpoints ...string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		TLS:         e.TLS(t),
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("harness: etcd client for %v: %v", endpoints, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Leader returns the index in Members of the current leader, asking every running
// member; it waits (up to 10 s) while an election is under way.
func (e *Etcd) Leader(t testing.TB) int {
	t.Helper()
	c := e.client(t, e.Endpoints...)
	deadline := time.Now().Add(10 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		for i, ep := range e.Endpoints {
			if !e.Members[i].Running() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := c.Status(ctx, ep)
			cancel()
			if err != nil {
				last = fmt.Errorf("%s: %w", ep, err)
				continue
			}
			if st.Leader == 0 {
				last = fmt.Errorf("%s: no leader yet", ep)
				continue
			}
			for j, ep2 := range e.Endpoints {
				if !e.Members[j].Running() {
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				st2, err := c.Status(ctx, ep2)
				cancel()
				if err == nil && st2.Header.MemberId == st.Leader {
					return j
				}
			}
			last = fmt.Errorf("leader %x reported by %s is not a running member", st.Leader, ep)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("harness: etcd: no leader within 10s: %v", last)
	return -1
}
