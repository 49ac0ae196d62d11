//go:build unix && !linux

package resources

import (
	"errors"
	"os"
)

// openUnnamed: O_TMPFILE is Linux's; elsewhere the stage file is a named one.
func openUnnamed(dir, name string) (*os.File, error) { return nil, errors.ErrUnsupported }

func linkUnnamed(f *os.File, path string) error { return errors.ErrUnsupported }

// openSpare: no leases to prove a spare unused, so a spare is never rewritten here.
func openSpare(path string) (*os.File, bool, error) { return nil, false, nil }

func releaseLease(*os.File) {}

func exchange(old, new string) error { return errors.ErrUnsupported }

// holdInode: no O_PATH here; the inode a rename replaces is freed by the rename.
func holdInode(string) *os.File { return nil }

func maxHeldInodes() int { return 0 }
