package main

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// trimResident hands back the memory that start-up touched and a daemon does not need
// again. Most of a fresh herald's resident set is its own executable, not its heap:
// start-up (package initialisation, flag and option parsing, loading resources, the
// backend's client) runs code and reads tables spread over nearly the whole binary,
// and the kernel maps each touched page's neighbours with it (fault-around), so ~18 MB
// of a 30 MB executable stay mapped although the watch loop uses a few MB of it. Those
// pages are file-backed and unmodified: dropping them from this process's page tables
// (madvise MADV_DONTNEED) leaves them in the page cache, shared with every other herald
// on the host, and a page needed again is mapped back on first use (a minor fault, no
// I/O). Then the heap's free pages go back to the OS.
//
// Only read-only mappings of the executable that hold no private (copy-on-write) page
// are dropped: such a page, for example one the dynamic loader relocated, would be
// read back from the file unrelocated.
// trimAfter is when a watching herald trims: start-up and the first renders are over.
const trimAfter = 5 * time.Second

// trimLater trims once trimAfter has passed; the returned func cancels it.
func trimLater(log *slog.Logger) (stop func()) {
	t := time.AfterFunc(trimAfter, func() {
		if err := trimResident(); err != nil {
			log.Debug("could not trim start-up memory", "err", err)
		}
	})
	return func() { t.Stop() }
}

func trimResident() error {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return err
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return err
	}
	debug.FreeOSMemory()
	for _, m := range cleanExecutableMappings(smaps, exe) {
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, m[0], m[1]-m[0], unix.MADV_DONTNEED); errno != 0 {
			return fmt.Errorf("madvise %#x-%#x: %w", m[0], m[1], errno)
		}
	}
	return nil
}

// cleanExecutableMappings returns the [start, end) of each read-only, private mapping of
// exe in /proc/self/smaps whose pages are all the file's own (Anonymous: 0 kB).
func cleanExecutableMappings(smaps []byte, exe string) [][2]uintptr {
	var out [][2]uintptr
	var cur [2]uintptr
	candidate := false
	sc := bufio.NewScanner(bytes.NewReader(smaps))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 6 && strings.Contains(f[0], "-") && len(f[1]) == 4:
			// A mapping's header: "start-end perms offset dev inode path".
			lo, hi, _ := strings.Cut(f[0], "-")
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			candidate = err1 == nil && err2 == nil && f[1][1] == '-' && f[1][3] == 'p' &&
				strings.Join(f[5:], " ") == exe
			cur = [2]uintptr{uintptr(start), uintptr(end)}
		case candidate && len(f) >= 2 && f[0] == "Anonymous:":
			if f[1] == "0" {
				out = append(out, cur)
			}
			candidate = false
		}
	}
	return out
}
