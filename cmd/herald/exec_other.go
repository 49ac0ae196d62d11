//go:build !unix

package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/heraldhq/herald/resources/child"
)

// runExecCmd: exec is built out here (see child.Unsupported); the rest of herald works.
func runExecCmd(_ context.Context, e env, _ []string) int {
	fmt.Fprintln(e.stderr, "herald exec:", child.Unsupported)
	return 1
}

// execOwnFlags: exec has no flags here.
func execOwnFlags(*flag.FlagSet) {}
