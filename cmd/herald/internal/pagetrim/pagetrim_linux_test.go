package pagetrim

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// exeResident is what the process has resident of its read-only executable mappings.
func exeResident(t *testing.T) (resident, size int64) {
	t.Helper()
	maps, err := executableMappings()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range maps {
		resident += m.rss
		size += int64(m.end - m.start)
	}
	if size == 0 {
		t.Fatal("no read-only mapping of the executable in /proc/self/smaps")
	}
	return resident, size
}

func TestExecutableReleasesResidentPages(t *testing.T) {
	before, size := exeResident(t)
	st, err := Executable()
	if err != nil {
		t.Fatal(err)
	}
	after, _ := exeResident(t)
	t.Logf("mapped %d KiB; resident %d KiB before, %d KiB after; released %d KiB, kept %d KiB", size>>10, before>>10, after>>10, st.Released>>10, st.Kept>>10)
	// The test binary is not position-independent: nothing of it is the process's own.
	if st.Kept != 0 {
		t.Errorf("kept %d bytes of a non-PIE executable", st.Kept)
	}
	// Reading smaps again maps back what that takes, a small part of what was there.
	if st.Released < before*9/10 || after > before*3/4 {
		t.Errorf("released %d of %d resident bytes; %d resident after", st.Released, before, after)
	}
}

// A position-independent build's relocated read-only data are the process's own pages:
// releasing them would map back the file's unrelocated bytes. They must be kept, and the
// program must go on working.
func TestExecutableKeepsRelocatedPages(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("go not on PATH: the test builds a PIE program")
	}
	bin := filepath.Join(t.TempDir(), "pie")
	build := exec.Command(goBin, "build", "-buildmode=pie", "-o", bin, "./testdata/pie")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -buildmode=pie: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).CombinedOutput()
	if err != nil {
		t.Fatalf("the PIE program failed after releasing its pages: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`^\[\{"S":1\},\{"R":1\},\{"S":2\}\] circle OK kept=(\d+) released=(\d+)\n$`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("unexpected output %q", out)
	}
	kept, _ := strconv.Atoi(string(m[1]))
	released, _ := strconv.Atoi(string(m[2]))
	if kept == 0 || released == 0 {
		t.Errorf("kept %d and released %d bytes; want both: relocated data kept, text released", kept, released)
	}
}
