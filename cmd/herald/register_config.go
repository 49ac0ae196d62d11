package main

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/heraldhq/herald/resources/announce"
)

// RegisterConfig is one [[register]] table of herald.toml: an instance that `herald
// watch` (or `herald register` without --service) announces while it runs. Same fields
// as `herald register` flags.
type RegisterConfig = announce.Config

// registerSpec is one validated registration: what to announce and how.
type registerSpec struct {
	where string // "herald register" or "herald.toml [[register]] #2", for errors
	opts  announce.Options
}

// spec validates rc. flagNames selects how fields are named in errors:
// "--check-interval" for flags, "check_interval" for herald.toml.
func spec(rc RegisterConfig, where string, flagNames bool, o *Options, log *slog.Logger) (registerSpec, error) {
	name := func(field string) string {
		if flagNames {
			return "--" + strings.ReplaceAll(field, "_", "-")
		}
		return field
	}
	opts, err := rc.Options(name, o.Timeout, log)
	if err != nil {
		return registerSpec{}, fmt.Errorf("%s: %w", where, err)
	}
	return registerSpec{where: where, opts: opts}, nil
}
