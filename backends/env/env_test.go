package env

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/heraldhq/herald/backends"
)

func newStore(t *testing.T, environ ...string) *Store {
	t.Helper()
	s, err := New(backends.Config{}, backends.Endpoint{Scheme: "env"}, environ)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestGet(t *testing.T) {
	environ := []string{
		"DATABASE_HOST=db.local",
		"DATABASE_PORT=5432",
		"DATABASE_POOL_MAX=10",
		"DATABASEX_Y=not under /database",
		"database_user=lower-case names only match the root prefix",
		"APP_URL=http://x/?a=b",
		"APPLE=fruit",
		"MY_APP_PORT=8080",
		"PATH=/usr/bin",
		"_=/usr/bin/herald",
		"A__B=double underscore",
		"TRAILING_=x",
		"EMPTY=",
	}
	s := newStore(t, environ...)
	tests := []struct {
		name     string
		prefixes []string
		want     map[string]string
	}{
		{"one key", []string{"/database/host"}, map[string]string{"/database/host": "db.local"}},
		{"prefix", []string{"/database"}, map[string]string{
			"/database/host": "db.local", "/database/port": "5432", "/database/pool/max": "10",
		}},
		{"prefix with trailing slash", []string{"/database/pool/"}, map[string]string{"/database/pool/max": "10"}},
		{"no leading slash", []string{"database/port"}, map[string]string{"/database/port": "5432"}},
		{"path boundary: /app is not /apple", []string{"/app"}, map[string]string{"/app/url": "http://x/?a=b"}},
		{"value keeps its = signs", []string{"/app/url"}, map[string]string{"/app/url": "http://x/?a=b"}},
		{"empty value", []string{"/empty"}, map[string]string{"/empty": ""}},
		{"several prefixes", []string{"/database/host", "/apple"}, map[string]string{"/database/host": "db.local", "/apple": "fruit"}},
		{"underscore in a key cannot match", []string{"/my_app"}, map[string]string{}},
		{"upper-case prefix cannot match", []string{"/DATABASE"}, map[string]string{}},
		{"nothing", []string{"/nope"}, map[string]string{}},
		{"no prefixes", nil, map[string]string{}},
		{"root: every addressable variable", []string{"/"}, map[string]string{
			"/database/host": "db.local", "/database/port": "5432", "/database/pool/max": "10",
			"/databasex/y": "not under /database", "/database/user": "lower-case names only match the root prefix",
			"/app/url": "http://x/?a=b", "/apple": "fruit", "/my/app/port": "8080", "/path": "/usr/bin",
			"/empty": "",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, rev, err := s.Get(context.Background(), tt.prefixes)
			if err != nil || rev != 1 {
				t.Fatalf("Get: rev %d, err %v", rev, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Get(%q)\n got  %v\n want %v", tt.prefixes, got, tt.want)
			}
		})
	}
}

func TestEnvironEntries(t *testing.T) {
	tests := []struct {
		name    string
		environ []string
		want    map[string]string
	}{
		{"last of repeated names wins", []string{"A=1", "A=2"}, map[string]string{"/a": "2"}},
		{"entries without = are ignored", []string{"NOEQUALS", "B=1"}, map[string]string{"/b": "1"}},
		{"empty names are ignored", []string{"=C:=C:\\", "=x", "C=1"}, map[string]string{"/c": "1"}},
		{"upper-case wins a collision", []string{"foo_bar=lower", "Foo_Bar=mixed", "FOO_BAR=upper"}, map[string]string{"/foo/bar": "upper"}},
		{"then the lexically first", []string{"foo_bar=lower", "Foo_bar=mixed"}, map[string]string{"/foo/bar": "mixed"}},
		{"dot segments are not keys", []string{".=x", "A_.._B=y", "D=1"}, map[string]string{"/d": "1"}},
		{"empty environment", nil, map[string]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := newStore(t, tt.environ...).Get(context.Background(), []string{"/"})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestEnvironIsCopied(t *testing.T) {
	environ := []string{"A=1"}
	s := newStore(t, environ...)
	environ[0] = "A=2"
	if got, _, _ := s.Get(context.Background(), []string{"/a"}); got["/a"] != "1" {
		t.Errorf("got %v: the store follows the caller's slice", got)
	}
}

func TestGetCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := newStore(t, "A=1").Get(ctx, []string{"/"}); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v", err)
	}
}

func TestNoServices(t *testing.T) {
	s := newStore(t, "A=1")
	ctx := context.Background()
	if _, _, err := s.Services(ctx, backends.ServiceQuery{Name: "web"}); !errors.Is(err, ErrNoServices) {
		t.Errorf("Services: %v", err)
	} else if want := "service web: env:// has no services"; err.Error()[:len(want)] != want {
		t.Errorf("Services error %q does not start with %q", err, want)
	}
	if _, _, err := s.ServiceNames(ctx); !errors.Is(err, ErrNoServices) {
		t.Errorf("ServiceNames: %v", err)
	}
	for _, target := range []backends.Target{backends.ServiceTarget(backends.ServiceQuery{Name: "web"}), {ServiceNames: true}} {
		if err := s.Watch(ctx, target, 0, make(chan backends.Event, 1)); !errors.Is(err, ErrNoServices) {
			t.Errorf("Watch(%s): %v", target, err)
		}
	}
}

func TestWatch(t *testing.T) {
	s := newStore(t, "APP_A=1", "OTHER=2")
	tests := []struct {
		name      string
		from      uint64
		wantEvent bool
	}{
		{"from the current revision: nothing to send", 1, false},
		{"from nothing: the keys once", 0, true},
		{"from another revision: the keys once", 7, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			out := make(chan backends.Event, 2)
			done := make(chan error, 1)
			go func() { done <- s.Watch(ctx, backends.PrefixTarget("/app"), tt.from, out) }()
			if tt.wantEvent {
				select {
				case ev := <-out:
					want := backends.Event{Target: backends.PrefixTarget("/app"), Revision: 1, Full: true, KVs: map[string]string{"/app/a": "1"}}
					if !reflect.DeepEqual(ev, want) {
						t.Errorf("event %+v, want %+v", ev, want)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("no event")
				}
			}
			select {
			case ev := <-out:
				t.Errorf("unexpected event %+v", ev)
			case err := <-done:
				t.Fatalf("Watch returned before its context ended: %v", err)
			case <-time.After(100 * time.Millisecond):
			}
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Watch = %v, want context.Canceled", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Watch did not return after cancel")
			}
		})
	}

	// A receiver that never reads does not keep Watch from ending.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Watch(ctx, backends.PrefixTarget("/app"), 0, make(chan backends.Event)) }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Watch = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch blocked on a receiver that never reads")
	}
}

func TestStateAndClose(t *testing.T) {
	s := newStore(t)
	if st := s.State(); st.Conn != backends.Up || st.Endpoint != "env://" || st.Err != nil || st.Since.IsZero() {
		t.Errorf("State = %+v", st)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := New(backends.Config{}, backends.Endpoint{Scheme: "file"}, nil); err == nil {
		t.Error("New accepted a file:// endpoint")
	}
}
