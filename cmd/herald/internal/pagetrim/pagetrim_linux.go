package pagetrim

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// mapping is one line of /proc/self/smaps' header and the fields read from its block.
type mapping struct {
	start, end uintptr
	perms      string
	dev        uint64
	inode      uint64
	rss, anon  int64 // bytes
}

// Executable gives back the resident pages of the process's read-only, private
// mappings of its own executable that are copies of the file. A mapping with pages of
// its own (anonymous: copied on write) is kept whole.
func Executable() (Stats, error) {
	var st Stats
	maps, err := executableMappings()
	if err != nil {
		return st, fmt.Errorf("release executable pages: %w", err)
	}
	for _, m := range maps {
		switch {
		case m.rss == 0:
		case m.anon > 0:
			st.Kept += m.rss
		default:
			if _, _, errno := unix.Syscall(unix.SYS_MADVISE, m.start, m.end-m.start, unix.MADV_DONTNEED); errno != 0 {
				// EINVAL for locked pages (mlockall): they were meant to stay.
				return st, fmt.Errorf("release executable pages %#x-%#x: %w", m.start, m.end, errno)
			}
			st.Released += m.rss
		}
	}
	return st, nil
}

// executableMappings returns the process's read-only, private mappings of its own
// executable, as /proc/self/smaps shows them now.
func executableMappings() ([]mapping, error) {
	var exe unix.Stat_t
	// /proc/self/exe names the running inode even after the file was replaced (a
	// package upgrade renames a new binary over it): match by device and inode, not by
	// path, which the kernel then shows with " (deleted)".
	if err := unix.Stat("/proc/self/exe", &exe); err != nil {
		return nil, err
	}
	maps, err := readSmaps("/proc/self/smaps")
	if err != nil {
		return nil, err
	}
	var own []mapping
	for _, m := range maps {
		if m.inode == exe.Ino && m.dev == exe.Dev && !strings.ContainsRune(m.perms, 'w') && strings.HasSuffix(m.perms, "p") {
			own = append(own, m)
		}
	}
	return own, nil
}

// readSmaps parses the mappings of a /proc/PID/smaps file: each header line
// ("start-end perms offset major:minor inode [path]") and its Rss and Anonymous fields.
func readSmaps(path string) ([]mapping, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var maps []mapping
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		name, value, isField := strings.Cut(line, ":")
		if isField && !strings.Contains(name, " ") && !strings.Contains(name, "-") {
			if len(maps) == 0 {
				continue
			}
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
			if err != nil {
				continue // fields that are not sizes (VmFlags, THPeligible)
			}
			switch name {
			case "Rss":
				maps[len(maps)-1].rss = kb << 10
			case "Anonymous":
				maps[len(maps)-1].anon = kb << 10
			}
			continue
		}
		m, err := parseHeader(line)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		maps = append(maps, m)
	}
	return maps, sc.Err()
}

func parseHeader(line string) (mapping, error) {
	var m mapping
	f := strings.Fields(line)
	if len(f) < 5 {
		return m, fmt.Errorf("unexpected line %q", line)
	}
	lo, hi, ok := strings.Cut(f[0], "-")
	start, err1 := strconv.ParseUint(lo, 16, 64)
	end, err2 := strconv.ParseUint(hi, 16, 64)
	major, minor, ok2 := strings.Cut(f[3], ":")
	maj, err3 := strconv.ParseUint(major, 16, 32)
	mnr, err4 := strconv.ParseUint(minor, 16, 32)
	ino, err5 := strconv.ParseUint(f[4], 10, 64)
	if !ok || !ok2 || err1 != nil || err2 != nil || err3 != nil || err4 != nil || err5 != nil {
		return m, fmt.Errorf("unexpected line %q", line)
	}
	m.start, m.end, m.perms = uintptr(start), uintptr(end), f[1]
	m.dev, m.inode = unix.Mkdev(uint32(maj), uint32(mnr)), ino
	return m, nil
}
