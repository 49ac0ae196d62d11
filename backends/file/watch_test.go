package file

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/backends"
)

// Generous: the machine running the tests may be busy; events normally arrive within
// the 50 ms debounce.
const eventTimeout = 10 * time.Second

type watch struct {
	events chan backends.Event
	done   chan error
	cancel context.CancelFunc
}

// startWatch runs Watch in the background and stops it at the end of the test, checking
// that it returned the context's error.
func startWatch(t *testing.T, s *Store, target backends.Target, from uint64) *watch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watch{events: make(chan backends.Event, 16), done: make(chan error, 1), cancel: cancel}
	go func() { w.done <- s.Watch(ctx, target, from, w.events) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-w.done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Watch returned %v, want context.Canceled", err)
			}
		case <-time.After(eventTimeout):
			t.Error("Watch did not return after cancel")
		}
	})
	return w
}

func (w *watch) next(t *testing.T) backends.Event {
	t.Helper()
	select {
	case ev := <-w.events:
		return ev
	case err := <-w.done:
		t.Fatalf("Watch returned early: %v", err)
	case <-time.After(eventTimeout):
		t.Fatal("no event")
	}
	return backends.Event{}
}

func (w *watch) none(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case ev := <-w.events:
		t.Fatalf("unexpected event %+v", ev)
	case <-time.After(within):
	}
}

