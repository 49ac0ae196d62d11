//go:build unix

package supervisor

import (
	"context"
	"math/rand/v2"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/resources/engine"
)

// loop is the state of supervising a running child: a burst of changes waits for
// quiet (then splay) before it is applied; a failed render retries; a child asked to
// stop gets SIGKILL after KillTimeout.
type loop struct {
	s                         *supervisor
	ctx                       context.Context
	quiet, splay, retry, kill *time.Timer  // stopped until armed
	burst                     engine.Burst // changes waiting for quiescence
	splaying                  bool
	backoff                   backends.Backoff // of the render retry
	stopping                  bool             // asked the child to stop; a new one starts when it has
	ending                    bool             // herald ends once the child has exited
}

func stoppedTimer() *time.Timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}

// loop supervises the running child until it exits.
func (s *supervisor) loop(ctx context.Context, sigs <-chan os.Signal, chld <-chan os.Signal) (int, error) {
	l := &loop{s: s, ctx: ctx, quiet: stoppedTimer(), splay: stoppedTimer(), retry: stoppedTimer(), kill: stoppedTimer(), backoff: engine.RetryBackoff()}
	defer func() {
		for _, t := range []*time.Timer{l.quiet, l.splay, l.retry, l.kill} {
			t.Stop()
		}
	}()
	done := ctx.Done()
	for {
		select {
		case ev := <-s.eng.Events():
			l.changed(ev)
		case <-l.quiet.C:
			l.quieted()
		case <-l.splay.C:
			l.splaying = false
			l.apply()
		case <-l.retry.C:
			l.apply()
		case <-l.kill.C:
			s.log.Warn("child did not exit within --kill-timeout; sending SIGKILL", "pid", s.child.pid, "timeout", s.cfg.KillTimeout)
			s.child.kill()
		case ex := <-s.exits:
			if code, end, err := l.exited(ex); end {
				return code, err
			}
		case <-chld:
			for _, ex := range reap() {
				if code, end, err := l.exited(ex); end {
					return code, err
				}
			}
		case sig := <-sigs:
			l.signal(sig)
		case <-done:
			done = nil
			l.cancelled()
		}
	}
}

// changed applies ev and every event already queued to the cache and, when that changed
// anything, (re)arms the quiescence timer: Wait.Min after the last change, at most
// Wait.Max after the first of the burst.
func (l *loop) changed(ev backends.Event) {
	s := l.s
	changed := !s.cache.Apply(ev).Empty()
	for more := true; more; {
		select {
		case ev := <-s.eng.Events():
			changed = !s.cache.Apply(ev).Empty() || changed
		default:
			more = false
		}
	}
	if !changed || l.ending {
		return
	}
	l.quiet.Reset(max(l.burst.Change(s.cfg.Wait.Min, s.cfg.Wait.Max, time.Now()), 0))
}

// quieted: the burst is over; apply it, after a random splay when one is set.
func (l *loop) quieted() {
	l.burst.Reset()
	switch {
	case l.splaying:
	case l.s.cfg.Splay > 0:
		l.splaying = true
		d := rand.N(l.s.cfg.Splay)
		l.s.log.Debug("splay before acting on the change", "delay", d.Round(time.Millisecond))
		l.splay.Reset(d)
	default:
		l.apply()
	}
}

// calm drops a pending burst and retry: herald is ending.
func (l *loop) calm() {
	l.quiet.Stop()
	l.splay.Stop()
	l.retry.Stop()
	l.burst.Reset()
	l.splaying = false
}

// stop asks the child to end: KillSignal, then SIGKILL after KillTimeout.
func (l *loop) stop() {
	s := l.s
	if err := s.child.signal(s.cfg.KillSignal); err != nil {
		s.log.Warn("cannot signal the child", "pid", s.child.pid, "signal", s.cfg.KillSignal, "err", err)
	}
	l.kill.Reset(s.cfg.KillTimeout)
}

// render renders the templates within Timeout.
func (l *loop) render() (changed bool, err error) {
	c, cancel := context.WithTimeout(l.ctx, l.s.cfg.Timeout)
	defer cancel()
	return l.s.render(c)
}

// rerender renders the templates before the child starts again or is signalled; a
// failure leaves the files as they were.
func (l *loop) rerender() {
	if _, err := l.render(); err != nil {
		l.s.log.Error("render failed; files left as they were", "err", err)
	}
}

