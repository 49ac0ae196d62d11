//go:build linux

package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// DefaultConsulVersion is the consul release that integration/scripts/build-consul.sh
// builds when CONSUL_VERSION is unset. Keep the two in step.
const DefaultConsulVersion = "v1.22.2"

// installHint says how to get what is missing; it is part of every "not found" failure.
const installHint = "run `make test-deps` (integration/scripts/provision.sh; as root on Debian 12 it installs " +
	"etcd-server etcd-client zookeeper haproxy nginx libslf4j-java and builds consul)"

// debianPackage names the package that provides a binary, for messages.
func debianPackage(name string) (string, bool) {
	switch name {
	case "etcd":
		return "etcd-server", true
	case "etcdctl":
		return "etcd-client", true
	case "haproxy", "nginx":
		return name, true
	case "java":
		return "default-jre-headless (pulled in by zookeeper)", true
	}
	return "", false
}

// ConsulBinaryPath is where build-consul.sh caches the consul binary:
// ${HERALD_TEST_CACHE:-$HOME/.cache/herald-test}/consul-${CONSUL_VERSION:-v1.22.2}/consul.
func ConsulBinaryPath() string {
	cache := os.Getenv("HERALD_TEST_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.TempDir()
		}
		cache = filepath.Join(home, ".cache", "herald-test")
	}
	version := os.Getenv("CONSUL_VERSION")
	if version == "" {
		version = DefaultConsulVersion
	}
	return filepath.Join(cache, "consul-"+version, "consul")
}

// Binary returns the absolute path of a server binary: etcd, etcdctl, consul, haproxy,
// nginx or java. HERALD_<NAME>_BIN overrides the lookup. When the binary is absent it
// fails the test, naming what is missing and the command that installs it.
func Binary(t testing.TB, name string) string {
	t.Helper()
	path, err := findBinary(name)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	return path
}

func findBinary(name string) (string, error) {
	envVar := "HERALD_" + strings.ToUpper(name) + "_BIN"
	if p := os.Getenv(envVar); p != "" {
		if isExecutable(p) {
			return p, nil
		}
		return "", fmt.Errorf("%s=%s is not an executable file", envVar, p)
	}
	var looked []string
	if name == "consul" {
		p := ConsulBinaryPath()
		if isExecutable(p) {
			return p, nil
		}
		looked = append(looked, p)
	}
	if p, err := exec.LookPath(name); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs, nil
		}
		return p, nil
	}
	looked = append(looked, "$PATH")
	// haproxy and nginx live in /usr/sbin, which is not on every user's PATH.
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/sbin", "/usr/local/bin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if isExecutable(p) {
			return p, nil
		}
		looked = append(looked, dir)
	}
	what := name
	if pkg, ok := debianPackage(name); ok {
		what += " (Debian package " + pkg + ")"
	}
	if name == "consul" {
		what += " (built from source by integration/scripts/build-consul.sh, not packaged by Debian)"
	}
	return "", fmt.Errorf("%s not found (looked in %s; or set %s): %s",
		what, strings.Join(looked, ", "), envVar, installHint)
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}

// zooKeeperClasspath returns the classpath for the Debian zookeeper package's server:
// zookeeper.jar (whose manifest Class-Path names its dependencies in /usr/share/java)
// plus slf4j-simple from libslf4j-java, so the server's log reaches stderr.
func zooKeeperClasspath(t testing.TB) string {
	t.Helper()
	jars := []struct{ path, pkg string }{
		{"/usr/share/java/zookeeper.jar", "zookeeper (libzookeeper-java)"},
		{"/usr/share/java/zookeeper-jute.jar", "zookeeper (libzookeeper-java)"},
		{"/usr/share/java/slf4j-api.jar", "libslf4j-java"},
		{"/usr/share/java/slf4j-simple.jar", "libslf4j-java"},
		// Netty serves the TLS port (secureClientPort); a dependency of zookeeper.
		{"/usr/share/java/netty-buffer.jar", "libnetty-java"},
		{"/usr/share/java/netty-codec.jar", "libnetty-java"},
		{"/usr/share/java/netty-common.jar", "libnetty-java"},
		{"/usr/share/java/netty-handler.jar", "libnetty-java"},
		{"/usr/share/java/netty-resolver.jar", "libnetty-java"},
		{"/usr/share/java/netty-transport.jar", "libnetty-java"},
		{"/usr/share/java/netty-transport-native-unix-common.jar", "libnetty-java"},
		{"/usr/share/java/netty-transport-native-epoll.jar", "libnetty-java"},
	}
	var cp, missing []string
	for _, j := range jars {
		if _, err := os.Stat(j.path); err != nil {
			missing = append(missing, fmt.Sprintf("%s (Debian package %s)", j.path, j.pkg))
		}
		cp = append(cp, j.path)
	}
	if len(missing) > 0 {
		t.Fatalf("harness: ZooKeeper is not installed: missing %s: %s", strings.Join(missing, ", "), installHint)
	}
	return strings.Join(cp, ":")
}
