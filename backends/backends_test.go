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

func TestTargetKind(t *testing.T) {
	for _, c := range []struct {
		t    Target
		want TargetKind
	}{
		{PrefixTarget("/app"), KindPrefix},
		{ServiceTarget(ServiceQuery{Name: "web"}), KindService},
		{Target{ServiceNames: true}, KindServiceNames},
		// Every caller reads a malformed Target the same way: the service wins.
		{Target{Prefix: "/x", Service: &ServiceQuery{Name: "web"}, ServiceNames: true}, KindService},
	} {
		if got := c.t.Kind(); got != c.want {
			t.Errorf("%+v.Kind() = %v, want %v", c.t, got, c.want)
		}
	}
}
