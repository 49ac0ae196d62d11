package backends_test

import (
	"strings"
	"testing"

	"github.com/heraldhq/herald/backends"
	"github.com/heraldhq/herald/resources/announce"
)

// FuzzRedactPassword varies the password itself (any bytes: '/', '@', ':', '%', "://",
// invalid UTF-8) in every form a user may type a URL with credentials, and asserts no
// part of it shows in what herald prints of that URL: Redact, ParseURL's errors and
// endpoint, and --check's errors and description. The password is framed by markers
// no message holds, so a leak of any end of it is caught, not only the whole.
func FuzzRedactPassword(f *testing.F) {
	for _, pw := range []string{"s3cret", "pa/ss", "p@ss", "a:b", "%40x", "x://y", "a?b#c@d/e", "", "@", "\xff"} {
		f.Add(pw)
	}
	f.Fuzz(func(t *testing.T, pw string) {
		const open, close = "⟦", "⟧"
		secret := open + pw + close
		leaks := func(s string) bool { return strings.Contains(s, open) || strings.Contains(s, close) }
		for _, raw := range []string{
			"etcd://root:" + secret + "@h:2379",
			"etcds://root:" + secret + "@h1:2379,h2:2379/x?dc=a",
			"root:" + secret + "@h:2379",
			"file://user:" + secret + "@host/data.yaml",
			"consul://" + secret + "@h",
			"zookeeper://u:" + secret + "@h/chroot",
			"redis://u:" + secret + "@h",
		} {
			if r := backends.Redact(raw); leaks(r) {
				t.Fatalf("Redact(%q) = %q", raw, r)
			}
			e, err := backends.ParseURL(raw)
			if err == nil {
				t.Fatalf("ParseURL(%q) accepted credentials: %s", raw, e)
			}
			if leaks(err.Error()) {
				t.Fatalf("ParseURL(%q): %v", raw, err)
			}
		}
		for _, raw := range []string{"http://u:" + secret + "@127.0.0.1:1/health", "https://" + secret + "@h/x", "tcp://u:" + secret + "@h:1", "ftp://u:" + secret + "@h"} {
			c, err := announce.ParseCheck(raw)
			if err != nil && leaks(err.Error()) {
				t.Fatalf("ParseCheck(%q): %v", raw, err)
			}
			if err == nil && leaks(c.String()) {
				t.Fatalf("ParseCheck(%q).String() = %q", raw, c)
			}
		}
	})
}

func TestRedact(t *testing.T) {
	for raw, want := range map[string]string{
		"etcd://root:pa/ss@host:2379":  "etcd://REDACTED@host:2379",
		"etcd://root:p@ss@h":           "etcd://REDACTED@h",
		"root:s3cret@h:2379":           "REDACTED@h:2379",
		"file://user:pw@host/x.yaml":   "file://REDACTED@host/x.yaml",
		"root:a://b@h":                 "REDACTED@h",
		"etcd://h1:2379,h2:2379?dc=a":  "etcd://h1:2379,h2:2379?dc=a",
		"http://u:p%40w@h:80/health":   "http://REDACTED@h:80/health",
		"consul://127.0.0.1:8500?dc=x": "consul://127.0.0.1:8500?dc=x",
	} {
		if got := backends.Redact(raw); got != want {
			t.Errorf("Redact(%q) = %q, want %q", raw, got, want)
		}
	}
}

// An agent's error body that echoes the token is repeated without it.
func TestRedactSecrets(t *testing.T) {
	got := backends.RedactSecrets(`ACL not found for token "t0k3n" (t0k3n)`, "", "t0k3n")
	if want := `ACL not found for token "REDACTED" (REDACTED)`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := backends.RedactSecrets("no secret here"); got != "no secret here" {
		t.Errorf("without secrets: %q", got)
	}
}
