package render

import (
	"context"
	"sync/atomic"
	"time"
)

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

// slots runs template executions, at most n at once, on workers that outlive one (a warm
// stack, as executor's). A worker holds its slot while it runs and while it idles, so a
// burst of renders reuses the same n workers: a slot bounding a separate pool instead
// would let that pool start a goroutine (and grow its stack) for every job handed over
// while the last worker was between two jobs.
//
// An execution given up on (abandon) hands its slot back at once, so runaway templates
// never keep the slots from the others; its worker exits when the template returns.
type slots struct {
	idle chan chan *slotJob // an idle worker offers its own job channel
	held chan struct{}      // one per worker
}

// slot is what acquire returns: an idle worker's job channel, or nil for a free slot.
type slot struct{ worker chan *slotJob }

// slotJob is one execution; state goes from jobRunning to jobDone (its worker keeps the
// slot) or to jobAbandoned (the slot went back), whichever comes first.
type slotJob struct {
	fn    func()
	state atomic.Int32
}

const (
	jobRunning int32 = iota
	jobDone
	jobAbandoned
)

func newSlots(n int) *slots {
	return &slots{idle: make(chan chan *slotJob), held: make(chan struct{}, n)}
}

// acquire takes a slot: an idle worker's or a free one. It waits until ctx ends, and
// then returns ctx's cause. Every slot acquired must be started.
func (s *slots) acquire(ctx context.Context) (slot, error) {
	select {
	case w := <-s.idle:
		return slot{worker: w}, nil
	case s.held <- struct{}{}:
		return slot{}, nil
	case <-ctx.Done():
		return slot{}, context.Cause(ctx)
	}
}

// start runs fn in sl.
func (s *slots) start(sl slot, fn func()) *slotJob {
	j := &slotJob{fn: fn}
	if sl.worker != nil {
		sl.worker <- j
	} else {
		go s.work(j)
	}
	return j
}

// abandon hands j's slot back unless j has finished meanwhile (then it reports false
// and j's worker keeps its slot).
func (s *slots) abandon(j *slotJob) bool {
	if !j.state.CompareAndSwap(jobRunning, jobAbandoned) {
		return false
	}
	<-s.held
	return true
}

func (s *slots) work(j *slotJob) {
	next := make(chan *slotJob, 1)
	idle := time.NewTimer(time.Second)
	defer idle.Stop()
	for {
		j.fn()
		if !j.state.CompareAndSwap(jobRunning, jobDone) {
			return // abandoned: its slot went back already
		}
		idle.Reset(time.Second)
		select {
		case s.idle <- next:
			j = <-next
		case <-idle.C:
			<-s.held
			return
		}
	}
}
