//go:build linux

package harness

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
)

// Ports come from [portMin, portMax]: above the well-known and common service ports,
// below the client ephemeral range (32768–60999 on Linux), so a port we hand out is
// never taken by some outgoing connection in the meantime.
const (
	portMin = 20000
	portMax = 32767
)

// portRegistry hands out each port once per process. Across processes (go test runs
// packages in parallel) an exclusive flock on a per-port lock file, held for the life of
// the process, keeps two test binaries from picking the same port.
type portRegistry struct {
	mu    sync.Mutex
	taken map[int]*os.File // port -> held lock file (nil if locking was unavailable)
}

var ports = &portRegistry{taken: map[int]*os.File{}} // the process-local set; must be shared

// FreePort returns a TCP and UDP port on 127.0.0.1 that is free now, that no other
// FreePort call in any process on this machine has returned while that process lives,
// and that lies outside the ephemeral range.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := ports.get()
	if err != nil {
		t.Fatalf("harness: FreePort: %v", err)
	}
	return p
}

// FreePorts returns n distinct ports, as FreePort.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	out := make([]int, n)
	for i := range out {
		out[i] = FreePort(t)
	}
	return out
}

func (r *portRegistry) get() (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	lockDir := filepath.Join(os.TempDir(), "herald-test-ports")
	if err := os.Mkdir(lockDir, 0o777); err == nil {
		_ = os.Chmod(lockDir, 0o777|os.ModeSticky) // shared by every user's tests
	} else if !os.IsExist(err) {
		lockDir = ""
	}
	const attempts = 500
	for range attempts {
		p := portMin + rand.IntN(portMax-portMin+1)
		if _, dup := r.taken[p]; dup {
			continue
		}
		var lock *os.File
		if lockDir != "" {
			f, ok := lockPort(lockDir, p)
			if !ok {
				continue // another test process holds it
			}
			lock = f
		}
		if !bindable(p) {
			if lock != nil {
				lock.Close()
			}
			continue
		}
		r.taken[p] = lock
		return p, nil
	}
	return 0, fmt.Errorf("no free port in %d-%d after %d attempts", portMin, portMax, attempts)
}

// lockPort takes a non-blocking exclusive flock on lockDir/PORT. The descriptor stays
// open until the process exits, when the kernel releases the lock.
func lockPort(dir string, port int) (*os.File, bool) {
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDONLY, 0o666)
	if err != nil {
		return nil, true // cannot lock (read-only tmp?): rely on the bind test alone
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return f, true
}

// bindable reports whether both TCP and UDP can bind 127.0.0.1:port right now (Consul's
// serf uses both).
func bindable(port int) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	u.Close()
	return true
}
