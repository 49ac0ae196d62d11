package main

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// exeRSS is the resident kB of this process's read-only mappings of its executable.
func exeRSS(t *testing.T) int {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	kb, in := 0, false
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 6 && strings.Contains(f[0], "-") && len(f[1]) == 4:
			in = f[1][1] == '-' && strings.Join(f[5:], " ") == exe
		case in && len(f) >= 2 && f[0] == "Rss:":
			n, _ := strconv.Atoi(f[1])
			kb += n
		}
	}
	return kb
}

// What start-up touched in the executable leaves the resident set, and the program runs
// on: its code and tables come back from the page cache when used.
func TestTrimResidentDropsExecutablePages(t *testing.T) {
	before := exeRSS(t)
	if err := trimResident(); err != nil {
		t.Fatal(err)
	}
	after := exeRSS(t)
	t.Logf("executable resident: %d kB before, %d kB after", before, after)
	if after >= before/2 {
		t.Fatalf("executable resident %d kB after trimming, want under half of %d kB", after, before)
	}
	// Still runs: parse options and render help through code paths not used since.
	var out strings.Builder
	if code := run(t.Context(), env{args: []string{"--help"}, stdout: &out, stderr: os.Stderr, lookup: os.LookupEnv}); code != 0 || !strings.Contains(out.String(), "herald watch") {
		t.Fatalf("herald --help after trimming: exit %d\n%s", code, out.String())
	}
}

// Only clean read-only private mappings of the executable qualify: never a writable
// one, another file's, or one holding a copy-on-write page.
func TestCleanExecutableMappings(t *testing.T) {
	smaps := `00400000-00d1b000 r-xp 00000000 fe:00 99 /usr/bin/herald
Rss:                3756 kB
Anonymous:             0 kB
00d1b000-01742000 r--p 0091b000 fe:00 99 /usr/bin/herald
Anonymous:             0 kB
01742000-017c3000 rw-p 01342000 fe:00 99 /usr/bin/herald
Anonymous:           124 kB
017c3000-01800000 r--p 01400000 fe:00 99 /usr/bin/herald
Anonymous:             8 kB
7f0000000000-7f0000010000 r-xp 00000000 fe:00 12 /usr/lib/libc.so.6
Anonymous:             0 kB
`
	got := cleanExecutableMappings([]byte(smaps), "/usr/bin/herald")
	want := [][2]uintptr{{0x400000, 0xd1b000}, {0xd1b000, 0x1742000}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %x, want %x", got, want)
	}
}
