//go:build unix

// Command floor is the benchmarks' physical floor: the least a program linking a
// registry's required client library can do to keep one file true to one key. It reads
// the key, replaces FILE crash-safely (write a stage, fsync, rename), then watches the
// key and does the same on every change: no templates, no config, no metrics, no logs.
// The benchmarks run it as its own process beside herald and the peer tool, so that its
// latency and its memory (RSS, PSS) are the floor in the same run, on the same servers.
// Unix only, as renameio and the benchmarks are.
//
//	floor etcd ENDPOINT KEY FILE
//	floor consul ADDR KEY FILE
//	floor zookeeper SERVER PATH FILE
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/go-zookeeper/zk"
	"github.com/google/renameio/v2"
	"github.com/hashicorp/consul/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: floor etcd|consul|zookeeper ENDPOINT KEY FILE")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	kind, endpoint, key, file := os.Args[1], os.Args[2], os.Args[3], os.Args[4]
	var err error
	switch kind {
	case "etcd":
		err = watchEtcd(ctx, endpoint, key, file)
	case "consul":
		err = watchConsul(ctx, endpoint, key, file)
	case "zookeeper":
		err = watchZooKeeper(ctx, endpoint, key, file)
	default:
		err = fmt.Errorf("unknown registry %q", kind)
	}
	if err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func watchEtcd(ctx context.Context, endpoint, key, file string) error {
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}})
	if err != nil {
		return err
	}
	defer c.Close()
	r, err := c.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("get %s: %w", key, err)
	}
	if len(r.Kvs) == 0 {
		return fmt.Errorf("%s: no such key", key)
	}
	if err := replace(file, r.Kvs[0].Value); err != nil {
		return err
	}
	for w := range c.Watch(ctx, key, clientv3.WithRev(r.Header.Revision+1)) {
		if err := w.Err(); err != nil {
			return fmt.Errorf("watch %s: %w", key, err)
		}
		for _, ev := range w.Events {
			if ev.Type == clientv3.EventTypePut {
				if err := replace(file, ev.Kv.Value); err != nil {
					return err
				}
			}
		}
	}
	return ctx.Err()
}

func watchConsul(ctx context.Context, addr, key, file string) error {
	c, err := api.NewClient(&api.Config{Address: addr})
	if err != nil {
		return err
	}
	var index uint64
	for {
		// A blocking query: it returns when the key's index passes index (or after
		// Consul's default wait of 5 minutes, with the same value).
		p, meta, err := c.KV().Get(key, (&api.QueryOptions{WaitIndex: index}).WithContext(ctx))
		if err != nil {
			return fmt.Errorf("get %s: %w", key, err)
		}
		if p == nil {
			return fmt.Errorf("%s: no such key", key)
		}
		if meta.LastIndex != index {
			if err := replace(file, p.Value); err != nil {
				return err
			}
		}
		index = meta.LastIndex
	}
}

// watchZooKeeper reads the znode and arms its data watch in one call (a ZooKeeper
// watch carries no data), replaces file, and waits for the watch to fire.
func watchZooKeeper(ctx context.Context, server, path, file string) error {
	c, _, err := zk.Connect([]string{server}, 10*time.Second, zk.WithLogInfo(false))
	if err != nil {
		return err
	}
	defer c.Close()
	for {
		data, _, fired, err := c.GetW(path)
		if err != nil {
			return fmt.Errorf("get %s: %w", path, err)
		}
		if err := replace(file, data); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-fired:
		}
	}
}

// replace replaces file crash-safely (renameio: a stage beside it, fsynced, renamed
// over it), as herald does. The stage goes in file's own directory, as herald's does:
// without WithTempDir renameio probes $TMPDIR with two files and a rename every time.
// Its name starts with a dot, which the benchmarks' rename watchers skip.
func replace(file string, data []byte) error {
	if err := renameio.WriteFile(file, data, 0o644, renameio.WithTempDir(filepath.Dir(file))); err != nil {
		return fmt.Errorf("replace %s: %w", file, err)
	}
	return nil
}
