package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binaries built from this checkout, once per test binary, by package path.
var (
	buildMu sync.Mutex
	built   = map[string]*buildResult{}
)

type buildResult struct {
	once sync.Once
	path string
	err  error
}

// TestMain removes the binaries the tests built (one temporary directory each).
func TestMain(m *testing.M) {
	code := m.Run()
	buildMu.Lock()
	for _, b := range built {
		if b.path != "" {
			os.RemoveAll(filepath.Dir(b.path))
		}
	}
	buildMu.Unlock()
	os.Exit(code)
}

// goBinary builds the package pkg (a path inside this module) once and returns it.
func goBinary(t testing.TB, pkg string) string {
	t.Helper()
	buildMu.Lock()
	b := built[pkg]
	if b == nil {
		b = &buildResult{}
		built[pkg] = b
	}
	buildMu.Unlock()
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "herald-bin-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, filepath.Base(pkg))
		// Built as releases are (cmd/herald/packaging/release.sh: static, trimmed,
		// stripped), so that the tests and the figures (RSS above all) are those of what
		// users run; the race detector needs cgo.
		args := []string{"build", "-o", b.path, "-trimpath", "-ldflags=-s -w"}
		cgo := "CGO_ENABLED=0"
		if raceBinaries {
			args, cgo = append(args, "-race"), "CGO_ENABLED=1"
		}
		cmd := exec.Command("go", append(args, "github.com/heraldhq/herald/"+pkg)...)
		cmd.Env = append(os.Environ(), cgo)
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.err = fmt.Errorf("go build ./%s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// heraldBinary is ./cmd/herald, built from this checkout.
// raceBinaries builds herald (and the other binaries the tests run) with the race
// detector: HERALD_TEST_RACE=1, as `make integration-race` does.
var raceBinaries = os.Getenv("HERALD_TEST_RACE") == "1"

func heraldBinary(t testing.TB) string { return goBinary(t, "cmd/herald") }

// heraldProc is a herald process started by a test.
type heraldProc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
}

func (p *heraldProc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// Output is everything the process printed so far.
func (p *heraldProc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// startHerald runs the herald binary with args; cleanup kills it if still running.
func startHerald(t testing.TB, env []string, args ...string) *heraldProc {
	t.Helper()
	return startHeraldIn(t, nil, env, args...)
}

// startHeraldIn is startHerald with stdin (nil: /dev/null).
func startHeraldIn(t testing.TB, stdin io.Reader, env []string, args ...string) *heraldProc {
	t.Helper()
	return startHeraldAs(t, heraldBinary(t), stdin, env, args...)
}

// startHeraldAs runs herald through bin, e.g. a symlink called confd, with stdin.
func startHeraldAs(t testing.TB, bin string, stdin io.Reader, env []string, args ...string) *heraldProc {
	t.Helper()
	p := &heraldProc{cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Stdin = stdin
	p.cmd.Env = append(os.Environ(), env...)
	if raceBinaries {
		// The harness judges the reports (see raceReports); a race-built herald's
		// exit status stays its own.
		p.cmd.Env = append(p.cmd.Env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" exitcode=0"))
	}
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if raceBinaries {
			ours, known := raceReports(p.Output())
			if known != "" {
				t.Logf("herald %v: race inside go-zookeeper/zk itself, reported upstream and not herald's (go-zookeeper/zk#35):\n%s", args, known)
			}
			if ours != "" {
				// The reports themselves, not just the output's tail they may be far from.
				t.Errorf("herald %v: the race detector reported a data race:\n%s", args, ours)
			}
		}
		if t.Failed() {
			t.Logf("herald %v output:\n%s", args, tail(p.Output(), 60))
		}
	})
	return p
}

// signal sends sig and waits (bounded) for the exit; it returns the exit code.
func (p *heraldProc) stop(t testing.TB, sig syscall.Signal, within time.Duration) int {
	t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("herald did not exit within %v of %v", within, sig)
	}
	return p.cmd.ProcessState.ExitCode()
}

// raceReports cuts the race detector's reports out of a process's output: known holds
// those of the one race found in a dependency rather than in herald — go-zookeeper/zk
// v1.0.4 reads Conn.lastZxid in sendSetWatches while its receive loop writes it, after a
// reconnect (go-zookeeper/zk#35, samuel/go-zookeeper#260; an int64 read at worst stale)
// — and ours everything else.
func raceReports(out string) (ours, known string) {
	for _, part := range strings.Split(out, "==================\n")[1:] {
		if !strings.HasPrefix(part, "WARNING: DATA RACE") {
			continue
		}
		// The two accesses' stacks; the goroutines' creation stacks below them may
		// well pass through herald, which dialed.
		access, _, _ := strings.Cut(part, "\nGoroutine ")
		if strings.Contains(access, "go-zookeeper/zk.(*Conn).recvLoop") &&
			strings.Contains(access, "go-zookeeper/zk.(*Conn).sendSetWatches") &&
			!strings.Contains(access, "heraldhq/herald") {
			known += part
		} else {
			ours += part
		}
	}
	return ours, known
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitFile waits until path holds want (bounded).
func waitFile(t testing.TB, path, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var got []byte
	for time.Now().Before(deadline) {
		got, _ = os.ReadFile(path)
		if string(got) == want {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s = %q after %v, want %q", path, got, within, want)
}

// metric reads one sample from a /metrics endpoint; name includes labels, e.g.
// `herald_renders_total{resource="a.toml",result="changed"}`. Missing means 0.
func metric(t testing.TB, addr, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			v, _ := strconv.ParseFloat(rest, 64)
			return v
		}
	}
	return 0
}

func httpGet(t testing.TB, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// writeTree writes files below dir.
func writeTree(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
