//go:build linux

package resources

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkReplace200 measures the ways of replacing 200 small files crash-safely that
// issue #19 asked to compare, on the file system of HERALD_BENCH_DIR (default: a temp
// dir): each iteration is one batch of 200 replacements, 64 at a time as herald's sync
// pool, and reports its p50 and p99.
//
//   - herald: Syncer.Sync as shipped (unnamed stage, writeback started, the group's
//     fsyncs, name, rename; directory fsynced once after the batch, as the daemon does).
//   - herald-spare: the same with spare_file, each stage the inode dest had before.
//   - fsync: each file written to a named stage, fsynced and renamed on its own.
//   - syncfs: every stage written, one syncfs(2) on their file system, then the renames.
//   - syncfs+fsync: the same, each stage also fsynced before its rename.
//   - exchange (not shipped: it leaves a file beside every dest): each stage is the
//     inode dest had before the last change, rewritten and swapped with dest.
//   - tmpfile: each file an O_TMPFILE inode, fsynced, then named and renamed.
//   - tmpfile-held: the same, each replaced inode held open across its rename and
//     freed after the batch, in the background, as herald does (see holdInode).
//
// HERALD_BENCH_NEIGHBOUR_MB=n writes n MiB to another file on the same file system
// (not synced) before each batch: a database or a log writing beside the configs.
//
//	HERALD_BENCH_DIR=/mnt/ext4 go test ./resources -run XXX -bench Replace200 -benchtime 30x
func BenchmarkReplace200(b *testing.B) {
	for _, s := range []struct {
		name  string
		batch func(b *testing.B, dir string, data []byte)
	}{
		{"herald", replaceHerald},
		{"herald-spare", replaceHeraldSpare},
		{"fsync", replaceFsync},
		{"syncfs", replaceSyncfs},
		{"syncfs+fsync", replaceSyncfsFsync},
		{"exchange", replaceExchange},
		{"tmpfile", func(b *testing.B, dir string, data []byte) { replaceTmpfile(b, dir, data, false) }},
		{"tmpfile-held", func(b *testing.B, dir string, data []byte) { replaceTmpfile(b, dir, data, true) }},
	} {
		b.Run(s.name, func(b *testing.B) {
			dir := b.TempDir()
			if p := os.Getenv("HERALD_BENCH_DIR"); p != "" {
				var err error
				if dir, err = os.MkdirTemp(p, "replace-bench-"); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { os.RemoveAll(dir) })
			}
			neighbour, _ := strconv.Atoi(os.Getenv("HERALD_BENCH_NEIGHBOUR_MB"))
			data := make([]byte, 300)
			var took []time.Duration
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				if neighbour > 0 {
					writeNeighbour(b, dir, neighbour)
				}
				data[0] = byte('a' + i%26) // every batch changes every file
				b.StartTimer()
				t0 := time.Now()
				s.batch(b, dir, data)
				took = append(took, time.Since(t0))
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

const replaceFiles = 200

// replaceParallel is herald's sync pool size, or HERALD_BENCH_PARALLEL to compare others.
var replaceParallel = func() int {
	if n, _ := strconv.Atoi(os.Getenv("HERALD_BENCH_PARALLEL")); n > 0 {
		return n
	}
	return 64
}()

// eachFile runs fn for the 200 files, replaceParallel at a time.
func eachFile(fn func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, replaceParallel)
	for i := range replaceFiles {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fn(i)
		})
	}
	wg.Wait()
}

func replaceHerald(b *testing.B, dir string, data []byte) { syncBatch(b, dir, data, false) }

func replaceHeraldSpare(b *testing.B, dir string, data []byte) { syncBatch(b, dir, data, true) }

func syncBatch(b *testing.B, dir string, data []byte, spare bool) {
	s := &Syncer{DeferDirSync: true}
	eachFile(func(i int) {
		r := &Resource{Name: "r.toml", Dest: filepath.Join(dir, fmt.Sprintf("f%03d", i)), UID: -1, GID: -1, SpareFile: spare}
		if _, err := s.Sync(context.Background(), r, data); err != nil {
			b.Error(err)
		}
	})
	s.SyncDirs([]string{dir})
}

