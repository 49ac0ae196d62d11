package shell

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"time"
)

// Run runs line with Command, writing its stdout and stderr to out (a Head or a Tail, so
// that a chatty command cannot grow herald's memory). A timeout above zero bounds the
// run; when it fires the whole process group is killed and timedOut is true. It is the
// one runner behind check_cmd, reload_cmd and a registration's check command.
func Run(ctx context.Context, line string, timeout time.Duration, out io.Writer) (timedOut bool, err error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	c, err := Command(ctx, line)
	if err != nil {
		return false, err
	}
	c.Stdout, c.Stderr = out, out
	if err := c.Run(); err != nil {
		return timeout > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded), err
	}
	return false, nil
}

// Head keeps the first Max bytes written to it: a reload's output for logs and errors.
type Head struct {
	Max       int
	buf       bytes.Buffer
	truncated bool
}

func (h *Head) Write(p []byte) (int, error) {
	if room := h.Max - h.buf.Len(); room > 0 {
		if len(p) > room {
			h.buf.Write(p[:room])
			h.truncated = true
		} else {
			h.buf.Write(p)
		}
	} else if len(p) > 0 {
		h.truncated = true
	}
	return len(p), nil
}

// String is what was kept, with a note when more was written.
func (h *Head) String() string {
	if h.truncated {
		return h.buf.String() + "\n[output truncated]"
	}
	return h.buf.String()
}

// Tail keeps the last Max bytes written to it: enough to say why a check failed.
type Tail struct {
	Max int
	b   []byte
}

func (t *Tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > t.Max {
		t.b = t.b[len(t.b)-t.Max:]
	}
	return len(p), nil
}

// String is the kept output on one line, its lines joined by " | ".
func (t *Tail) String() string {
	s := string(bytes.TrimSpace(t.b))
	return strings.ReplaceAll(s, "\n", " | ")
}
