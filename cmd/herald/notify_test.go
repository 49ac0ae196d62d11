package main

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/resources/render"
)

// The daemon's notifications, as a real unixgram NOTIFY_SOCKET receives them: STATUS
// while not ready, no RELOADING/READY before the first READY=1, WATCHDOG=1 on every
// update when WATCHDOG_USEC is set, and nothing sent twice that did not change.
func TestDaemonNotifications(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	next := func() string {
		l.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 1024)
		n, err := l.Read(b)
		if err != nil {
			t.Fatal(err)
		}
		return string(b[:n])
	}
	d := newDaemon(env{lookup: func(k string) (string, bool) {
		v, ok := map[string]string{"NOTIFY_SOCKET": sock, "WATCHDOG_USEC": "2000000"}[k]
		return v, ok
	}}, discard())
	defer d.close()
	if d.every() != time.Second {
		t.Fatalf("every() = %v with WATCHDOG_USEC=2000000, want 1s", d.every())
	}
	d.update(false, "0/1 resources rendered")
	d.reloading() // not ready yet: says nothing
	d.reloaded()
	d.update(false, "0/1 resources rendered")
	d.update(true, "1/1 resources rendered")
	d.reloading()
	d.reloaded()
	d.stopping()
	for _, want := range []string{
		"STATUS=0/1 resources rendered\nWATCHDOG=1",
		"WATCHDOG=1",
		"READY=1\nSTATUS=1/1 resources rendered\nWATCHDOG=1",
		"RELOADING=1\nSTATUS=reloading resources",
		"READY=1",
		"STOPPING=1\nSTATUS=stopping",
	} {
		if got := next(); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

// Without NOTIFY_SOCKET nothing is sent and nothing fails.
func TestDaemonWithoutSystemd(t *testing.T) {
	d := newDaemon(env{lookup: func(string) (string, bool) { return "", false }}, discard())
	d.update(true, "x")
	d.reloading()
	d.stopping()
	d.close()
	if d.every() != 5*time.Second {
		t.Fatalf("every() = %v", d.every())
	}
}

// STOPPING=1 goes out when ctx ends (SIGTERM), and the deferred wait holds the exit
// until it has: closing the socket first lost it (a flaky TestSystemdNotifyWatch).
func TestDaemonStoppingBeforeExit(t *testing.T) {
	for range 20 {
		sock := filepath.Join(t.TempDir(), "notify")
		l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		d := newDaemon(env{lookup: func(k string) (string, bool) {
			return sock, k == "NOTIFY_SOCKET"
		}}, discard())
		ctx, cancel := context.WithCancel(context.Background())
		wait := d.stopOnDone(ctx)
		cancel()
		wait() // as the deferred call does right before close
		d.close()
		l.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 1024)
		n, err := l.Read(b)
		l.Close()
		if err != nil || string(b[:n]) != "STOPPING=1\nSTATUS=stopping" {
			t.Fatalf("got %q, %v", b[:n], err)
		}
	}
	// A daemon that ends without ctx ending (an error) says nothing and does not wait.
	d := newDaemon(env{lookup: func(string) (string, bool) { return "", false }}, discard())
	d.stopOnDone(context.Background())()
}

// A watch daemon gives its executable's pages back when it becomes ready, and again
// after quietBeats beats without a render burst — once per quiet spell, and only when a
// burst ran since the last release.
func TestDaemonReleasesPagesOnceQuiet(t *testing.T) {
	var logs strings.Builder
	d := newDaemon(env{lookup: func(string) (string, bool) { return "", false }},
		slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	// Releases are counted as they return; heaps counts those that returned the heap's
	// free pages too, by after.
	heaps := map[string]int{}
	d.release = func(after string, heap bool) {
		if heap {
			heaps[after]++
		}
		releasePages(d.log, after, heap)
	}
	releases := func(after string) int {
		return strings.Count(logs.String(), `msg="released the executable's pages" after=`+after)
	}
	beats := func(n int, bursts uint64, rendered int) {
		for range n {
			d.watchBeat(render.Progress{Rendered: rendered, Total: 1, Bursts: bursts}, backends.State{})
		}
	}
	beats(10, 0, 0) // not ready: start-up goes on
	if n := releases("start-up") + releases("quiet"); n != 0 {
		t.Fatalf("%d releases before ready", n)
	}
	beats(1, 1, 1)
	if n := releases("start-up"); n != 1 {
		t.Fatalf("%d start-up releases once ready, want 1", n)
	}
	// quietAfter runs n beats at bursts and then wants want quiet releases in all.
	quietAfter := func(n int, bursts uint64, want int, why string) {
		t.Helper()
		beats(n, bursts, 1)
		if got := releases("quiet"); got != want {
			t.Fatalf("%d quiet releases %s, want %d", got, why, want)
		}
	}
	// Start-up counts as a burst: what the watch maps back while it goes on starting
	// (its backend's watches) goes back after the first quiet spell, change or not.
	quietAfter(quietBeats-1, 1, 0, "one beat short of a quiet spell since start-up")
	quietAfter(1, 1, 1, "after a quiet spell since start-up")
	quietAfter(3*quietBeats, 1, 1, "with no burst since the first quiet one")
	beats(1, 2, 1) // a change rendered
	quietAfter(quietBeats-1, 2, 1, "one beat short of a quiet spell since a change")
	quietAfter(1, 2, 2, "after a quiet spell since a change")
	quietAfter(3*quietBeats, 2, 2, "in one quiet spell")
	// A burst between quiet beats starts the count again.
	beats(quietBeats-1, 3, 1)
	quietAfter(quietBeats-1, 4, 2, "with no quiet spell since")
	quietAfter(2, 4, 3, "after the third quiet spell")
	// The heap goes back after quiet spells only: the first changes would fault it in
	// again at once.
	if heaps["start-up"] != 0 || heaps["quiet"] != 3 {
		t.Errorf("heap returned at %v, want at the 3 quiet releases only", heaps)
	}
}

// After a quiet spell releasePages returns the heap's free pages to the system too: the
// runtime's scavenger would keep about as much as the heap grew to in the last burst.
func TestReleasePagesReturnsFreeHeap(t *testing.T) {
	free := func() uint64 {
		s := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	garbage := make([]byte, 64<<20)
	for i := range garbage {
		garbage[i] = byte(i)
	}
	runtime.KeepAlive(garbage)
	garbage = nil
	runtime.GC()
	// The 64 MiB are free now and still the process's: something to give back.
	if f := free(); f < 32<<20 {
		t.Fatalf("%d KiB of the heap free and kept after dropping 64 MiB, want at least 32 MiB", f>>10)
	}
	releasePages(slog.New(slog.DiscardHandler), "quiet", true)
	if f := free(); f > 4<<20 {
		t.Errorf("%d KiB of the heap free and kept after releasePages, want under 4 MiB", f>>10)
	}
}
