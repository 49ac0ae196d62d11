//go:build unix

package supervisor

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Forwarded returns the signals herald passes on to its child. The list is explicit: the
// Go runtime's own signals (SIGURG for preemption, SIGCHLD, SIGPIPE) are never forwarded.
func Forwarded() []os.Signal {
	return []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}
}

// terminating are the forwarded signals after which herald expects the child to end:
// it restarts it no more and exits once it has.
func terminating(s syscall.Signal) bool {
	return s == syscall.SIGTERM || s == syscall.SIGINT || s == syscall.SIGQUIT
}

// ParseSignal reads a signal as "SIGTERM", "TERM", "term" or "15".
func ParseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("signal %q: out of range", s)
		}
		return syscall.Signal(n), nil
	}
	// The platform's own names: SIGPWR exists on Linux only, SIGINFO on the BSDs.
	if sig := unix.SignalNum("SIG" + strings.TrimPrefix(strings.ToUpper(s), "SIG")); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("signal %q: unknown (want e.g. SIGTERM, HUP or 15)", s)
}

// ExitCode is the status a shell reports for a process: its exit code, or 128+n when
// signal n ended it.
func ExitCode(ws syscall.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	}
	return 1
}

// exit is a child that ended, as its waiter or the reaper saw it.
type exit struct {
	pid int
	ws  syscall.WaitStatus
}

// proc is one incarnation of the child.
type proc struct {
	cmd *exec.Cmd
	pid int
}

// Command is what to run and where its standard streams go.
type Command struct {
	Path   string // resolved with exec.LookPath when it holds no slash
	Args   []string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// start runs c with env. The child leads its own process group, so a terminal's ^C
// reaches it once, through herald, not twice; SIGKILL at the end of a stop goes to the
// whole group, so a wrapper script's children do not outlive it. If herald itself dies,
// the kernel sends the child SIGTERM (on Linux: childAttr). Unless reaped (herald is
// PID 1 and reaps every child itself), a goroutine waits for the child and reports its
// end on exits.
func start(c Command, env []string, reaped bool, exits chan<- exit) (*proc, error) {
	cmd := exec.Command(c.Path, c.Args...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = c.Stdin, c.Stdout, c.Stderr
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", c.Path, err)
	}
	p := &proc{cmd: cmd, pid: cmd.Process.Pid}
	if !reaped {
		go func() {
			err := cmd.Wait()
			ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if !ok && err != nil {
				ws = syscall.WaitStatus(1 << 8) // exit status 1
			}
			exits <- exit{pid: p.pid, ws: ws}
		}()
	}
	return p, nil
}

// signal sends sig to the child alone. It is a no-op once the child has been waited for.
func (p *proc) signal(sig syscall.Signal) error {
	err := p.cmd.Process.Signal(sig)
	if errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	return err
}

// kill sends SIGKILL to the child and its process group. The group is signalled only
// while the child has not been waited for: until then its PID, which is the group ID,
// cannot have been reused.
func (p *proc) kill() {
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err == nil {
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	}
}

// release frees the process handle of a child that the reaper waited for.
func (p *proc) release() { _ = p.cmd.Process.Release() }

// reap waits for every child of this process that has ended, without blocking, and
// returns them. herald calls it on SIGCHLD when it runs as PID 1: orphans are re-parented
// to PID 1, and nobody else would wait for them, leaving zombies. It takes the child's
// own status too, so in that mode nothing else may wait for a child (herald exec runs no
// other process).
func reap() []exit {
	var out []exit
	for range 1 << 16 { // bounded: there cannot be more children than PIDs
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			break
		}
		out = append(out, exit{pid: pid, ws: ws})
	}
	return out
}
