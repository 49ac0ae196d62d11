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
	if d := time.Since(start); d > 60*time.Second { // 6.5 GB and 35 s before the bound; ~2 s now
		t.Errorf("took %v", d)
	}
}

// Integers wider than 64 bits are kept exactly (they were rounded through a float).
func TestWideIntegersKeptExactly(t *testing.T) {
	for path, data := range map[string]string{
		"/d.yaml": "big: 123456789012345678901234567890\nneg: -99999999999999999999\nhex: 0x10000000000000000\nsmall: 42\nf: 1.5\n",
		"/d.json": `{"big": 123456789012345678901234567890, "neg": -99999999999999999999, "hex": "0x10000000000000000", "small": 42, "f": 1.5}`,
	} {
		snap, err := parseFiles([]fileData{{path: path, data: []byte(data)}})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"/big": "123456789012345678901234567890", "/neg": "-99999999999999999999", "/small": "42", "/f": "1.5", "/hex": "0x10000000000000000"} // yaml.v3 reads it as a string: kept as text
		for k, v := range want {
			if snap.kv[k] != v {
				t.Errorf("%s: %s = %q, want %q", path, k, snap.kv[k], v)
			}
		}
	}
}
