//go:build linux

package harness

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ZooKeeper is a standalone server or an ensemble from Debian's zookeeper package (3.8).
// Servers[i] is the client address of Members[i].
type ZooKeeper struct {
	Servers []string // "127.0.0.1:PORT"
	// SecureServers[i] is Members[i]'s TLS port (StartZooKeeperTLS; clients must present
	// a certificate signed by the test CA), nil otherwise.
	SecureServers []string
	Members       []*Proc
}

// zkTickMS is ZooKeeper's tick: sessions may be 2–20 ticks by default; we allow up to
// 60 s explicitly, and 1 s is the shortest session a client can get.
const zkTickMS = 500

// StartZooKeeper starts a standalone server and waits until `srvr` reports a Mode.
func StartZooKeeper(t testing.TB) *ZooKeeper {
	t.Helper()
	return startZooKeeper(t, 1, nil)
}

// StartZooKeeperTLS starts a standalone server that also serves TLS on a
// secureClientPort (Netty), with the certificates of GenCerts and client certificates
// required (ssl.clientAuth=need). Readiness still uses the plain port's `srvr`.
func StartZooKeeperTLS(t testing.TB, certs *Certs) *ZooKeeper {
	t.Helper()
	return startZooKeeper(t, 1, certs)
}

// StartZooKeeperEnsemble starts an n-member quorum ensemble and waits until every member
// reports a Mode (leader or follower) through `srvr`.
func StartZooKeeperEnsemble(t testing.TB, n int) *ZooKeeper {
	t.Helper()
	if n < 1 {
		t.Fatalf("harness: StartZooKeeperEnsemble: n = %d", n)
	}
	return startZooKeeper(t, n, nil)
}

// zooKeeperConfig is one member's zoo.cfg lines, without the ensemble's; with certs it
// also opens a TLS port, recorded in z.SecureServers.
func zooKeeperConfig(t testing.TB, dataDir string, clientPort int, certs *Certs, keyStore string, z *ZooKeeper) []string {
	cfg := []string{
		"tickTime=" + strconv.Itoa(zkTickMS),
		"initLimit=20",
		"syncLimit=10",
		"maxSessionTimeout=60000",
		"dataDir=" + dataDir,
		"clientPort=" + strconv.Itoa(clientPort),
		"clientPortAddress=127.0.0.1",
		"admin.enableServer=false",
		"4lw.commands.whitelist=ruok,srvr,mntr,stat,conf,cons",
		// Test data need not survive a power cut; a killed JVM loses nothing.
		"forceSync=no",
		"maxClientCnxns=0",
	}
	if certs != nil {
		port := FreePort(t)
		z.SecureServers = append(z.SecureServers, "127.0.0.1:"+strconv.Itoa(port))
		cfg = append(cfg,
			"secureClientPort="+strconv.Itoa(port),
			"secureClientPortAddress=127.0.0.1",
			"serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory",
			"ssl.keyStore.location="+keyStore,
			"ssl.keyStore.type=PEM",
			"ssl.trustStore.location="+certs.CAFile,
			"ssl.trustStore.type=PEM",
			"ssl.clientAuth=need",
		)
	}
	return cfg
}