// ready waits until the store's watcher has read the files once, so that a change made
// afterwards is seen as a change.
func ready(t *testing.T, s *Store) {
	t.Helper()
	deadline := time.Now().Add(eventTimeout)
	for {
		s.wmu.Lock()
		running := s.stopW != nil
		s.wmu.Unlock()
		if running && s.current() != nil {
			// Let the watcher's own first reload pass.
			time.Sleep(3 * s.debounce)
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("watcher did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWatchInPlaceEdit(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d.yaml")
	writeFile(t, p, "app: {a: 1}\nother: x\n")
	s := newStore(t, p, nil)
	_, rev, err := s.Get(context.Background(), []string{"/app"})
	if err != nil {
		t.Fatal(err)
	}
	app := startWatch(t, s, backends.PrefixTarget("/app"), rev)
	other := startWatch(t, s, backends.PrefixTarget("/other"), rev)
	ready(t, s)

	writeFile(t, p, "app: {a: 2, b: 3}\nother: x\n")
	ev := app.next(t)
	want := backends.Event{Target: backends.PrefixTarget("/app"), Revision: rev + 1, Full: true, KVs: map[string]string{"/app/a": "2", "/app/b": "3"}}
	if !reflect.DeepEqual(ev, want) {
		t.Errorf("event %+v\nwant  %+v", ev, want)
	}
	// /other did not change: its watch stays quiet.
	other.none(t, 300*time.Millisecond)

	// Deleting the keys of a prefix is a change too: a Full event with nothing.
	writeFile(t, p, "other: z\n")
	if ev := app.next(t); !ev.Full || len(ev.KVs) != 0 || ev.KVs == nil {
		t.Errorf("event after removing /app: %+v, want Full with empty KVs", ev)
	}
	if ev := other.next(t); ev.KVs["/other"] != "z" {
		t.Errorf("event for /other: %+v", ev)
	}
}

func TestWatchRenameReplace(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "d.yaml")
	writeFile(t, p, "a: 1\n")
	s := newStore(t, p, nil)
	w := startWatch(t, s, backends.PrefixTarget("/"), 0)
	if ev := w.next(t); ev.KVs["/a"] != "1" || ev.Revision != 1 {
		t.Fatalf("first event %+v, want the current data (from 0 is not the current revision)", ev)
	}
	ready(t, s)

	// What vim (backupcopy=no) and most atomic writers do: write a temporary file,
	// rename it over the original.
	tmp := filepath.Join(dir, ".d.yaml.swp")
	writeFile(t, tmp, "a: 2\n")
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	if ev := w.next(t); ev.KVs["/a"] != "2" {
		t.Errorf("after rename-replace: %+v", ev)
	}

	// And what other editors do: move the original away, write a new file.
	if err := os.Rename(p, p+"~"); err != nil {
		t.Fatal(err)
	}
	writeFile(t, p, "a: 3\n")
	if ev := w.next(t); ev.KVs["/a"] != "3" {
		t.Errorf("after backup-and-write: %+v", ev)
	}
	// Several quick writes coalesce into one event with the final content.
	for i := range 5 {
		writeFile(t, p, "a: "+strings.Repeat("x", i+1)+"\n")
	}
	if ev := w.next(t); ev.KVs["/a"] != "xxxxx" {
		t.Errorf("after a burst: %+v", ev)
	}
	w.none(t, 300*time.Millisecond)
}

func TestWatchBadEditKeepsLastGoodData(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d.yaml")
	writeFile(t, p, "a: 1\n")
	logs := &syncBuffer{}
	s := newStore(t, p, slog.New(slog.NewTextHandler(logs, nil)))
	_, rev, err := s.Get(context.Background(), []string{"/"})
	if err != nil {
		t.Fatal(err)
	}
	w := startWatch(t, s, backends.PrefixTarget("/"), rev)
	ready(t, s)

	writeFile(t, p, "a: 1\nb: [\n")
	deadline := time.Now().Add(eventTimeout)
	for !strings.Contains(logs.String(), p+":3: ") {
		if time.Now().After(deadline) {
			t.Fatalf("no error naming %s:3 was logged; logs:\n%s", p, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "keeping the last good data") {
		t.Errorf("log does not say the last good data is kept:\n%s", logs)
	}
	w.none(t, 200*time.Millisecond)
	if st := s.State(); st.Conn != backends.Down || st.Err == nil {
		t.Errorf("State = %+v, want down with the parse error", st)
	}
	// A render meanwhile fails, naming the problem, rather than using half a file.
	if _, _, err := s.Get(context.Background(), []string{"/"}); err == nil || !strings.Contains(err.Error(), p+":3:") {
		t.Errorf("Get during the bad edit: %v", err)
	}
	// Touching the broken file again does not log the same error again.
	writeFile(t, p, "a: 1\nb: [\n")
	time.Sleep(200 * time.Millisecond)
	if n := strings.Count(logs.String(), "level=ERROR"); n != 1 {
		t.Errorf("%d errors logged for one bad content, want 1:\n%s", n, logs)
	}

	writeFile(t, p, "a: 1\nb: [2]\n")
	ev := w.next(t)
	if want := map[string]string{"/a": "1", "/b/0": "2"}; !reflect.DeepEqual(ev.KVs, want) || ev.Revision != rev+1 {
		t.Errorf("after the fix: %+v, want %v at revision %d", ev, want, rev+1)
	}
	if st := s.State(); st.Conn != backends.Up || st.Err != nil {
		t.Errorf("State after the fix = %+v", st)
	}
}

func TestWatchRevertToSameContentSendsNothing(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d.yaml")
	writeFile(t, p, "a: 1\n")
	s := newStore(t, p, nil)
	_, rev, _ := s.Get(context.Background(), []string{"/"})
	w := startWatch(t, s, backends.PrefixTarget("/"), rev)
	ready(t, s)
	writeFile(t, p, "a: [\n")
	time.Sleep(200 * time.Millisecond)
	writeFile(t, p, "a: 1\n")
	// Same keys as last sent (reformatting, comments, touch): no event either.
	writeFile(t, p, "# comment\na: 1\n")
	w.none(t, 400*time.Millisecond)
}

func TestWatchServices(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d.yaml")
	writeFile(t, p, "_services:\n  web:\n    - {address: 10.0.0.1, port: 80}\n  db:\n    - {address: 10.0.0.9, port: 5432}\n")
	s := newStore(t, p, nil)
	_, rev, err := s.Services(context.Background(), backends.ServiceQuery{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	web := startWatch(t, s, backends.ServiceTarget(backends.ServiceQuery{Name: "web"}), rev)
	db := startWatch(t, s, backends.ServiceTarget(backends.ServiceQuery{Name: "db"}), rev)
	names := startWatch(t, s, backends.Target{ServiceNames: true}, rev)
	ready(t, s)

	writeFile(t, p, "_services:\n  web:\n    - {address: 10.0.0.1, port: 80}\n    - {address: 10.0.0.2, port: 80, tags: [new]}\n  db:\n    - {address: 10.0.0.9, port: 5432}\n")
	ev := web.next(t)
	if len(ev.Services) != 2 || ev.Services[1].Address != "10.0.0.2" || !ev.Full || ev.Target.Service == nil {
		t.Errorf("web event %+v", ev)
	}
	if ev := names.next(t); !reflect.DeepEqual(ev.Names, []backends.ServiceSummary{{Name: "db"}, {Name: "web", Tags: []string{"new"}}}) {
		t.Errorf("names event %+v", ev)
	}
	db.none(t, 300*time.Millisecond)

	// An instance going critical leaves the passing-only list.
	writeFile(t, p, "_services:\n  web:\n    - {address: 10.0.0.1, port: 80, status: critical}\n    - {address: 10.0.0.2, port: 80, tags: [new]}\n  db:\n    - {address: 10.0.0.9, port: 5432}\n")
	if ev := web.next(t); len(ev.Services) != 1 || ev.Services[0].Address != "10.0.0.2" {
		t.Errorf("web event after critical %+v", ev)
	}
}

func TestWatchDirectory(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.yaml"), "a: 1\n")
	s := newStore(t, dir, nil)
	_, rev, _ := s.Get(context.Background(), []string{"/"})
	w := startWatch(t, s, backends.PrefixTarget("/"), rev)
	ready(t, s)

	writeFile(t, filepath.Join(dir, "b.json"), `{"b": 2}`)
	if ev := w.next(t); !reflect.DeepEqual(ev.KVs, map[string]string{"/a": "1", "/b": "2"}) {
		t.Errorf("after adding a file: %+v", ev)
	}
	writeFile(t, filepath.Join(dir, "ignored.txt"), "c: 3\n")
	w.none(t, 300*time.Millisecond)
	if err := os.Remove(filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	if ev := w.next(t); !reflect.DeepEqual(ev.KVs, map[string]string{"/b": "2"}) {
		t.Errorf("after removing a file: %+v", ev)
	}
}

// Kubernetes mounts a ConfigMap as data.yaml -> ..data/data.yaml with ..data a symlink
// to a timestamped directory, and updates it by swapping ..data.
func TestWatchSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "..v1", "data.yaml"), "a: 1\n")
	writeFile(t, filepath.Join(dir, "..v2", "data.yaml"), "a: 2\n")
	if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "data.yaml")
	if err := os.Symlink(filepath.Join("..data", "data.yaml"), p); err != nil {
		t.Fatal(err)
	}
	s := newStore(t, p, nil)
	_, rev, _ := s.Get(context.Background(), []string{"/"})
	w := startWatch(t, s, backends.PrefixTarget("/"), rev)
	ready(t, s)

	if err := os.Symlink("..v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if ev := w.next(t); ev.KVs["/a"] != "2" {
		t.Errorf("after the symlink swap: %+v", ev)
	}
}

func TestWatchDirectoryCreatedLater(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "later")
	p := filepath.Join(dir, "d.yaml")
	logs := &syncBuffer{}
	s := newStore(t, p, slog.New(slog.NewTextHandler(logs, nil)))
	w := startWatch(t, s, backends.PrefixTarget("/"), 0)
	time.Sleep(200 * time.Millisecond)
	writeFile(t, p, "a: 1\n")
	if ev := w.next(t); ev.KVs["/a"] != "1" {
		t.Errorf("event %+v", ev)
	}
	if !strings.Contains(logs.String(), "retrying") {
		t.Errorf("the missing directory was not reported:\n%s", logs)
	}
}

func TestWatchStopsWatcher(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d.yaml")
	writeFile(t, p, "a: 1\n")
	s := newStore(t, p, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	for range 2 {
		go func() { done <- s.Watch(ctx, backends.PrefixTarget("/"), 1, make(chan backends.Event, 4)) }()
	}
	ready(t, s)
	cancel()
	for range 2 {
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Watch = %v", err)
		}
	}
	s.wmu.Lock()
	running, subs := s.stopW != nil, len(s.subs)
	s.wmu.Unlock()
	if running || subs != 0 {
		t.Errorf("after every Watch returned: watcher running %v, %d subscribers", running, subs)
	}

	// Close ends a running Watch.
	w := make(chan error, 1)
	go func() {
		w <- s.Watch(context.Background(), backends.PrefixTarget("/"), 1, make(chan backends.Event, 4))
	}()
	ready(t, s)
	s.Close()
	select {
	case err := <-w:
		if !errors.Is(err, errClosed) {
			t.Errorf("Watch after Close = %v", err)
		}
	case <-time.After(eventTimeout):
		t.Fatal("Watch did not return after Close")
	}
}

func TestWatchBlockedReceiverCancels(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d.yaml")
	writeFile(t, p, "a: 1\n")
	s := newStore(t, p, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// Unbuffered and never read: Watch must still honour ctx while sending.
	go func() { done <- s.Watch(ctx, backends.PrefixTarget("/"), 0, make(chan backends.Event)) }()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Watch = %v", err)
		}
	case <-time.After(eventTimeout):
		t.Fatal("Watch blocked on a receiver that never reads")
	}
}

func TestWatchStartsOnBadFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d.yaml")
	writeFile(t, p, "a: [\n")
	logs := &syncBuffer{}
	s := newStore(t, p, slog.New(slog.NewTextHandler(logs, nil)))
	w := startWatch(t, s, backends.PrefixTarget("/"), 0)
	time.Sleep(300 * time.Millisecond)
	if n := strings.Count(logs.String(), "level=ERROR"); n != 1 || !strings.Contains(logs.String(), p+":2: ") {
		t.Errorf("want the parse error logged once, naming %s:2; logs:\n%s", p, logs)
	}
	w.none(t, 0)
	writeFile(t, p, "a: [1]\n")
	if ev := w.next(t); ev.KVs["/a/0"] != "1" || ev.Revision != 1 {
		t.Errorf("after the fix: %+v", ev)
	}
}

// Several paths (confd's repeated -file) share one key space, and an edit to any of them
// is seen.
func TestWatchSeveralPaths(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(a, "a.yaml"), "a: 1\n")
	writeFile(t, filepath.Join(b, "b.yaml"), "b: 1\n")
	s := newStore(t, filepath.Join(a, "a.yaml")+","+b+"/", nil)
	kv, rev, err := s.Get(context.Background(), []string{"/"})
	if err != nil || !reflect.DeepEqual(kv, map[string]string{"/a": "1", "/b": "1"}) {
		t.Fatalf("Get = %v, %v", kv, err)
	}
	w := startWatch(t, s, backends.PrefixTarget("/"), rev)
	ready(t, s)
	writeFile(t, filepath.Join(b, "c.json"), `{"c": 2}`)
	if ev := w.next(t); !reflect.DeepEqual(ev.KVs, map[string]string{"/a": "1", "/b": "1", "/c": "2"}) {
		t.Errorf("after adding a file to the second path: %+v", ev)
	}
	writeFile(t, filepath.Join(a, "a.yaml"), "a: 2\n")
	if ev := w.next(t); !reflect.DeepEqual(ev.KVs, map[string]string{"/a": "2", "/b": "1", "/c": "2"}) {
		t.Errorf("after editing the first path: %+v", ev)
	}
	writeFile(t, filepath.Join(b, "dup.yaml"), "a: 3\n")
	if _, _, err := s.Get(context.Background(), []string{"/"}); err == nil || !strings.Contains(err.Error(), "key /a is defined in both") {
		t.Errorf("a key in two paths: %v", err)
	}
}

