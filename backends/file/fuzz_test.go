package file

import (
	"testing"

	"github.com/heraldhq/herald/backends"
)

// FuzzParseFile checks that no file content panics the reader and that what it accepts
// holds clean keys and valid service instances.
func FuzzParseFile(f *testing.F) {
	seeds := []struct {
		json bool
		body string
	}{
		{false, "a: 1\nb: {c: [1, 2.5, true, null, x]}\n"},
		{false, "base: &b {x: 1}\nweb:\n  <<: *b\n  y: 2\n"},
		{false, "_services:\n  web:\n    - {address: 10.0.0.1, port: 80, tags: [a], meta: {k: v}}\n"},
		{false, "a: &x [*x]\n"},
		{false, "a: 1\n---\nb: 2\n"},
		{false, "\"a/b\": 1\n../c: 2\n"},
		{true, `{"a": {"b": [1, "two", false, null]}, "n": 1e400}`},
		{true, `{"_services": {"web": [{"address": "::1", "port": 1}]}}`},
		{true, `{"a": 1,}`},
	}
	for _, s := range seeds {
		f.Add(s.json, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, isJSON bool, data []byte) {
		name := "f.yaml"
		if isJSON {
			name = "f.json"
		}
		snap, err := parseFiles([]fileData{{name, data}})
		if err != nil {
			return
		}
		for k := range snap.kv {
			if k != backends.CleanKey(k) {
				t.Fatalf("key %q is not clean", k)
			}
		}
		for name, list := range snap.svcs {
			for _, s := range list {
				if s.Name != name || s.Address == "" || s.ID == "" || s.Port < 0 || s.Port > 65535 {
					t.Fatalf("invalid instance %+v", s)
				}
			}
		}
	})
}
