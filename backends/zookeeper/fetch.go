package zookeeper

import (
	"context"
	"errors"
	"sync"

	"github.com/go-zookeeper/zk"
)

// This file holds single-znode reads that arm watches, and the store-wide table that
// keeps each watch armed once per znode and session.

// Watch kinds, as bits.
const (
	wData uint8 = 1 << iota
	wChild
	wExist
)

// armed records, per znode, the session in which each watch kind was set (0: none).
type armed struct{ data, child, exist int64 }

func (a *armed) slot(kind uint8) *int64 {
	switch kind {
	case wData:
		return &a.data
	case wChild:
		return &a.child
	default:
		return &a.exist
	}
}

// claim reports whether a watch of kind must be set on p, and marks it set in the
// current session so that no one else sets it twice. A failed request gives it back
// with unclaim.
func (s *Store) claim(p string, kind uint8) (bool, int64) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	a := s.watches[p]
	if a == nil {
		a = &armed{}
		s.watches[p] = a
	}
	slot := a.slot(kind)
	if *slot != 0 && *slot == s.wsess {
		return false, 0
	}
	*slot = s.wsess
	return true, s.wsess
}

func (s *Store) unclaim(p string, kind uint8, sess int64) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if a := s.watches[p]; a != nil {
		if slot := a.slot(kind); *slot == sess {
			*slot = 0
		}
		if *a == (armed{}) {
			delete(s.watches, p)
		}
	}
}

// disarm forgets the watches a server event has just consumed; it mirrors which
// watchers the library itself fires for each event type.
func (s *Store) disarm(p string, typ zk.EventType) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	a := s.watches[p]
	if a == nil {
		return
	}
	switch typ {
	case zk.EventNodeCreated:
		a.exist = 0
	case zk.EventNodeDataChanged:
		a.exist, a.data = 0, 0
	case zk.EventNodeChildrenChanged:
		a.child = 0
	case zk.EventNodeDeleted:
		*a = armed{}
	}
	if *a == (armed{}) {
		delete(s.watches, p)
	}
}

// watchCount is the number of znodes with an armed watch, for tests.
func (s *Store) watchCount() int {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return len(s.watches)
}

// fetch is one znode to read: its data, its children, or both, optionally setting
// watches (claimed through the store-wide table, so an armed watch is not set twice).
type fetch struct {
	path  string
	data  bool
	kids  bool
	watch bool

	val      []byte
	dstat    *zk.Stat
	children []string
	cstat    *zk.Stat
	gone     bool // the znode does not exist
	err      error
}

type getResult struct {
	val  []byte
	stat *zk.Stat
}

type childResult struct {
	children []string
	stat     *zk.Stat
}

func (s *Store) getData(ctx context.Context, p string, watch bool) ([]byte, *zk.Stat, error) {
	if watch {
		if need, sess := s.claim(p, wData); need {
			r, err := call(ctx, func() (getResult, error) {
				v, st, _, err := s.conn.GetW(p)
				return getResult{v, st}, err
			})
			if err != nil {
				s.unclaim(p, wData, sess)
			}
			return r.val, r.stat, err
		}
	}
	r, err := call(ctx, func() (getResult, error) {
		v, st, err := s.conn.Get(p)
		return getResult{v, st}, err
	})
	return r.val, r.stat, err
}

func (s *Store) getChildren(ctx context.Context, p string, watch bool) ([]string, *zk.Stat, error) {
	if watch {
		if need, sess := s.claim(p, wChild); need {
			r, err := call(ctx, func() (childResult, error) {
				c, st, _, err := s.conn.ChildrenW(p)
				return childResult{c, st}, err
			})
			if err != nil {
				s.unclaim(p, wChild, sess)
			}
			return r.children, r.stat, err
		}
	}
	r, err := call(ctx, func() (childResult, error) {
		c, st, err := s.conn.Children(p)
		return childResult{c, st}, err
	})
	return r.children, r.stat, err
}

func (s *Store) exists(ctx context.Context, p string) (bool, *zk.Stat, error) {
	type res struct {
		ok   bool
		stat *zk.Stat
	}
	r, err := call(ctx, func() (res, error) {
		ok, st, err := s.conn.Exists(p)
		return res{ok, st}, err
	})
	return r.ok, r.stat, err
}

// watchExists sets an exist watch on a missing znode. It reports whether the znode
// exists after all (then the library has set a data watch instead).
func (s *Store) watchExists(ctx context.Context, p string) (bool, error) {
	need, sess := s.claim(p, wExist)
	if !need {
		return false, nil
	}
	ok, err := call(ctx, func() (bool, error) {
		ok, _, _, err := s.conn.ExistsW(p)
		return ok, err
	})
	if err != nil || ok {
		s.unclaim(p, wExist, sess)
	}
	return ok, err
}

// run performs one fetch. Data and children are asked for at once (the library
// pipelines them), which halves the time a znode's two reads lie apart.
func (f *fetch) run(ctx context.Context, s *Store) {
	var derr, cerr error
	var wg sync.WaitGroup
	if f.data && f.kids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.children, f.cstat, cerr = s.getChildren(ctx, f.path, f.watch)
		}()
	} else if f.kids {
		f.children, f.cstat, cerr = s.getChildren(ctx, f.path, f.watch)
	}
	if f.data {
		f.val, f.dstat, derr = s.getData(ctx, f.path, f.watch)
	}
	wg.Wait()
	switch {
	case errors.Is(derr, zk.ErrNoNode) || errors.Is(cerr, zk.ErrNoNode):
		f.gone = true
	case derr != nil:
		f.err = s.errAt("get", f.path, derr)
	case cerr != nil:
		f.err = s.errAt("list", f.path, cerr)
	}
}

// runAll performs fetches concurrently (pipelined on the one connection) and returns the
// first error.
func (s *Store) runAll(ctx context.Context, fs []*fetch) error {
	if len(fs) == 1 {
		fs[0].run(ctx, s)
		return fs[0].err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, readParallelism)
	var wg sync.WaitGroup
	for _, f := range fs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f.run(ctx, s)
			if f.err != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	for _, f := range fs {
		if f.err != nil && !errors.Is(f.err, context.Canceled) {
			return f.err
		}
	}
	return ctx.Err()
}
