package resources

import "time"

// executor runs jobs (template executions; renders with their syncs) on at most n
// goroutines that outlive a job. text/template recurses deeply and a sync goes deep
// into the os package: a fresh goroutine per job grows its stack from a few KB every
// time, a warm worker once. Workers idle for a second exit, so an
// idle daemon keeps none.
type executor struct {
	jobs  chan func()
	slots chan struct{}
}

func newExecutor(n int) *executor {
	return &executor{jobs: make(chan func()), slots: make(chan struct{}, n)}
}

// run calls fn on a worker and returns when fn has returned.
func (e *executor) run(fn func()) {
	done := make(chan struct{})
	job := func() {
		defer close(done)
		fn()
	}
	select {
	case e.jobs <- job: // an idle worker took it
	case e.slots <- struct{}{}: // room for one more worker
		go e.work(job)
	}
	<-done
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
