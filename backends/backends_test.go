package backends

import (
	"slices"
	"testing"
)

func TestMinimalPrefixes(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string
	}{
		{nil, []string{}},
		{[]string{"app/"}, []string{"/app"}},
		{[]string{"//app//db/"}, []string{"/app/db"}},
		{[]string{"/"}, []string{"/"}},
		{[]string{"/app/db", "/app"}, []string{"/app"}},
		{[]string{"/app", "/apple", "/app/x"}, []string{"/app", "/apple"}},
		{[]string{"/b", "/a", "/b"}, []string{"/a", "/b"}},
		{[]string{"/a/b", "/", "/c"}, []string{"/"}},
	} {
		if got := MinimalPrefixes(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("MinimalPrefixes(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
