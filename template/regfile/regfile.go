// Package regfile reads the files herald is configured by (resource files, templates,
// herald.toml) without trusting what sits at their path: a FIFO named x.toml would block
// the read forever, a link to /dev/zero would never end it, and either would take the
// daemon down. Only regular files of bounded size are read.
package regfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// Read returns the content of the regular file at path (symlinks followed), refusing any
// other kind of file and any file longer than max bytes. Like os.ReadFile's, errors from
// the system name the path; the refusals ("not a regular file (a FIFO)", "larger than N
// bytes") do not, since every caller names the file in its own words.
func Read(path string, max int64) ([]byte, error) {
	// Stat first: refusing a device or a FIFO needs no open, which for some devices
	// has side effects.
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if err := check(fi, max); err != nil {
		return nil, err
	}
	// O_NONBLOCK: if a FIFO was swapped in since the stat, the open returns at once
	// instead of waiting for a writer; the fstat below then refuses it.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, err
	}
	if err := check(fi, max); err != nil {
		return nil, err
	}
	// Bounded even if the file grows while it is read.
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, &fs.PathError{Op: "read", Path: path, Err: err}
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("larger than %d bytes", max)
	}
	return b, nil
}

func check(fi fs.FileInfo, max int64) error {
	if fi.IsDir() {
		return errors.New("is a directory")
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("not a regular file (%s)", kind(fi.Mode()))
	}
	if fi.Size() > max {
		return fmt.Errorf("larger than %d bytes", max)
	}
	return nil
}

func kind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return m.Type().String()
}
