package render

import "time"

// executor runs jobs (renders with their syncs) on at most n goroutines that outlive a
// job. text/template recurses deeply and a sync goes deep into the os package: a fresh
// goroutine per job grows its stack from a few KB every time, a warm worker once.
// Workers idle for a second exit, so an idle daemon keeps none.
type executor struct {
	jobs  chan func()
	slots chan struct{}
}

func newExecutor(n int) *executor {
	return &executor{jobs: make(chan func()), slots: make(chan struct{}, n)}
}

// submit runs fn on a worker without waiting for it to start: an idle worker takes it
// or, while fewer than n run, a new one does; otherwise a goroutine waits for either.
// Handing the job over directly spares the common case a goroutine hop (~tens of µs on
// the path from a change to its file).
func (e *executor) submit(fn func()) {
	select {
	case e.jobs <- fn:
	case e.slots <- struct{}{}:
		go e.work(fn)
	default:
		go func() {
			select {
			case e.jobs <- fn:
			case e.slots <- struct{}{}:
				e.work(fn)
			}
		}()
	}
}

func (e *executor) work(job func()) {
	defer func() { <-e.slots }()
	idle := time.NewTimer(time.Second)
	defer idle.Stop()
	for {
		job()
		idle.Reset(time.Second)
		select {
		case job = <-e.jobs:
		case <-idle.C:
			return
		}
	}
}
