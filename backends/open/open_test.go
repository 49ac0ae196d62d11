package open

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/backends/env"
	"github.com/heraldhq/herald/backends/file"
)

// Registry backends are wired in by their own packages; whichever are, Open must return
// at once even with nothing listening, and never a Store together with an error.
func TestOpenRegistryDoesNotBlock(t *testing.T) {
	for _, url := range []string{"etcd://127.0.0.1:1", "zk://127.0.0.1:1", "consul://127.0.0.1:1"} {
		t.Run(url, func(t *testing.T) {
			start := time.Now()
			s, err := Open(context.Background(), backends.Config{URL: url, DialTimeout: time.Second})
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Open took %v with nothing listening", d)
			}
			switch {
			case err != nil && s != nil:
				t.Errorf("got a Store %#v together with error %v", s, err)
			case err != nil && !strings.Contains(err.Error(), "not built yet"):
				t.Errorf("Open: %v", err)
			case s != nil:
				s.Close()
			}
		})
	}
}

func TestOpen(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d.yaml")
	if err := os.WriteFile(p, []byte("a: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		url     string
		check   func(t *testing.T, s backends.Store)
		wantErr string
	}{
		{url: "file://" + p, check: func(t *testing.T, s backends.Store) {
			if _, ok := s.(*file.Store); !ok {
				t.Fatalf("got %T, want *file.Store", s)
			}
			kv, _, err := s.Get(context.Background(), []string{"/a"})
			if err != nil || kv["/a"] != "1" {
				t.Errorf("Get = %v, %v", kv, err)
			}
		}},
		{url: "env://", check: func(t *testing.T, s backends.Store) {
			if _, ok := s.(*env.Store); !ok {
				t.Fatalf("got %T, want *env.Store", s)
			}
			kv, _, err := s.Get(context.Background(), []string{"/herald/open/test/key"})
			if err != nil || kv["/herald/open/test/key"] != "from-env" {
				t.Errorf("Get = %v, %v", kv, err)
			}
		}},
		// A missing file is not an error until it is read: Open never fails for a
		// source that may appear later.
		{url: "file://" + filepath.Join(t.TempDir(), "later.yaml"), check: func(t *testing.T, s backends.Store) {
			if _, _, err := s.Get(context.Background(), []string{"/"}); err == nil {
				t.Error("Get of a missing file succeeded")
			}
		}},
		{url: "file://", wantErr: "file:// needs a path"},
		{url: "redis://h", wantErr: `unknown scheme "redis"`},
		{url: "data.yaml", wantErr: "want SCHEME://"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			s, err := Open(context.Background(), backends.Config{URL: tt.url, Environ: []string{"HERALD_OPEN_TEST_KEY=from-env"}})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if s != nil {
					t.Errorf("got a non-nil Store %#v with the error", s)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			tt.check(t, s)
		})
	}
}
