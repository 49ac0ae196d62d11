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

// ExpandReload is r's reload command for dest, expanded: {{.src}} and {{.dest}} are
// dest, {{.item}} (fan-out files) the item key, each shell-quoted.
func ExpandReload(r *Resource, dest, item string) (string, error) {
	v := r.cmdVars(dest)
	v.dest = dest
	if item != "" {
		v.item = item
	}
	return expandVars(r.ReloadCmd, v)
}
