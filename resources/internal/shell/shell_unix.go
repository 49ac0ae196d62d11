//go:build unix

// Package shell runs a user's command line (check_cmd, reload_cmd, a registration's
// check) the one way herald does: through /bin/sh -c, in a process group of its own.
package shell

import (
	"context"
	"os/exec"
	"syscall"
	"time"
)

// Command returns `/bin/sh -c line` in its own process group: when ctx ends the whole
// group is killed (haproxy -c, a script's children), not just the shell, and Wait gives
// up on output pipes a straggler keeps open one second later.
func Command(ctx context.Context, line string) (*exec.Cmd, error) {
	c := exec.CommandContext(ctx, "/bin/sh", "-c", line)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = time.Second
	return c, nil
}
