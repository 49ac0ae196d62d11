package file

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// aliasBomb is a small YAML file (~80 KB) whose aliases repeat subtrees under
// 1,000-character keys: under maxNodes, but gigabytes once flattened.
func aliasBomb() string {
	var b strings.Builder
	long := func(level, i int) string { return fmt.Sprintf("k%d_%d_%s", level, i, strings.Repeat("x", 1000)) }
	fmt.Fprintf(&b, "l0: &l0 {")
	for i := range 15 {
		fmt.Fprintf(&b, "%s: v, ", long(0, i))
	}
	b.WriteString("}\n")
	for level := 1; level < 5; level++ {
		fmt.Fprintf(&b, "l%d: &l%d {", level, level)
		for i := range 15 {
			fmt.Fprintf(&b, "%s: *l%d, ", long(level, i), level-1)
		}
		b.WriteString("}\n")
	}
	return b.String()
}

func TestFlattenedSizeIsBounded(t *testing.T) {
	data := aliasBomb()
	if len(data) > 100<<10 {
		t.Fatalf("bomb is %d bytes", len(data))
	}
	start := time.Now()
	_, err := parseFiles([]fileData{{path: "/etc/data.yaml", data: []byte(data)}})
	want := regexp.MustCompile(`^/etc/data\.yaml:\d+: keys and values take more than 134217728 bytes once flattened \(aliases repeating long keys\?\)$`)
	if err == nil || !want.MatchString(err.Error()) {
		t.Fatalf("err = %v\nwant %s", err, want)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
}
