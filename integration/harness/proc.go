//go:build linux

// Package harness starts real servers (etcd, ZooKeeper, Consul, HAProxy, nginx) on
// 127.0.0.1, with free ports and fresh data directories, for herald's integration tests.
//
// Every Start* function waits until its server really serves, registers a t.Cleanup that
// stops exactly the processes it started (by PID), and fails the test, with the server's
// log, when a binary is missing or the server does not come up in time. Nothing skips.
package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// stopGrace is how long Stop waits after SIGTERM before it sends SIGKILL.
	stopGrace = 10 * time.Second
	// killWait bounds the wait for a process to disappear after SIGKILL.
	killWait = 10 * time.Second
	// pollEvery is the interval of every readiness poll.
	pollEvery = 20 * time.Millisecond
	// logTail is how much of a server's log goes into a failure message about it.
	logTail = 16 << 10
	// cleanupLogTail is how much of each server's log is shown when a test failed.
	cleanupLogTail = 4 << 10
)

// procSpec is everything needed to start (and restart) one server process.
type procSpec struct {
	name    string   // for messages: "etcd m1", "zookeeper 2"
	path    string   // absolute binary path
	args    []string // without argv[0]
	env     []string // nil: the test's environment
	dir     string   // working directory; "" = inherit
	logPath string   // combined stdout+stderr, appended to across restarts
	// ready reports nil once the server (p) serves. It is polled until readyTimeout.
	ready        func(ctx context.Context, p *Proc) error
	readyTimeout time.Duration
	// gracefulCleanup: end it with Stop (SIGTERM) rather than SIGKILL at the end of the
	// test. For masters with workers: a killed master leaves its workers to init, and in
	// containers whose init does not reap, they stay as zombies.
	gracefulCleanup bool
}

// Proc is one server process that the harness started. Its methods are safe for
// concurrent use. Stop, Kill and the cleanup act on the process the harness started and
// on the process group it leads (workers of HAProxy and nginx), never on anything else.
type Proc struct {
	spec procSpec

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has exited
	waitErr error         // valid after done is closed
	// logShown: a failure message already included the log; cleanup need not repeat it.
	logShown bool
}

// startProc starts the process described by spec, registers its cleanup on t, and
// waits until it is ready (when spec.ready is set and wait is true).
func startProc(t testing.TB, spec procSpec, wait bool) *Proc {
	t.Helper()
	p := &Proc{spec: spec}
	if err := p.start(); err != nil {
		t.Fatalf("harness: start %s: %v\n%s", spec.name, err, p.logTail())
	}
	t.Cleanup(func() { p.cleanup(t) })
	if wait {
		if err := p.awaitReady(); err != nil {
			t.Fatalf("harness: %s not ready: %v\n--- %s log (tail) ---\n%s", spec.name, err, spec.name, p.logTail())
		}
	}
	return p
}

func (p *Proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	logf, err := os.OpenFile(p.spec.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer logf.Close() // the child keeps its own descriptor
	cmd := exec.Command(p.spec.path, p.spec.args...)
	cmd.Env = p.spec.env
	cmd.Dir = p.spec.dir
	// A file, not a pipe: workers that outlive the master cannot make Wait hang.
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true, // our own group, so the workers of HAProxy/nginx can be ended with it
		// If the test binary dies (a go test timeout panics), do not leave servers behind.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// current returns the running command and its done channel.
func (p *Proc) current() (*exec.Cmd, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd, p.done
}

func exited(done chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// waitReady polls spec.ready until it succeeds, the process exits or the timeout passes.
func (p *Proc) waitReady(t testing.TB, since time.Time) {
	t.Helper()
	if err := p.awaitReady(); err != nil {
		t.Fatalf("harness: %s not ready: %v\n--- %s log (tail) ---\n%s", p.spec.name, err, p.spec.name, p.logTail())
	}
	t.Logf("harness: %s restarted (pid %d), ready in %v", p.spec.name, p.PID(), time.Since(since).Round(time.Millisecond))
}

func (p *Proc) awaitReady() error {
	if p.spec.ready == nil {
		return nil
	}
	_, done := p.current()
	timeout := p.spec.readyTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		if exited(done) {
			return fmt.Errorf("process exited: %v (last probe: %v)", p.exitErr(), last)
		}
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		last = p.spec.ready(pctx, p)
		pcancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready after %v: %v", timeout, last)
		case <-done:
		case <-time.After(pollEvery):
		}
	}
}

func (p *Proc) exitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.waitErr == nil {
		return errors.New("exit status 0")
	}
	return p.waitErr
}

// PID is the process ID of the current incarnation (it changes on Restart).
func (p *Proc) PID() int {
	cmd, _ := p.current()
	if cmd == nil || cmd.Process == nil {
		return 0
	}
	return cmd.Process.Pid
}

// Running reports whether the current incarnation has not exited yet.
func (p *Proc) Running() bool {
	_, done := p.current()
	return done != nil && !exited(done)
}

// Name is the label used in messages, e.g. "etcd m1".
func (p *Proc) Name() string { return p.spec.name }

// LogPath is the file that receives the process's combined output.
func (p *Proc) LogPath() string { return p.spec.logPath }

