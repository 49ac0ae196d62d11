package sdnotify

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

// listen is systemd's side: a unixgram socket that receives notifications.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func recv(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 4096)
	n, err := c.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[:n])
}

func TestSendPathAndAbstract(t *testing.T) {
	for _, name := range []string{filepath.Join(t.TempDir(), "notify"), "@herald-sdnotify-test-" + t.Name()} {
		l := listen(t, name)
		n, err := Open(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Send("READY=1", "STATUS=2 resources\nrendered"); err != nil {
			t.Fatal(err)
		}
		if got, want := recv(t, l), "READY=1\nSTATUS=2 resources rendered"; got != want {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
		n.Close()
	}
}

func TestOpenErrors(t *testing.T) {
	if n, err := Open(""); n != nil || err != nil {
		t.Errorf("Open(\"\") = %v, %v; want nil, nil", n, err)
	}
	var none *Notifier
	if err := none.Send("READY=1"); err != nil {
		t.Errorf("nil Notifier: %v", err)
	}
	if _, err := Open("relative/sock"); err == nil {
		t.Error("relative path accepted")
	}
	if _, err := Open(filepath.Join(t.TempDir(), "absent")); err == nil {
		t.Error("missing socket accepted")
	}
}

func TestWatchdogInterval(t *testing.T) {
	for _, tc := range []struct {
		usec, pid string
		want      time.Duration
		bad       bool
	}{
		{"", "", 0, false},
		{"10000000", "", 5 * time.Second, false},
		{"10000000", "42", 5 * time.Second, false},
		{"10000000", "43", 0, false},
		{"0", "", 0, true},
		{"x", "", 0, true},
		{"1000", "x", 0, true},
	} {
		got, err := WatchdogInterval(tc.usec, tc.pid, 42)
		if got != tc.want || (err != nil) != tc.bad {
			t.Errorf("WatchdogInterval(%q, %q) = %v, %v", tc.usec, tc.pid, got, err)
		}
	}
}
