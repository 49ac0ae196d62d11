// Package earlyhup catches SIGHUP as early as a Go program can: in a package initializer
// with no dependencies but os/signal, run before the heavy initializers of the registry
// clients (tens of milliseconds on a busy machine). Until something catches it, Go's
// default for SIGHUP ends the process, and SIGHUP is herald watch's reload signal: a
// `systemctl reload` right after start must not kill the daemon. Only the Go runtime's
// own start-up, before any package initializer, remains uncovered.
package earlyhup

import (
	"os"
	"os/signal"
	"syscall"
)

// C receives SIGHUP from process start-up on (buffered: the signals of start-up fold
// into one).
var C = func() <-chan os.Signal {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGHUP)
	return c
}()
