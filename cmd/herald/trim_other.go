//go:build !linux

package main

import "log/slog"

// trimLater does nothing where there is no /proc/self/smaps to find the executable's
// mappings in.
func trimLater(*slog.Logger) (stop func()) { return func() {} }
