package template

import (
	"os"
	"path"
	"regexp"
	"strings"
	"testing"
)

type compatCase struct {
	name   string
	prefix string            // confd's resource prefix
	keys   []string          // confd's `keys`, relative to the prefix; nil: unrestricted
	kv     map[string]string // nil: compatData()
	tmpl   string
	want   string   // exact output
	err    []string // or: substrings the error must hold (position, message)
}

// confdScope joins keys onto the prefix as confd's util.AppendPrefix does, which is what
// the resources package hands Execute as Scope.
func confdScope(prefix string, keys []string) []string {
	if keys == nil {
		return nil
	}
	if !strings.HasPrefix(prefix, "/") {
		prefix = "/" + prefix
	}
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = path.Join(prefix, k)
	}
	return out
}

func TestConfdCompat(t *testing.T) {
	t.Setenv("HERALD_TEST_SET", "on")
	t.Setenv("HERALD_TEST_EMPTY", "")
	t.Setenv("HERALD_TEST_UNSET", "")
	os.Unsetenv("HERALD_TEST_UNSET")

	for _, tc := range compatCases {
		t.Run(tc.name, func(t *testing.T) {
			kv := tc.kv
			if kv == nil {
				kv = compatData()
			}
			tm, err := Parse(tc.name, tc.tmpl)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			out, reads, err := tm.Execute(MapSource{KV: kv}, Options{Prefix: tc.prefix, Scope: confdScope(tc.prefix, tc.keys)})
			if reads == nil {
				t.Fatal("Execute returned nil Reads")
			}
			if tc.err != nil {
				if err == nil {
					t.Fatalf("Execute = %q, want an error holding %q", out, tc.err)
				}
				for _, w := range tc.err {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not hold %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Execute: %v", err)
			}
			if string(out) != tc.want {
				t.Errorf("output:\n got %q\nwant %q", out, tc.want)
			}
		})
	}
}

// TestConfdCompatCoversCatalogue fails when a confd function has no compatibility case.
// lookupSRV needs DNS; TestLookup covers it with a fake resolver.
func TestConfdCompatCoversCatalogue(t *testing.T) {
	confd, _, _ := FuncNames()
	for _, name := range confd {
		if name == "lookupSRV" {
			continue
		}
		word := regexp.MustCompile(`\b` + name + `\b`)
		found := false
		for _, tc := range compatCases {
			if word.MatchString(tc.tmpl) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("no compatibility case calls %s", name)
		}
	}
}