// ?filter= is confd's -filter: directories are read recursively, files by name.
func TestFilterReadsRecursivelyAndWatchesNewDirectories(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.yml"), "a: 1\n")
	writeFile(t, filepath.Join(dir, "skip.yaml"), "skip: 1\n")
	writeFile(t, filepath.Join(dir, "sub", "deep", "b.yml"), "b: 2\n")
	writeFile(t, filepath.Join(dir, "sub", ".hidden.yml"), "hidden: 1\n")
	writeFile(t, filepath.Join(dir, ".git", "c.yml"), "c: 1\n")
	s, err := New(backends.Config{}, backends.Endpoint{Scheme: "file", Path: dir, Query: map[string][]string{"filter": {"*.yml"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	kv, rev, err := s.Get(context.Background(), []string{"/"})
	if err != nil || !reflect.DeepEqual(kv, map[string]string{"/a": "1", "/b": "2"}) {
		t.Fatalf("Get = %v, %v", kv, err)
	}
	w := startWatch(t, s, backends.PrefixTarget("/"), rev)
	ready(t, s)
	writeFile(t, filepath.Join(dir, "new", "deeper", "c.yml"), "c: 3\n")
	if ev := w.next(t); !reflect.DeepEqual(ev.KVs, map[string]string{"/a": "1", "/b": "2", "/c": "3"}) {
		t.Errorf("after a file in a new directory: %+v", ev)
	}
	writeFile(t, filepath.Join(dir, "sub", "deep", "b.yml"), "b: 4\n")
	if ev := w.next(t); !reflect.DeepEqual(ev.KVs, map[string]string{"/a": "1", "/b": "4", "/c": "3"}) {
		t.Errorf("after editing a nested file: %+v", ev)
	}
	if _, err := New(backends.Config{}, backends.Endpoint{Scheme: "file", Path: dir, Query: map[string][]string{"filter": {"[x"}}}); err == nil {
		t.Error("a malformed filter was accepted")
	}
}
