//go:build !linux

package pagetrim

// Executable does nothing outside Linux: the mappings are not read from /proc there.
func Executable() (Stats, error) { return Stats{}, nil }