// apply brings the child up to date with the cache: restart or reload if its variables
// or any rendered file changed.
func (l *loop) apply() {
	s := l.s
	if l.stopping || l.ending {
		return // the child that starts next reads the latest data anyway
	}
	changed, err := l.render()
	if err != nil {
		if engine.IsLoadError(err) {
			l.retry.Reset(l.backoff.Next())
		}
		s.log.Error("render failed; the child keeps running as it is", "err", err)
		return
	}
	l.backoff.Reset()
	vars := s.vars(false)
	diff := diffNames(s.applied, vars)
	switch {
	case !changed && len(diff) == 0:
		s.log.Debug("change leaves the child's variables and files as they are")
	case s.cfg.ReloadSignal != 0:
		l.reload(vars, changed, diff)
	default:
		l.restart(vars, changed, diff)
	}
}

// reload sends the child ReloadSignal for a change.
func (l *loop) reload(vars []Var, changed bool, diff []string) {
	s := l.s
	s.log.Info("data changed; signalling the child", "pid", s.child.pid, "signal", s.cfg.ReloadSignal,
		"files_changed", changed, "vars_changed", strings.Join(diff, ","))
	if len(diff) > 0 {
		s.log.Info("a running process cannot see new variables; the child sees them when it next starts", "vars", strings.Join(diff, ","))
	}
	if err := s.child.signal(s.cfg.ReloadSignal); err != nil {
		s.log.Warn("cannot signal the child", "pid", s.child.pid, "err", err)
	}
	s.applied = vars
}

// restart stops the child for a change; exited starts the next one.
func (l *loop) restart(vars []Var, changed bool, diff []string) {
	s := l.s
	// Never stop a healthy child for a start that cannot succeed.
	if err := startable(s.cfg.Command, s.environ(vars)); err != nil {
		s.log.Error("data changed, but a new child could not start; the running child keeps running", "pid", s.child.pid, "err", err)
		return
	}
	s.log.Info("data changed; restarting the child", "pid", s.child.pid, "signal", s.cfg.KillSignal,
		"files_changed", changed, "vars_changed", strings.Join(diff, ","))
	l.stopping = true
	l.stop()
}

// exited handles a process that ended: an orphan (PID 1), the child stopped for a
// restart (a new one starts), or the child's end, which ends herald with its status.
func (l *loop) exited(ex exit) (code int, end bool, err error) {
	s := l.s
	if s.child == nil || ex.pid != s.child.pid {
		s.log.Debug("reaped an orphan", "pid", ex.pid, "status", ExitCode(ex.ws))
		return 0, false, nil
	}
	if s.cfg.Reap {
		s.child.release()
	}
	l.kill.Stop()
	code = ExitCode(ex.ws)
	if l.stopping && !l.ending {
		l.stopping = false
		s.log.Info("child stopped for a restart", "pid", ex.pid, "status", code)
		s.child = nil
		l.rerender()
		if err := s.spawn(); err != nil {
			return 1, true, err
		}
		return 0, false, nil
	}
	s.log.Info("child exited", "pid", ex.pid, "status", code)
	s.child = nil
	return code, true, nil
}

// signal handles a signal herald received: SIGHUP as the reload signal reloads files
// and child; anything else is forwarded, and a terminating one ends herald with the
// child.
func (l *loop) signal(sig os.Signal) {
	s := l.s
	ss, _ := sig.(syscall.Signal)
	if ss == syscall.SIGHUP && s.cfg.ReloadSignal == syscall.SIGHUP && !l.ending && !l.stopping {
		// SIGHUP is the reload signal: reload as for a change, files first.
		l.rerender()
		s.log.Info("SIGHUP: reloading the child", "pid", s.child.pid)
		if err := s.child.signal(ss); err != nil {
			s.log.Warn("cannot signal the child", "pid", s.child.pid, "err", err)
		}
		return
	}
	if terminating(ss) && !l.ending {
		l.ending = true
		l.calm()
	}
	s.log.Info("forwarding signal", "signal", sig, "pid", s.child.pid)
	if err := s.child.signal(ss); err != nil {
		s.log.Warn("cannot forward signal", "signal", sig, "pid", s.child.pid, "err", err)
	}
}

// cancelled: Run's context ended; stop the child as for a restart, then end.
func (l *loop) cancelled() {
	s := l.s
	s.log.Info("stopping the child", "pid", s.child.pid, "signal", s.cfg.KillSignal)
	if !l.ending {
		l.ending = true
		l.calm()
	}
	if !l.stopping {
		l.stop()
	}
}
