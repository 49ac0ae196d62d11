package integration

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/heraldhq/herald/integration/harness"
)

// The benchmarks' floor (integration/floor) is only a floor if it does the job: it keeps
// its file true to the key through changes, on each registry it stands in for.
func TestFloorKeepsFileTrue(t *testing.T) {
	t.Parallel()
	bin := goBinary(t, "integration/floor")
	t.Run("etcd", func(t *testing.T) {
		t.Parallel()
		e := harness.StartEtcd(t)
		cli := e.Client(t)
		put := func(v string) {
			if _, err := cli.Put(context.Background(), "/floor/k", v); err != nil {
				t.Fatal(err)
			}
		}
		put("one")
		file := filepath.Join(t.TempDir(), "f")
		startHeraldAs(t, bin, nil, nil, "etcd", e.Endpoints[0], "/floor/k", file)
		waitFile(t, file, "one", 20*time.Second)
		put("two")
		waitFile(t, file, "two", 20*time.Second)
		put("three")
		waitFile(t, file, "three", 20*time.Second)
	})
	t.Run("consul", func(t *testing.T) {
		t.Parallel()
		c := harness.StartConsul(t)
		kv := c.Client(t).KV()
		consulPut(t, kv, "floor/k", "one")
		file := filepath.Join(t.TempDir(), "f")
		startHeraldAs(t, bin, nil, nil, "consul", c.Addr, "floor/k", file)
		waitFile(t, file, "one", 20*time.Second)
		consulPut(t, kv, "floor/k", "two")
		waitFile(t, file, "two", 20*time.Second)
		consulPut(t, kv, "floor/k", "three")
		waitFile(t, file, "three", 20*time.Second)
	})
	t.Run("zookeeper", func(t *testing.T) {
		t.Parallel()
		z := harness.StartZooKeeper(t)
		c := zkClient(t, z.Servers, 10*time.Second)
		zkPut(t, c, "/floor/k", "one")
		file := filepath.Join(t.TempDir(), "f")
		startHeraldAs(t, bin, nil, nil, "zookeeper", z.Servers[0], "/floor/k", file)
		waitFile(t, file, "one", 20*time.Second)
		zkPut(t, c, "/floor/k", "two")
		waitFile(t, file, "two", 20*time.Second)
		zkPut(t, c, "/floor/k", "three")
		waitFile(t, file, "three", 20*time.Second)
	})
}
