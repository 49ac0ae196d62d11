package backends

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// FuzzParseInstance checks that no registry value, however broken, panics the parser,
// and that whatever it accepts is usable: a dialable address, a port in range, a name,
// an ID and a known status.
func FuzzParseInstance(f *testing.F) {
	fixtures, err := filepath.Glob(filepath.Join("testdata", "instances", "*"))
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range fixtures {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add("/services/web/"+filepath.Base(p), b)
	}
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		s, err := ParseInstance("/services", key, value)
		if err != nil {
			if s.Name != "" || s.Address != "" {
				t.Fatalf("error %v came with a non-zero Service %+v", err, s)
			}
			if errors.Is(err, ErrNotAlive) && len(value) == 0 {
				t.Fatalf("empty value reported as not alive")
			}
			return
		}
		if s.Address == "" || s.Name == "" || s.ID == "" {
			t.Fatalf("accepted %q=%q with empty address, name or ID: %+v", key, value, s)
		}
		if s.Port < 0 || s.Port > 65535 {
			t.Fatalf("accepted port %d", s.Port)
		}
		if StatusRank(s.Status) == 2 && s.Status != StatusCritical {
			t.Fatalf("accepted unknown status %q", s.Status)
		}
		if s.Healthy != (s.Status == StatusPassing) {
			t.Fatalf("Healthy=%v with status %q", s.Healthy, s.Status)
		}
		if s.Key != key {
			t.Fatalf("Key = %q, want %q", s.Key, key)
		}
		host, port, err := net.SplitHostPort(s.HostPort())
		if err != nil || host != s.Address || port != strconv.Itoa(s.Port) {
			t.Fatalf("HostPort %q does not round-trip to %q %d: %v", s.HostPort(), s.Address, s.Port, err)
		}
		for name, ep := range s.Endpoints {
			if ep.Host == "" || ep.Port < 0 || ep.Port > 65535 {
				t.Fatalf("endpoint %q = %+v", name, ep)
			}
		}
	})
}