// Stop sends SIGTERM, waits up to 10 s, then SIGKILLs the process and its group.
func (p *Proc) Stop(t testing.TB) {
	t.Helper()
	if err := p.stop(); err != nil {
		t.Fatalf("harness: stop %s: %v\n%s", p.spec.name, err, p.logTail())
	}
}

func (p *Proc) stop() error {
	cmd, done := p.current()
	if cmd == nil || exited(done) {
		p.killGroup() // leftovers (workers) of an exited master
		return nil
	}
	pid := cmd.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGCONT) // a paused process cannot act on SIGTERM
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	select {
	case <-done:
		p.killGroup()
		return nil
	case <-time.After(stopGrace):
	}
	return p.kill()
}

// Kill sends SIGKILL to the process and its group (a crash), and waits until it is gone.
func (p *Proc) Kill(t testing.TB) {
	t.Helper()
	if err := p.kill(); err != nil {
		t.Fatalf("harness: kill %s: %v", p.spec.name, err)
	}
}

func (p *Proc) kill() error {
	cmd, done := p.current()
	if cmd == nil {
		return nil
	}
	p.killGroup()
	_ = cmd.Process.Kill()
	select {
	case <-done:
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("pid %d still there %v after SIGKILL", cmd.Process.Pid, killWait)
	}
}

// killGroup SIGKILLs the process group that our process leads. The group ID is the PID
// of a process we started; the kernel does not reuse it while any member is alive.
func (p *Proc) killGroup() {
	cmd, _ := p.current()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}

// Pause sends SIGSTOP: the server keeps its sockets but stops answering (a hung node).
// It returns once every thread of the process is stopped: signal delivery is
// asynchronous, and a request sent right after kill(2) may otherwise still be answered.
func (p *Proc) Pause(t testing.TB) {
	t.Helper()
	p.signal(t, syscall.SIGSTOP)
	pid := p.PID()
	deadline := time.Now().Add(5 * time.Second)
	for !allThreadsStopped(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("harness: %s (pid %d) not stopped 5s after SIGSTOP", p.spec.name, pid)
		}
		time.Sleep(time.Millisecond)
	}
}

// allThreadsStopped reports whether every thread of pid is in state T (stopped).
func allThreadsStopped(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, task := range tasks {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			return false
		}
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || i+2 >= len(s) || s[i+2] != 'T' {
			return false
		}
	}
	return true
}

// Resume sends SIGCONT after Pause.
func (p *Proc) Resume(t testing.TB) {
	t.Helper()
	p.signal(t, syscall.SIGCONT)
}

// Signal sends sig to the process (not its group).
func (p *Proc) Signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	p.signal(t, sig)
}

func (p *Proc) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	cmd, done := p.current()
	if cmd == nil || exited(done) {
		t.Fatalf("harness: %s: cannot send %v: process is not running", p.spec.name, sig)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatalf("harness: %s: send %v to pid %d: %v", p.spec.name, sig, cmd.Process.Pid, err)
	}
}

// Restart stops the process if it still runs, starts it again with the same arguments,
// ports, data directory and configuration, and waits until it is ready.
func (p *Proc) Restart(t testing.TB) {
	t.Helper()
	begin := time.Now()
	wasRunning := p.Running()
	if err := p.stop(); err != nil {
		t.Fatalf("harness: restart %s: stop: %v", p.spec.name, err)
	}
	if wasRunning {
		t.Logf("harness: %s stopped in %v", p.spec.name, time.Since(begin).Round(time.Millisecond))
	}
	begin = time.Now()
	if err := p.start(); err != nil {
		t.Fatalf("harness: restart %s: %v\n%s", p.spec.name, err, p.logTail())
	}
	p.waitReady(t, begin)
}

// Log returns the process's combined output so far, across restarts.
func (p *Proc) Log() string {
	b, err := os.ReadFile(p.spec.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// logTail is the end of the log for a failure message (the whole log can be megabytes).
func (p *Proc) logTail() string {
	p.mu.Lock()
	p.logShown = true
	p.mu.Unlock()
	return tail(p.Log(), logTail)
}

func tail(s string, n int) string {
	if len(s) > n {
		s = "...\n" + s[len(s)-n:]
	}
	return s
}

// cleanup ends the process at the end of the test: SIGKILL unless gracefulCleanup, since
// its data dir is about to be removed and a graceful shutdown only costs time (consul
// takes ~1 s).
func (p *Proc) cleanup(t testing.TB) {
	end := p.kill
	if p.spec.gracefulCleanup {
		end = p.stop
	}
	if err := end(); err != nil {
		t.Errorf("harness: cleanup %s: %v", p.spec.name, err)
	}
	p.mu.Lock()
	shown := p.logShown
	p.mu.Unlock()
	if t.Failed() && !shown {
		t.Logf("harness: test failed; --- %s log (tail) ---\n%s", p.spec.name, tail(p.Log(), cleanupLogTail))
	}
}

// cleanEnv returns the environment without variables whose names start with any of
// the prefixes (etcd 3.4 exits when it sees an unknown ETCD_* variable).
func cleanEnv(prefixes ...string) []string {
	var env []string
outer:
	for _, kv := range os.Environ() {
		for _, pre := range prefixes {
			if strings.HasPrefix(kv, pre) {
				continue outer
			}
		}
		env = append(env, kv)
	}
	return env
}
