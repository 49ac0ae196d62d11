package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
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
// executable's pages it touched (releasePages).
type daemon struct {
	n        *sdnotify.Notifier
	watchdog time.Duration // 0: off
	log      *slog.Logger

	mu     sync.Mutex
	ready  bool
	status string
	failed bool // a send failed already (logged once)
}

// newDaemon reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID. A socket it cannot use
// is logged and notifications are off: herald's job does not depend on them.
func newDaemon(e env, log *slog.Logger) *daemon {
	d := &daemon{log: log}
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
		releasePages(d.log)
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
	releasePages(d.log)
}

// releasePages gives back the pages of herald's executable that start-up (or a reload:
// parsing resource files and templates again) touched and the daemon may not need again;
// what it does need is mapped back on its next use. See pagetrim.
func releasePages(log *slog.Logger) {
	st, err := pagetrim.Executable()
	if err != nil {
		log.Debug("executable pages not released", "err", err)
		return
	}
	log.Debug("released the executable's start-up pages", "released_kib", st.Released>>10, "kept_kib", st.Kept>>10)
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
