package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/cmd/herald/internal/pagetrim"
	"github.com/heraldhq/herald/cmd/herald/internal/sdnotify"
	"github.com/heraldhq/herald/resources/announce"
	"github.com/heraldhq/herald/resources/render"
)

// daemon tells systemd how a watch or register daemon is doing (Type=notify units): READY=1
// once it has done its job once, RELOADING=1/READY=1 around a resource reload, STOPPING=1,
// STATUS= lines, and WATCHDOG=1 from the daemon's own loop. Without NOTIFY_SOCKET it sends
// nothing. At those two points start-up work is over, and the daemon gives back the
// executable's pages it touched (releasePages); watch does again after a quiet spell.
type daemon struct {
	n        *sdnotify.Notifier
	watchdog time.Duration // 0: off
	log      *slog.Logger

	mu     sync.Mutex
	ready  bool
	status string
	failed bool // a send failed already (logged once)

	// watch only: the render bursts seen, the beats since the last one, and whether a
	// burst ran since the pages were last released.
	bursts  uint64
	quiet   int
	touched bool

	// release runs releasePages; by default on a goroutine of its own: with the heap,
	// the GC it runs takes milliseconds (12 ms with 200 templates) the loop calling must
	// not wait for.
	release func(after string, heap bool)
}

// quietBeats is how many beats in a row without a render make a watch daemon quiet: it
// then gives back the executable's pages its renders mapped in again (30 s at the
// default beat of 5 s; half the systemd watchdog's interval when that is set). A fleet
// sidecar spends most of its life quiet; the next change maps back what it needs by
// minor faults (measured: ~1 ms of CPU per process in a 50-process fleet).
const quietBeats = 6

// newDaemon reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID. A socket it cannot use
// is logged and notifications are off: herald's job does not depend on them.
func newDaemon(e env, log *slog.Logger) *daemon {
	d := &daemon{log: log}
	d.release = func(after string, heap bool) { go releasePages(log, after, heap) }
	sock, _ := e.lookup("NOTIFY_SOCKET")
	n, err := sdnotify.Open(sock)
	if err != nil {
		log.Error("systemd notification off", "err", err)
		return d
	}
	usec, _ := e.lookup("WATCHDOG_USEC")
	pid, _ := e.lookup("WATCHDOG_PID")
	wd, err := sdnotify.WatchdogInterval(usec, pid, os.Getpid())
	if err != nil {
		log.Error("systemd watchdog off", "err", err)
	}
	if n != nil {
		d.n, d.watchdog = n, wd
	}
	return d
}

// every is how often the daemon's loop should call update: the watchdog's pace, else 5 s.
func (d *daemon) every() time.Duration {
	if d.watchdog > 0 {
		return d.watchdog
	}
	return 5 * time.Second
}

// update is called from the daemon's main loop: it pets the watchdog (so a wedged loop
// stops the pings and systemd restarts herald), says READY=1 the first time ready is
// true (and then releases start-up's pages), and sends status when it changed.
func (d *daemon) update(ready bool, status string) {
	if d.notify(ready, status) {
		d.release("start-up", false)
	}
}

// watchBeat is update for watch, which also gives the pages back after a quiet spell.
func (d *daemon) watchBeat(p render.Progress, st backends.State) {
	ready, status := watchStatus(p, st)
	first := d.notify(ready, status)
	d.mu.Lock()
	if p.Bursts != d.bursts {
		d.bursts, d.quiet, d.touched = p.Bursts, 0, true
	} else {
		d.quiet++
	}
	quiet := !first && d.ready && d.touched && d.quiet >= quietBeats
	switch {
	case first:
		// A watch goes on starting after it is ready: its backend opens its watches
		// (etcd's gRPC stream, for one), which maps much of the code just released back
		// in. Start-up counts as a burst, so that the first quiet spell gives that back
		// too, even in a watch whose keys never change (etcd, one resource, no change:
		// RSS 15.6 MB 20 s after start, 10.1 MB after that release).
		d.quiet, d.touched = 0, true
	case quiet:
		d.touched = false
	}
	d.mu.Unlock()
	switch {
	case first:
		d.release("start-up", false)
	case quiet:
		d.release("quiet", true)
	}
}