func startZooKeeper(t testing.TB, n int, certs *Certs) *ZooKeeper {
	t.Helper()
	java := Binary(t, "java")
	cp := zooKeeperClasspath(t)
	var keyStore string
	if certs != nil {
		var err error
		if keyStore, err = zooKeeperKeyStore(certs); err != nil {
			t.Fatalf("harness: zookeeper TLS: %v", err)
		}
	}
	begin := time.Now()
	z := &ZooKeeper{}
	clientPorts := make([]int, n)
	var serverLines []string
	for i := range n {
		clientPorts[i] = FreePort(t)
		z.Servers = append(z.Servers, "127.0.0.1:"+strconv.Itoa(clientPorts[i]))
		if n > 1 {
			serverLines = append(serverLines, fmt.Sprintf("server.%d=127.0.0.1:%d:%d", i+1, FreePort(t), FreePort(t)))
		}
	}
	readyTimeout := 30 * time.Second
	if n > 1 {
		readyTimeout = 60 * time.Second
	}
	for i := range n {
		dir := t.TempDir()
		dataDir := filepath.Join(dir, "data")
		if err := os.MkdirAll(dataDir, 0o755); err != nil {
			t.Fatalf("harness: zookeeper: %v", err)
		}
		cfg := zooKeeperConfig(t, dataDir, clientPorts[i], certs, keyStore, z)
		if n > 1 {
			cfg = append(cfg, "standaloneEnabled=false", "reconfigEnabled=false")
			cfg = append(cfg, serverLines...)
			if err := os.WriteFile(filepath.Join(dataDir, "myid"), []byte(strconv.Itoa(i+1)+"\n"), 0o644); err != nil {
				t.Fatalf("harness: zookeeper: %v", err)
			}
		}
		cfgPath := filepath.Join(dir, "zoo.cfg")
		if err := os.WriteFile(cfgPath, []byte(strings.Join(cfg, "\n")+"\n"), 0o644); err != nil {
			t.Fatalf("harness: zookeeper: %v", err)
		}
		name := "zookeeper"
		if n > 1 {
			name = "zookeeper " + strconv.Itoa(i+1)
		}
		addr := z.Servers[i]
		z.Members = append(z.Members, startProc(t, procSpec{
			name: name,
			path: java,
			args: []string{
				"-Xms32m", "-Xmx256m",
				// Two shared cores: one GC thread and a cheap JIT start faster.
				"-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
				"-Djava.net.preferIPv4Stack=true",
				"-Dzookeeper.jmx.log4j.disable=true",
				"-Dorg.slf4j.simpleLogger.showDateTime=true",
				"-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
				"-cp", cp,
				"org.apache.zookeeper.server.quorum.QuorumPeerMain", cfgPath,
			},
			env:          cleanEnv("JAVA_TOOL_OPTIONS=", "_JAVA_OPTIONS=", "JDK_JAVA_OPTIONS="),
			dir:          dir,
			logPath:      filepath.Join(dir, "zookeeper.log"),
			ready:        func(ctx context.Context, _ *Proc) error { _, err := ZooKeeperMode(ctx, addr); return err },
			readyTimeout: readyTimeout,
		}, false))
	}
	for _, m := range z.Members {
		if err := m.awaitReady(); err != nil {
			t.Fatalf("harness: %s not ready: %v\n--- %s log (tail) ---\n%s", m.Name(), err, m.Name(), m.logTail())
		}
	}
	t.Logf("harness: zookeeper %d member(s) at %s ready in %v", n, strings.Join(z.Servers, ","), time.Since(begin).Round(time.Millisecond))
	return z
}

// ZooKeeperFourLetter sends a four-letter-word command (ruok, srvr, mntr, stat, conf,
// cons) to addr and returns the answer.
func ZooKeeperFourLetter(ctx context.Context, addr, cmd string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := io.WriteString(conn, cmd); err != nil {
		return "", err
	}
	b, err := io.ReadAll(io.LimitReader(conn, 1<<20))
	if err != nil {
		return string(b), err
	}
	return string(b), nil
}

// ZooKeeperMode returns the member's Mode from `srvr` ("standalone", "leader",
// "follower"), or an error while it does not serve (no quorum: `ruok` would still say
// imok, which is why readiness never uses it).
func ZooKeeperMode(ctx context.Context, addr string) (string, error) {
	out, err := ZooKeeperFourLetter(ctx, addr, "srvr")
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if mode, ok := strings.CutPrefix(sc.Text(), "Mode: "); ok {
			return strings.TrimSpace(mode), nil
		}
	}
	return "", fmt.Errorf("srvr on %s: no Mode: %q", addr, strings.TrimSpace(out))
}

// Leader returns the index in Members of the ensemble's leader (waiting up to 30 s while
// an election runs); for a standalone server it returns 0.
func (z *ZooKeeper) Leader(t testing.TB) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		for i, addr := range z.Servers {
			if !z.Members[i].Running() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			mode, err := ZooKeeperMode(ctx, addr)
			cancel()
			if err != nil {
				last = err
				continue
			}
			if mode == "leader" || mode == "standalone" {
				return i
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("harness: zookeeper: no leader within 30s: %v", last)
	return -1
}

// zooKeeperKeyStore writes the server's key (PKCS#8, the form ZooKeeper's PEM loader
// reads) and certificate into one file, as ssl.keyStore.type=PEM wants them.
func zooKeeperKeyStore(c *Certs) (string, error) {
	keyPEM, err := os.ReadFile(c.ServerKey)
	if err != nil {
		return "", err
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return "", fmt.Errorf("%s: no PEM block", c.ServerKey)
	}
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		return "", err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", err
	}
	cert, err := os.ReadFile(c.ServerCert)
	if err != nil {
		return "", err
	}
	path := filepath.Join(c.Dir, "zookeeper-keystore.pem")
	out := append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), cert...)
	return path, os.WriteFile(path, out, 0o600)
}
