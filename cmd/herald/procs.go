package main

import (
	"log/slog"
	"runtime"
	"slices"
	"sync"

	"github.com/heraldhq/herald/resources"
)

// fewResources is the most resources, none fanning out (each), that a watch runs on one
// P. Such a watch renders one template at a time anyway; what a second P costs it is the
// scheduler's: each hand-off between goroutines (watch, loop, sync worker) wakes another
// thread, which then spins looking for work. Measured (2026-12-07, 2 cores): a fleet of
// 50 one-resource watches on one etcd used 73 instead of 106 ms of CPU per change, p50
// 50 instead of 70 ms; a lone watch of 1 or 200 small resources renders as fast on one
// P as on two.
const fewResources = 4

// procs sets how many Ps (GOMAXPROCS) a watch runs on: one while its resources are few,
// the runtime's default otherwise. A GOMAXPROCS set in the environment is left alone.
type procs struct {
	log    *slog.Logger
	pinned bool // GOMAXPROCS is set in the environment
	cpus   int  // the runtime's default at start: what template executions and checks may use

	mu  sync.Mutex
	one bool
}

func newProcs(e env, log *slog.Logger) *procs {
	_, pinned := e.lookup("GOMAXPROCS")
	return &procs{log: log, pinned: pinned, cpus: runtime.GOMAXPROCS(0)}
}

// fit is called with the resources at start and after each reload.
func (p *procs) fit(rs []*resources.Resource) {
	if p.pinned || p.cpus == 1 {
		return
	}
	one := len(rs) <= fewResources && !slices.ContainsFunc(rs, func(r *resources.Resource) bool { return r.Each != nil })
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case one && !p.one:
		runtime.GOMAXPROCS(1)
		p.log.Debug("running on one P: few resources", "resources", len(rs))
	case !one && p.one:
		runtime.SetDefaultGOMAXPROCS()
		p.log.Debug("running on the default Ps", "resources", len(rs), "procs", runtime.GOMAXPROCS(0))
	}
	p.one = one
}
