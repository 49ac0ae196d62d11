//go:build !unix

package shell

import (
	"context"
	"errors"
	"os/exec"
	"runtime"
)

// Command fails here: herald's commands are POSIX shell lines whose whole process tree
// must die on a timeout, which needs /bin/sh and process groups.
func Command(context.Context, string) (*exec.Cmd, error) {
	return nil, errors.New("commands (check_cmd, reload_cmd, check scripts) are not supported on " + runtime.GOOS + ": they need /bin/sh and process groups")
}
