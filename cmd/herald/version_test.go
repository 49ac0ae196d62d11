package main

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
)

// The -ldflags -X stamps of make build / make release are what `herald version` prints.
func TestVersionPrintsStamps(t *testing.T) {
	defer func(v, c, d string) { version, commit, date = v, c, d }(version, commit, date)
	version, commit, date = "v1.2.3-4-gabcdef123456", "abcdef1234567890", "2026-11-22T04:07:11Z"
	var b bytes.Buffer
	printVersion(&b)
	want := "herald v1.2.3-4-gabcdef123456\ncommit: abcdef1234567890\nbuilt: 2026-11-22T04:07:11Z\ngo: " +
		runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH + "\n"
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
	for _, arg := range []string{"version", "--version"} {
		if code, stdout, _ := herald(t, nil, arg); code != 0 || stdout != want {
			t.Errorf("herald %s: %d %q", arg, code, stdout)
		}
	}
	if versionString() != version {
		t.Errorf("versionString() = %q", versionString())
	}
}

// Unstamped (go build, go install), it still names the Go version and says devel.
func TestVersionUnstamped(t *testing.T) {
	var b bytes.Buffer
	printVersion(&b)
	if !strings.HasPrefix(b.String(), "herald ") || !strings.Contains(b.String(), "go: "+runtime.Version()) {
		t.Fatalf("got %q", b.String())
	}
}
