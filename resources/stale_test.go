package resources

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Stage files a crash left behind are removed at start; nothing else is.
func TestRemoveStaleStagesOnlyHeraldsOwn(t *testing.T) {
	dir := t.TempDir()
	files := []string{
		".a.conf8674665223082153551",     // herald's stage for a.conf
		".a.conf.bak5577006791947779410", // its backup's stage
		".a.conf12",                      // too short: a user's file
		".a.conf8674665223082153551.swp", // not the pattern
		".b.conf8674665223082153551",     // another file's stage: b.conf is no dest
		"a.conf",
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	RemoveStaleStages([]*Resource{{Dest: filepath.Join(dir, "a.conf")}, {Dest: filepath.Join(t.TempDir(), "none", "x")}}, nil)
	var left []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		left = append(left, e.Name())
	}
	want := []string{".a.conf12", ".a.conf8674665223082153551.swp", ".b.conf8674665223082153551", "a.conf"}
	if !slices.Equal(left, want) {
		t.Fatalf("left %v, want %v", left, want)
	}
}
