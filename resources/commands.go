package resources

import (
	"context"
	"time"
)

// RunCommand runs a check or reload command (kind names it in errors) in its own
// process group, bounded by timeout (0: DefaultCommandTimeout), and returns its capped output.
func RunCommand(ctx context.Context, kind, cmd string, timeout time.Duration) (string, error) {
	return runCommand(ctx, kind, cmd, timeout)
}

// ExpandCmd fills a command's {{.src}} and {{.dest}} placeholders, shell-quoted.
func ExpandCmd(cmd, src, dest string) (string, error) {
	return expandCmd(cmd, src, dest)
}
