package integration

import (
	"strings"
	"testing"
)

// A race-built herald's output is judged report by report: the known race inside
// go-zookeeper/zk is set apart (logged), any other fails the test.
func TestRaceReportsSetApartOnlyTheKnownLibraryRace(t *testing.T) {
	known := `WARNING: DATA RACE
Write at 0x00c0001ee000 by goroutine 77:
  github.com/go-zookeeper/zk.(*Conn).recvLoop()
      /go/pkg/mod/github.com/go-zookeeper/zk@v1.0.4/conn.go:849 +0xc4c
  github.com/go-zookeeper/zk.(*Conn).loop.func2()
      /go/pkg/mod/github.com/go-zookeeper/zk@v1.0.4/conn.go:466 +0x2f1

Previous read at 0x00c0001ee000 by goroutine 8:
  github.com/go-zookeeper/zk.(*Conn).sendSetWatches()
      /go/pkg/mod/github.com/go-zookeeper/zk@v1.0.4/conn.go:614 +0x472
  github.com/go-zookeeper/zk.(*Conn).loop()
      /go/pkg/mod/github.com/go-zookeeper/zk@v1.0.4/conn.go:480 +0x5a4

Goroutine 8 (running) created at:
  github.com/go-zookeeper/zk.Connect()
      /go/pkg/mod/github.com/go-zookeeper/zk@v1.0.4/conn.go:223 +0x3c
  github.com/heraldhq/herald/backends/zookeeper.(*Store).dial()
      /src/backends/zookeeper/zookeeper.go:200 +0x3c
`
	ours := strings.Replace(known, "github.com/go-zookeeper/zk.(*Conn).sendSetWatches()",
		"github.com/heraldhq/herald/backends/zookeeper.(*tree).publish()", 1)
	sep := "==================\n"
	out := "time=... level=INFO msg=rendered\n" + sep + known + sep + "time=... msg=x\n" + sep + ours + sep + "Found 2 data race(s)\n"
	gotOurs, gotKnown := raceReports(out)
	if gotKnown != known {
		t.Fatalf("known = %q, want the zk report", gotKnown)
	}
	if gotOurs != ours {
		t.Fatalf("ours = %q, want the herald report", gotOurs)
	}
	if o, k := raceReports("no race here\n"); o != "" || k != "" {
		t.Fatalf("clean output gave %q, %q", o, k)
	}
}
