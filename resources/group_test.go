//go:build unix

package resources

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func arrived(m *member) <-chan struct{} {
	c := make(chan struct{})
	go func() { m.arrive(); close(c) }()
	return c
}

func gone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	case <-time.After(50 * time.Millisecond):
		return false
	}
}

func TestCommitGroupWaitsForEveryMember(t *testing.T) {
	var g commitGroup
	a, b, c := g.join(), g.join(), g.join()
	da, db := arrived(a), arrived(b)
	if gone(da) || gone(db) {
		t.Fatal("a member went on while another was still preparing")
	}
	c.leave()
	if !gone(da) || !gone(db) {
		t.Fatal("arrived members still wait after the last one left")
	}
	// The next batch starts empty: a lone member goes straight on.
	if !gone(arrived(g.join())) {
		t.Fatal("a lone member waits")
	}
}

func TestCommitGroupMemberAwayForCheck(t *testing.T) {
	var g commitGroup
	a, b := g.join(), g.join()
	b.leave() // running its check command
	if !gone(arrived(a)) {
		t.Fatal("a member waits for one that is running a check")
	}
	b.rejoin()
	if !gone(arrived(b)) {
		t.Fatal("the member back from its check waits for nobody")
	}
	b.leave() // after arriving: no effect
	if g.members != 0 || g.batch != nil {
		t.Fatalf("group left with members = %d, batch = %v", g.members, g.batch)
	}
}

// A resource whose check command is slow must not hold back the files of the others
// syncing at the same time (they would wait for it in the commit group).
func TestSyncSlowCheckHoldsOnlyItsOwnFile(t *testing.T) {
	dir := t.TempDir()
	slow := &Resource{Name: "slow", Dest: filepath.Join(dir, "slow"), UID: -1, GID: -1, CheckCmd: "sleep 3"}
	fast := &Resource{Name: "fast", Dest: filepath.Join(dir, "fast"), UID: -1, GID: -1}
	s := &Syncer{}
	done := make(chan error, 1)
	go func() {
		_, err := s.Sync(context.Background(), slow, []byte("slow\n"))
		done <- err
	}()
	// Let the slow one get into its check.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if m, _ := filepath.Glob(filepath.Join(dir, ".slow*")); len(m) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no stage file for the slow resource")
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	if _, err := s.Sync(context.Background(), fast, []byte("fast\n")); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("the fast resource took %v: it waited for the slow one's check", d)
	}
	if _, err := os.Stat(slow.Dest); err == nil {
		t.Fatal("slow dest written before its check finished")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	assertDest(t, slow, "slow\n")
}

// An unnamed stage arrives before its check (it is fsynced before it gets the name the
// check reads): leaving and rejoining around the check must not put the member back,
// where the next batch would wait for it until its sync ends.
func TestCommitGroupArrivedMemberStaysOut(t *testing.T) {
	var g commitGroup
	a := g.join()
	if !gone(arrived(a)) {
		t.Fatal("a lone member waits")
	}
	a.leave() // its check command runs
	a.rejoin()
	if !gone(arrived(g.join())) {
		t.Fatal("the next member waits for one that arrived before its check")
	}
}
