package resources

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"text/template"
	"time"
)

// DefaultCommandTimeout bounds check and reload commands that set no timeout: a hung
// `haproxy -c` must not wedge the daemon.
const DefaultCommandTimeout = 60 * time.Second

// maxOutput caps what we keep of a command's output for logs and errors.
const maxOutput = 8 << 10

// expandCmd fills {{.src}} and {{.dest}} as confd does.
func expandCmd(cmd, src, dest string) (string, error) {
	if cmd == "" {
		return "", nil
	}
	t, err := template.New("cmd").Option("missingkey=error").Parse(cmd)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if err := t.Execute(&b, map[string]string{"src": src, "dest": dest}); err != nil {
		return "", err
	}
	return b.String(), nil
}

// CommandError is a failed check or reload command, with what it printed.
type CommandError struct {
	Kind    string // "check_cmd" or "reload_cmd"
	Cmd     string
	Output  string
	Err     error
	Timeout time.Duration // set when it was killed for taking too long
}

func (e *CommandError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %q ", e.Kind, e.Cmd)
	if e.Timeout > 0 {
		fmt.Fprintf(&b, "timed out after %s", e.Timeout)
	} else {
		fmt.Fprintf(&b, "failed: %v", e.Err)
	}
	if out := strings.TrimSpace(e.Output); out != "" {
		b.WriteString(": ")
		b.WriteString(out)
	}
	return b.String()
}

func (e *CommandError) Unwrap() error { return e.Err }

// runCommand runs cmd through /bin/sh -c in its own process group, so that on timeout the
// whole tree (haproxy -c, a script's children) is killed, not just the shell.
func runCommand(ctx context.Context, kind, cmd string, timeout time.Duration) (string, error) {
	if timeout <= 0 {
		timeout = DefaultCommandTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := exec.CommandContext(ctx, "/bin/sh", "-c", cmd)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = time.Second
	var out capped
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	if err != nil {
		ce := &CommandError{Kind: kind, Cmd: cmd, Output: out.String(), Err: err}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			ce.Timeout = timeout
		}
		return out.String(), ce
	}
	return out.String(), nil
}

// capped keeps the first maxOutput bytes written to it.
type capped struct {
	buf       bytes.Buffer
	truncated bool
}

func (c *capped) Write(p []byte) (int, error) {
	if room := maxOutput - c.buf.Len(); room > 0 {
		if len(p) > room {
			c.buf.Write(p[:room])
			c.truncated = true
		} else {
			c.buf.Write(p)
		}
	} else if len(p) > 0 {
		c.truncated = true
	}
	return len(p), nil
}

func (c *capped) String() string {
	if c.truncated {
		return c.buf.String() + "\n[output truncated]"
	}
	return c.buf.String()
}