func writeStage(b *testing.B, dir string, i int, data []byte) *os.File {
	f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf(".s%03d", i)), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		b.Fatal(err)
	}
	return f
}

func renameStage(b *testing.B, dir string, i int) {
	if err := os.Rename(filepath.Join(dir, fmt.Sprintf(".s%03d", i)), filepath.Join(dir, fmt.Sprintf("f%03d", i))); err != nil {
		b.Error(err)
	}
}

// fsyncEach writes each file's stage, fsyncs it and puts it in place with put.
func fsyncEach(b *testing.B, dir string, data []byte, put func(b *testing.B, dir string, i int)) {
	eachFile(func(i int) {
		f := writeStage(b, dir, i, data)
		if err := f.Sync(); err != nil {
			b.Error(err)
		}
		f.Close()
		put(b, dir, i)
	})
	syncDirs([]string{dir})
}

func replaceFsync(b *testing.B, dir string, data []byte) { fsyncEach(b, dir, data, renameStage) }

func replaceSyncfs(b *testing.B, dir string, data []byte) {
	files := make([]*os.File, replaceFiles)
	eachFile(func(i int) { files[i] = writeStage(b, dir, i, data) })
	if err := unix.Syncfs(int(files[0].Fd())); err != nil {
		b.Error(err)
	}
	eachFile(func(i int) {
		files[i].Close()
		renameStage(b, dir, i)
	})
	syncDirs([]string{dir})
}

func replaceSyncfsFsync(b *testing.B, dir string, data []byte) {
	files := make([]*os.File, replaceFiles)
	eachFile(func(i int) { files[i] = writeStage(b, dir, i, data) })
	if err := unix.Syncfs(int(files[0].Fd())); err != nil {
		b.Error(err)
	}
	eachFile(func(i int) {
		if err := files[i].Sync(); err != nil {
			b.Error(err)
		}
		files[i].Close()
		renameStage(b, dir, i)
	})
	syncDirs([]string{dir})
}

// replaceExchange reuses inodes: the stage keeps the previous dest's inode after a
// renameat2(RENAME_EXCHANGE), is truncated and rewritten next time; no inode is created or
// freed in steady state.
func replaceExchange(b *testing.B, dir string, data []byte) {
	fsyncEach(b, dir, data, func(b *testing.B, dir string, i int) {
		if exchange(filepath.Join(dir, fmt.Sprintf(".s%03d", i)), filepath.Join(dir, fmt.Sprintf("f%03d", i))) != nil {
			renameStage(b, dir, i) // the first batch: no dest yet
		}
	})
}

// replaceTmpfile writes an O_TMPFILE inode, fsyncs it, links it to the stage name and
// renames that over dest; with hold, dest's inode is held across the rename and freed
// after the batch.
func replaceTmpfile(b *testing.B, dir string, data []byte, hold bool) {
	held := make([]*os.File, replaceFiles)
	eachFile(func(i int) {
		fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		f := os.NewFile(uintptr(fd), "tmp")
		if _, err := f.Write(data); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Error(err)
		}
		st := filepath.Join(dir, fmt.Sprintf(".s%03d", i))
		if err := unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, st, unix.AT_SYMLINK_FOLLOW); err != nil {
			b.Fatal(err)
		}
		if hold {
			held[i] = holdInode(filepath.Join(dir, fmt.Sprintf("f%03d", i)))
		}
		f.Close()
		renameStage(b, dir, i)
	})
	syncDirs([]string{dir})
	go func() {
		for _, f := range held {
			if f != nil {
				f.Close()
			}
		}
	}()
}

func writeNeighbour(b *testing.B, dir string, mib int) {
	f, err := os.Create(filepath.Join(dir, "neighbour"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for range mib {
		if _, err := f.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
}
