//go:build unix && !linux

package resources

import (
	"errors"
	"os"
)

// openUnnamed: O_TMPFILE is Linux's; elsewhere the stage file is a named one.
func openUnnamed(dir, name string) (*os.File, error) { return nil, errors.ErrUnsupported }

func linkUnnamed(f *os.File, path string) error { return errors.ErrUnsupported }