// notify sends what update has to say and reports whether this made the daemon ready.
func (d *daemon) notify(ready bool, status string) (first bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var lines []string
	if ready && !d.ready {
		d.ready, first = true, true
		lines = append(lines, "READY=1")
	}
	if status != d.status {
		d.status = status
		lines = append(lines, "STATUS="+status)
	}
	if d.watchdog > 0 {
		lines = append(lines, "WATCHDOG=1")
	}
	d.sendLocked(lines...)
	return first
}

// reloading and reloaded bracket a reload of the resource files (SIGHUP, an edit). Before
// the first READY=1 they say nothing: systemd still waits for that one.
func (d *daemon) reloading() { d.sendIfReady("RELOADING=1", "STATUS=reloading resources") }
func (d *daemon) reloaded() {
	d.sendIfReady("READY=1")
	d.release("reload", false)
}

// releasePages gives back the pages of herald's executable that start-up, a reload
// (parsing resource files and templates again) or the renders before a quiet spell
// touched and the daemon may not need again; what it does need is mapped back on its
// next use. See pagetrim. after says which of those it follows.
//
// With heap (a quiet spell), it first returns the heap's free pages to the system: the
// runtime's own scavenger keeps about as much as the heap grew to in the last burst
// (measured with 200 templates on a 1,000-key prefix: 14.0 MB of anonymous memory once
// quiet without this, 9.5–10.3 MB with it). Not at start-up or after a reload: the first
// changes would fault those pages in again at once (an early attempt measured a fleet's
// p50 82 → 99 ms), while after a quiet spell the next change pays that once.
func releasePages(log *slog.Logger, after string, heap bool) {
	start := time.Now()
	if heap {
		// Before the executable's pages: the GC this runs maps in code of its own.
		debug.FreeOSMemory()
	}
	st, err := pagetrim.Executable()
	if err != nil {
		log.Debug("executable pages not released", "err", err)
		return
	}
	log.Debug("released the executable's pages", "after", after, "released_kib", st.Released>>10, "kept_kib", st.Kept>>10, "took", time.Since(start))
}

func (d *daemon) stopping() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.sendLocked("STOPPING=1", "STATUS=stopping")
}

// stopOnDone says STOPPING=1 as soon as ctx ends (SIGTERM), while the daemon still
// finishes its work. The returned func, deferred before close, waits for that message:
// the process must not exit (and close the socket) before systemd has it.
func (d *daemon) stopOnDone(ctx context.Context) (wait func()) {
	sent := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(sent)
		d.stopping()
	})
	return func() {
		if !stop() { // started: ctx ended
			<-sent
		}
	}
}

func (d *daemon) sendIfReady(lines ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ready {
		d.sendLocked(lines...)
	}
}

func (d *daemon) sendLocked(lines ...string) {
	if len(lines) == 0 {
		return
	}
	if err := d.n.Send(lines...); err != nil && !d.failed {
		d.failed = true
		d.log.Warn("cannot notify systemd", "err", err)
	}
}

func (d *daemon) close() { d.n.Close() }

// watchStatus is watch's STATUS= line and whether every resource has rendered once.
func watchStatus(p render.Progress, st backends.State) (bool, string) {
	msg := fmt.Sprintf("%d/%d resources rendered; backend %s", p.Rendered, p.Total, backendStatus(st))
	if len(p.Failing) > 0 {
		msg += "; failing: " + strings.Join(p.Failing, ", ")
	}
	return p.Rendered == p.Total, msg
}

// registerStatus is register's STATUS= line and whether every instance is registered
// (announced, or registered and withdrawn while its check fails).
func registerStatus(sts []announce.Status, st backends.State) (bool, string) {
	n := map[announce.State]int{}
	for _, s := range sts {
		n[s.State]++
	}
	done := n[announce.StateAnnounced] + n[announce.StateWithdrawn]
	msg := fmt.Sprintf("%d/%d instances announced", n[announce.StateAnnounced], len(sts))
	if w := n[announce.StateWithdrawn]; w > 0 {
		msg += fmt.Sprintf(", %d withdrawn (check failing)", w)
	}
	return done == len(sts), msg + "; backend " + backendStatus(st)
}

func backendStatus(st backends.State) string {
	s := st.Conn.String()
	if st.Endpoint != "" {
		s += " (" + st.Endpoint + ")"
	}
	return s
}
