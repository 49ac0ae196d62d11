// Package sdnotify speaks systemd's service notification protocol (sd_notify(3)): one
// datagram of newline-separated VAR=VALUE lines to the unix socket named by NOTIFY_SOCKET,
// for units of Type=notify (READY=1, RELOADING=1, STOPPING=1, STATUS=..., WATCHDOG=1).
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Notifier sends notifications to one socket. A nil *Notifier (herald not started by
// systemd, or by a unit that is not Type=notify) sends nothing: callers need no checks.
type Notifier struct {
	conn *net.UnixConn
}

// Open connects to socket, NOTIFY_SOCKET's value: a path, or "@name" for an abstract
// socket. An empty socket returns a nil Notifier.
func Open(socket string) (*Notifier, error) {
	if socket == "" {
		return nil, nil
	}
	if !strings.HasPrefix(socket, "/") && !strings.HasPrefix(socket, "@") {
		return nil, fmt.Errorf("NOTIFY_SOCKET %q: want an absolute path or an @abstract name", socket)
	}
	// Go maps a leading '@' to the abstract namespace itself.
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("NOTIFY_SOCKET %s: %w", socket, err)
	}
	return &Notifier{conn: c}, nil
}

// Send sends the lines as one notification. A STATUS= line must not contain a newline
// (it would end the line): newlines in it become spaces.
func (n *Notifier) Send(lines ...string) error {
	if n == nil {
		return nil
	}
	for i, l := range lines {
		lines[i] = strings.ReplaceAll(l, "\n", " ")
	}
	if _, err := n.conn.Write([]byte(strings.Join(lines, "\n"))); err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	return nil
}

// Close closes the socket.
func (n *Notifier) Close() error {
	if n == nil {
		return nil
	}
	return n.conn.Close()
}

// WatchdogInterval is how often to send WATCHDOG=1 given WATCHDOG_USEC and WATCHDOG_PID:
// half the timeout, as sd_watchdog_enabled(3) advises; 0 when the watchdog is off or meant
// for another process (WATCHDOG_PID names someone else).
func WatchdogInterval(usec, watchdogPID string, pid int) (time.Duration, error) {
	if usec == "" {
		return 0, nil
	}
	if watchdogPID != "" {
		p, err := strconv.Atoi(watchdogPID)
		if err != nil {
			return 0, fmt.Errorf("WATCHDOG_PID %q: not a number", watchdogPID)
		}
		if p != pid {
			return 0, nil
		}
	}
	u, err := strconv.ParseUint(usec, 10, 63)
	if err != nil || u == 0 {
		return 0, errors.New("WATCHDOG_USEC " + strconv.Quote(usec) + ": want a positive number of microseconds")
	}
	return time.Duration(u) * time.Microsecond / 2, nil
}
