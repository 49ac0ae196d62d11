//go:build unix

package supervisor

import (
	"fmt"
	"os/exec"
	"strings"
	"syscall"
)

// startable reports why c could not start with env, as far as can be known without
// starting it: the program is gone or not executable, or the environment and arguments
// exceed what execve accepts (E2BIG). A child is stopped for a restart only when this
// passes, so a change that no child could start with leaves the running one alone.
func startable(c Command, env []string) error {
	if _, err := exec.LookPath(c.Path); err != nil {
		return fmt.Errorf("start %s: %w", c.Path, err)
	}
	size, n := 0, len(c.Args)+len(env)+2 // argv[0] and the NULs of both lists
	for _, s := range append(c.Args, env...) {
		size += len(s) + 1
	}
	size += len(c.Path) + 1
	size += n * 8 // one pointer per string
	if max := argMax(); size > max {
		return fmt.Errorf("start %s: arguments and environment take %d bytes, over the kernel's %d (a quarter of the stack limit)", c.Path, size, max)
	}
	for _, s := range env {
		if len(s)+1 > MaxArgStrlen {
			name, _, _ := strings.Cut(s, "=")
			return fmt.Errorf("start %s: variable %s is over the kernel's %d-byte limit", c.Path, name, MaxArgStrlen)
		}
	}
	return nil
}

// argMax is what Linux's execve accepts for arguments and environment together: a
// quarter of the stack limit, at most 3/4 of 8 MiB, at least 128 KiB (fs/exec.c).
func argMax() int {
	const stkLim, argMaxFloor = 8 << 20, 32 * 4096
	limit := stkLim / 4 * 3
	var rl syscall.Rlimit
	// uint64 on Linux, int64 on FreeBSD: compare as uint64 (a negative "infinity" is huge).
	if err := syscall.Getrlimit(syscall.RLIMIT_STACK, &rl); err == nil && uint64(rl.Cur)/4 < uint64(limit) {
		limit = int(uint64(rl.Cur) / 4)
	}
	return max(limit, argMaxFloor)
}
