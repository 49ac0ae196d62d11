package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// Stamped by `make build` / `make release` with -ldflags "-X main.version=... -X
// main.commit=... -X main.date=...". A plain `go build` or `go install` leaves them empty
// and buildInfo falls back on what the Go toolchain recorded (module version, VCS data).
var (
	version = ""
	commit  = ""
	date    = ""
)

// buildInfo is what `herald version` prints.
type buildInfo struct {
	Version, Commit, Date, Go, Platform string
	Modified                            bool
}

// readBuildInfo merges the -X stamps with the toolchain's record; a stamp wins.
func readBuildInfo() buildInfo {
	b := buildInfo{Version: version, Commit: commit, Date: date, Go: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if b.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			b.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && b.Commit == "":
				b.Commit = s.Value
			case s.Key == "vcs.time" && b.Date == "":
				b.Date = s.Value
			case s.Key == "vcs.modified" && s.Value == "true" && commit == "":
				b.Modified = true
			}
		}
	}
	if b.Version == "" {
		b.Version = "devel"
	}
	return b
}

// versionString is the one-word version for logs.
func versionString() string { return readBuildInfo().Version }

func printVersion(w io.Writer) {
	b := readBuildInfo()
	c := b.Commit
	if c == "" {
		c = "unknown"
	}
	if b.Modified {
		c += " (modified)"
	}
	d := b.Date
	if d == "" {
		d = "unknown"
	}
	fmt.Fprintf(w, "herald %s\ncommit: %s\nbuilt: %s\ngo: %s %s\n", b.Version, c, d, b.Go, b.Platform)
}
