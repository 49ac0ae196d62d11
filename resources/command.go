package resources

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"text/template"
	"text/template/parse"
	"time"

	"github.com/heraldhq/herald/resources/internal/shell"
)

// DefaultCommandTimeout bounds check and reload commands that set no timeout: a hung
// `haproxy -c` must not wedge the daemon.
const DefaultCommandTimeout = 60 * time.Second

// maxOutput caps what we keep of a command's output for logs and errors.
const maxOutput = 8 << 10

// expandCmd fills {{.src}} and {{.dest}} as confd does, but quoted for /bin/sh: a path
// with a space, a quote or a ';' stays one word and runs nothing. The quoting fits
// where the placeholder stands: bare (haproxy -c -f {{.src}}), inside "..." or inside
// '...', so confd's commands work unchanged, quoted or not. Only {{.src}} and
// {{.dest}} may appear: anything else could not be quoted safely.
func expandCmd(cmd, src, dest string) (string, error) {
	return expandVars(cmd, cmdVars{src: src, dest: dest})
}

// cmdVars are a command's placeholders. item is a fan-out file's item key, for
// {{.item}}; without hasItem (a resource without each) {{.item}} is refused.
type cmdVars struct {
	src, dest, item string
	hasItem         bool
}

// CmdVars are r's placeholders with {{.src}} = src.
func (r *Resource) cmdVars(src string) cmdVars {
	return cmdVars{src: src, dest: r.Dest, item: r.ItemKey, hasItem: r.Each != nil || r.Parent != ""}
}

func expandVars(cmd string, v cmdVars) (string, error) {
	if cmd == "" {
		return "", nil
	}
	t, err := template.New("cmd").Parse(cmd)
	if err != nil {
		return "", err
	}
	var (
		b strings.Builder
		q shellQuote
	)
	for _, n := range t.Tree.Root.Nodes {
		switch n := n.(type) {
		case *parse.TextNode:
			b.Write(n.Text)
			q = q.scan(n.Text)
		case *parse.ActionNode:
			switch name := placeholder(n); {
			case name == "src":
				b.WriteString(q.quote(v.src))
			case name == "dest":
				b.WriteString(q.quote(v.dest))
			case name == "item" && v.hasItem:
				b.WriteString(q.quote(v.item))
			default:
				return "", fmt.Errorf("%s: %s", n, v.allowed())
			}
		default:
			return "", fmt.Errorf("%s: %s", n, v.allowed())
		}
	}
	return b.String(), nil
}

func (v cmdVars) allowed() string {
	if v.hasItem {
		return "only {{.src}}, {{.dest}} and {{.item}} may be used"
	}
	return "only {{.src}} and {{.dest}} may be used"
}

// placeholder returns "src" for {{.src}}, "dest" for {{.dest}}, else "".
func placeholder(n *parse.ActionNode) string {
	if len(n.Pipe.Decl) != 0 || len(n.Pipe.Cmds) != 1 || len(n.Pipe.Cmds[0].Args) != 1 {
		return ""
	}
	f, ok := n.Pipe.Cmds[0].Args[0].(*parse.FieldNode)
	if !ok || len(f.Ident) != 1 {
		return ""
	}
	return f.Ident[0]
}

// shellQuote is the quoting state of /bin/sh at a point of a command line.
type shellQuote int

const (
	bare shellQuote = iota
	inSingle
	inDouble
)

// scan follows the quotes in text, starting in state q.
func (q shellQuote) scan(text []byte) shellQuote {
	for i := 0; i < len(text); i++ {
		switch c := text[i]; {
		case q == inSingle:
			if c == '\'' {
				q = bare
			}
		case c == '\\':
			i++ // the next character is escaped, outside quotes and inside "..."
		case q == inDouble:
			if c == '"' {
				q = bare
			}
		case c == '\'':
			q = inSingle
		case c == '"':
			q = inDouble
		}
	}
	return q
}

// quote spells v as one word where the shell is in state q. A bare value of only
// characters the shell never treats specially is left as it is, so logs stay readable.
func (q shellQuote) quote(v string) string {
	switch q {
	case inSingle:
		return strings.ReplaceAll(v, "'", `'\''`)
	case inDouble:
		var b strings.Builder
		for i := 0; i < len(v); i++ {
			if strings.IndexByte("\\\"$`", v[i]) >= 0 {
				b.WriteByte('\\')
			}
			b.WriteByte(v[i])
		}
		return b.String()
	}
	if v != "" && strings.Trim(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./,:+=@%-") == "" {
		return v
	}
	return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
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

// Summary says how the command failed without its text or output, which may hold what
// was rendered: "check_cmd failed: exit status 1", "reload_cmd timed out after 30s".
func (e *CommandError) Summary() string {
	if e.Timeout > 0 {
		return fmt.Sprintf("%s timed out after %s", e.Kind, e.Timeout)
	}
	var ee *exec.ExitError
	if errors.As(e.Err, &ee) {
		return fmt.Sprintf("%s failed: %s", e.Kind, ee.ProcessState)
	}
	return e.Kind + " failed to start"
}

// runCommand runs cmd through /bin/sh -c in its own process group, so that on timeout the
// whole tree (haproxy -c, a script's children) is killed, not just the shell.
func runCommand(ctx context.Context, kind, cmd string, timeout time.Duration) (string, error) {
	if timeout <= 0 {
		timeout = DefaultCommandTimeout
	}
	out := &shell.Head{Max: maxOutput}
	timedOut, err := shell.Run(ctx, cmd, timeout, out)
	if err != nil {
		ce := &CommandError{Kind: kind, Cmd: cmd, Output: out.String(), Err: err}
		if timedOut {
			ce.Timeout = timeout
		}
		return out.String(), ce
	}
	return out.String(), nil
}
