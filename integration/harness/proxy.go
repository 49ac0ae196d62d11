//go:build linux

package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// listenAddrs extracts the TCP addresses a proxy config listens on: the first argument
// of every statement whose first word is keyword ("bind" for HAProxy, "listen" for
// nginx).
// Unix sockets and port ranges are left out; a missing or wildcard host becomes
// 127.0.0.1, so the result can be dialed to see the proxy accept.
func listenAddrs(config, keyword string) []string {
	var stmts []string
	for _, line := range strings.Split(config, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		if keyword == "listen" { // nginx: statements end with ';' and may share a line
			stmts = append(stmts, strings.FieldsFunc(line, func(r rune) bool { return r == ';' || r == '{' || r == '}' })...)
		} else {
			stmts = append(stmts, line)
		}
	}
	var out []string
	for _, stmt := range stmts {
		f := strings.Fields(stmt)
		if len(f) < 2 || f[0] != keyword {
			continue
		}
		for _, a := range strings.Split(f[1], ",") {
			if addr, ok := dialAddr(a); ok {
				out = append(out, addr)
			}
		}
	}
	return out
}

func dialAddr(a string) (string, bool) {
	if i := strings.Index(a, "@"); i >= 0 { // HAProxy "ipv4@1.2.3.4:80"
		if fam := a[:i]; fam != "ipv4" && fam != "ipv6" && fam != "tcp" && fam != "tcp4" && fam != "tcp6" {
			return "", false
		}
		a = a[i+1:]
	}
	if strings.HasPrefix(a, "unix:") || strings.HasPrefix(a, "/") {
		return "", false
	}
	if _, err := strconv.Atoi(a); err == nil { // nginx "listen 8080"
		return net.JoinHostPort("127.0.0.1", a), true
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return "", false
	}
	if _, err := strconv.Atoi(port); err != nil {
		return "", false // a range or a variable
	}
	switch host {
	case "", "*", "0.0.0.0":
		host = "127.0.0.1"
	case "::", "[::]":
		host = "::1"
	}
	return net.JoinHostPort(host, port), true
}

// acceptsAll dials each address once.
func acceptsAll(ctx context.Context, addrs []string) error {
	var d net.Dialer
	for _, a := range addrs {
		c, err := d.DialContext(ctx, "tcp", a)
		if err != nil {
			return err
		}
		c.Close()
	}
	return nil
}

// shortTempDir makes a directory with a short path (unix socket paths are limited to
// 107 bytes, and t.TempDir() embeds the test's name), removed at the end of the test.
func shortTempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatalf("harness: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// childPIDs lists the processes whose parent is ppid and whose command line starts with
// cmdPrefix (nginx renames its workers "nginx: worker process").
func childPIDs(ppid int, cmdPrefix string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may contain spaces and parentheses.
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[1] != strconv.Itoa(ppid) {
			continue
		}
		if cmdPrefix != "" {
			cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err != nil || !strings.HasPrefix(string(cmdline), cmdPrefix) {
				continue
			}
		}
		out = append(out, pid)
	}
	return out
}

// pidAlive reports whether pid exists and is not a zombie.
func pidAlive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return false
	}
	f := strings.Fields(s[i+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}
