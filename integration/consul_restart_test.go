package integration

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/integration/harness"
)

// An agent being fixed goes down and comes back, often several times in a row. While
// nothing listens on its port, herald tries again at least once a second (a refused
// connection costs the agent nothing) instead of backing off to 5 s, so a file catches
// up within about a second of the agent's return however long it was down.
func TestWatchRetriesARefusingConsulAgentEverySecond(t *testing.T) {
	t.Parallel()
	c := harness.StartConsul(t)
	kv := c.Client(t).KV()
	consulPut(t, kv, "app/value", "one")
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"conf.d/app.toml":    "[template]\nsrc = \"app.tmpl\"\ndest = \"out/app.conf\"\nkeys = [\"/app\"]\n",
		"templates/app.tmpl": "value={{getv \"/app/value\"}}\n",
		"out/.keep":          "",
	})
	p := startHerald(t, nil, "watch", "--confdir", dir, "--backend", "consul://"+c.Addr, "--log-level", "debug")
	dest := filepath.Join(dir, "out", "app.conf")
	waitFile(t, dest, "value=one\n", 20*time.Second)

	c.Proc.Kill(t)
	// Long enough for a backoff doubling from 250 ms to pass 2 s between two tries.
	time.Sleep(9 * time.Second)
	c.Proc.Restart(t) // a -dev agent: it comes back empty
	consulPut(t, kv, "app/value", "two")
	back := time.Now()
	waitFile(t, dest, "value=two\n", 20*time.Second)
	caughtUp := time.Since(back)

	// The watch's tries while the agent was down, from herald's log.
	var tries []time.Time
	for _, line := range strings.Split(p.Output(), "\n") {
		if !strings.Contains(line, "target=prefix:/app") || !strings.Contains(line, "consul watch") || !strings.Contains(line, "failing") {
			continue
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			t.Fatalf("log line without a time: %q", line)
		}
		tries = append(tries, at)
	}
	if len(tries) < 8 {
		t.Fatalf("%d failed tries logged over a 9 s outage, want one a second or more:\n%s", len(tries), tail(p.Output(), 40))
	}
	var longest time.Duration
	for i := 1; i < len(tries); i++ {
		longest = max(longest, tries[i].Sub(tries[i-1]))
	}
	t.Logf("%d tries while the agent was down, at most %v apart; caught up %v after the agent was back", len(tries), longest.Round(time.Millisecond), caughtUp.Round(time.Millisecond))
	if longest > 1800*time.Millisecond {
		t.Errorf("tries %v apart while the connection was refused, want at most 1 s (+ scheduling)", longest.Round(time.Millisecond))
	}
}
