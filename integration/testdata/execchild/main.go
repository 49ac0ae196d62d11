// Command execchild is the child program of herald exec's integration tests. It writes
// what it sees and receives into a state directory so that a test can assert on it:
//
//	DIR/env.json   its pid, start time and whole environment, written atomically at start
//	DIR/signals    one line "PID SIGNAME" per signal received
//	DIR/reloaded   with -reload-file F: the content of F, re-read on every SIGHUP
//
// On SIGTERM, SIGINT or SIGQUIT it does what -term says: "exit:N" exits with status N,
// "ignore" carries on, "die" ends by the signal itself (status 128+n). It exits when its
// parent (herald) is gone.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	var (
		dir        = flag.String("state", "", "state directory")
		term       = flag.String("term", "exit:0", "on TERM/INT/QUIT: exit:N, ignore or die")
		exitAfter  = flag.Duration("exit-after", 0, "exit by itself after this long")
		exitCode   = flag.Int("exit-code", 0, "status for -exit-after")
		dieSignal  = flag.String("die-signal", "", "with -exit-after: end by this signal (KILL, SEGV...) instead")
		reloadFile = flag.String("reload-file", "", "on SIGHUP, copy this file to DIR/reloaded")
	)
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "execchild: -state is required")
		os.Exit(2)
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	env := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	// env.json tells the test this child is up, so everything else it reports at start
	// is written first.
	if *reloadFile != "" {
		copyFile(*reloadFile, filepath.Join(*dir, "reloaded"))
	}
	b, _ := json.Marshal(map[string]any{"pid": os.Getpid(), "start": time.Now().UnixNano(), "env": env})
	writeAtomic(filepath.Join(*dir, "env.json"), b)

	var after <-chan time.Time
	if *exitAfter > 0 {
		after = time.After(*exitAfter)
	}
	// A test that fails midway SIGKILLs herald; -term ignore would then outlive it,
	// holding the test's output pipe open. Leave once re-parented.
	parent := os.Getppid()
	orphaned := time.NewTicker(50 * time.Millisecond)
	defer orphaned.Stop()
	for {
		select {
		case <-orphaned.C:
			if os.Getppid() != parent {
				os.Exit(0)
			}
		case <-after:
			if *dieSignal != "" {
				die(*dieSignal)
			}
			os.Exit(*exitCode)
		case s := <-sigs:
			sig := s.(syscall.Signal)
			appendLine(filepath.Join(*dir, "signals"), fmt.Sprintf("%d %s", os.Getpid(), name(sig)))
			switch sig {
			case syscall.SIGHUP:
				if *reloadFile != "" {
					copyFile(*reloadFile, filepath.Join(*dir, "reloaded"))
				}
			case syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT:
				switch {
				case *term == "ignore":
				case *term == "die":
					signal.Reset(sig)
					syscall.Kill(os.Getpid(), sig)
					time.Sleep(10 * time.Second)
				case strings.HasPrefix(*term, "exit:"):
					n, _ := strconv.Atoi(strings.TrimPrefix(*term, "exit:"))
					os.Exit(n)
				}
			}
		}
	}
}

func name(s syscall.Signal) string {
	switch s {
	case syscall.SIGTERM:
		return "TERM"
	case syscall.SIGINT:
		return "INT"
	case syscall.SIGQUIT:
		return "QUIT"
	case syscall.SIGHUP:
		return "HUP"
	case syscall.SIGUSR1:
		return "USR1"
	case syscall.SIGUSR2:
		return "USR2"
	}
	return s.String()
}

func die(sig string) {
	s := map[string]syscall.Signal{"KILL": syscall.SIGKILL, "SEGV": syscall.SIGSEGV, "TERM": syscall.SIGTERM}[sig]
	signal.Reset()
	syscall.Kill(os.Getpid(), s)
	time.Sleep(10 * time.Second)
	os.Exit(99)
}

func writeAtomic(path string, b []byte) {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "execchild:", err)
		os.Exit(3)
	}
	if err := os.Rename(tmp, path); err != nil {
		fmt.Fprintln(os.Stderr, "execchild:", err)
		os.Exit(3)
	}
}

func copyFile(from, to string) {
	b, err := os.ReadFile(from)
	if err != nil {
		b = []byte("error: " + err.Error())
	}
	writeAtomic(to, b)
}

func appendLine(path, line string) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "execchild:", err)
		return
	}
	defer f.Close()
	fmt.Fprintln(f, line)
}
