//go:build !unix

package main

import (
	"context"
	"fmt"

	"github.com/heraldhq/herald/resources/supervisor"
)

// runExecCmd: exec is built out here (see supervisor.Unsupported); the rest of herald works.
func runExecCmd(_ context.Context, e env, _ []string) int {
	fmt.Fprintln(e.stderr, "herald exec:", supervisor.Unsupported)
	return 1
}

// execOptions: exec has no flags here.
func execOptions() []option { return nil }
