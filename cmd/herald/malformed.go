package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/heraldhq/herald/backends"
)

// skipped collects the service instances a one-shot command (render, template) skipped
// as malformed: the list renders without them, never emptied by one bad registration,
// and the command then exits non-zero naming them, so a bootstrap or CI run notices.
type skipped struct {
	mu   sync.Mutex
	keys map[string]bool
}

// tweak makes the backend report malformed instances here.
func (s *skipped) tweak(c *backends.Config) {
	c.OnMalformed = func(key string, _ error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.keys == nil {
			s.keys = map[string]bool{}
		}
		s.keys[key] = true
	}
}

// err names every skipped instance and what became of them ("rendered without them",
// "not listed"); nil when none was.
func (s *skipped) err(what string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.keys) == 0 {
		return nil
	}
	keys := slices.Sorted(maps.Keys(s.keys))
	return fmt.Errorf("skipped %d malformed service instance(s), %s: %s", len(keys), what, strings.Join(keys, ", "))
}
