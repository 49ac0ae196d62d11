//go:build !unix

package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/heraldhq/herald/resources/supervisor"
)

// runExecCmd: exec is built out here (see supervisor.Unsupported); the rest of herald works.
func runExecCmd(_ context.Context, e env, _ []string) int {
	fmt.Fprintln(e.stderr, "herald exec:", supervisor.Unsupported)
	return 1
}

// execOwnFlags: exec has no flags here.
func execOwnFlags(*flag.FlagSet) {}
