package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"

	"github.com/heraldhq/herald/integration/harness"
)

// Figures for `herald watch` against real etcd, run with e.g.
//
//	go test ./integration -run XXX -bench BenchmarkWatchEtcd -benchtime 200x
//
// Latency is from the put's return to the moment inotify reports the last expected
// file renamed into place (herald renames its stage over dest), so it includes etcd's
// watch delivery, cache apply, render, fsync and rename.

// anonKB is the part of rssKB that is the process's own (heap, stacks); the rest are
// pages of the executable and other files, shared with every process mapping them.
type procStats struct{ rssKB, anonKB, hwmKB, cpuTicks, minorFaults int }

func readProc(pid int) procStats {
	var s procStats
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		fields := map[string]*int{"VmRSS:": &s.rssKB, "VmHWM:": &s.hwmKB, "RssAnon:": &s.anonKB}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && fields[f[0]] != nil {
				*fields[f[0]], _ = strconv.Atoi(f[1])
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+2:])
		s.minorFaults, _ = strconv.Atoi(f[7])
		ut, _ := strconv.Atoi(f[11])
		st, _ := strconv.Atoi(f[12])
		s.cpuTicks = ut + st
	}
	return s
}

// renames waits for n distinct dest files (names not starting with '.') to be renamed
// into dir, and returns when the last one is. It asks inotify for renames into dir
// only (herald renames each stage over its dest): a watcher that also took the stage
// files' create, write, chmod and close events would spend on this machine's two cores
// what herald needs, and make herald's own system calls queue more events.
type renames struct {
	f   *os.File
	buf []byte
}

func newRenames(b *testing.B, dir string) *renames {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_MOVED_TO); err != nil {
		unix.Close(fd)
		b.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "inotify "+dir) // non-blocking: reads take deadlines
	b.Cleanup(func() { f.Close() })
	return &renames{f: f, buf: make([]byte, 256<<10)}
}

func (r *renames) wait(b *testing.B, n int, within time.Duration) map[string]bool {
	seen := map[string]bool{}
	r.f.SetReadDeadline(time.Now().Add(within))
	for len(seen) < n {
		k, err := r.f.Read(r.buf)
		if err != nil {
			b.Fatalf("only %d of %d files replaced within %v: %v", len(seen), n, within, err)
		}
		for off := 0; off+unix.SizeofInotifyEvent <= k; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&r.buf[off]))
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				b.Fatal("inotify queue overflowed")
			}
			name := r.buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			if name = bytes.TrimRight(name, "\x00"); len(name) > 0 && name[0] != '.' {
				seen[string(name)] = true
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
	return seen
}

// waitContent waits until a rename brings path to hold want, and returns the names
// renamed meanwhile. Pairing each change with its own content, not with the next
// rename, keeps a late rename from start-up from being counted as the change's.
func (r *renames) waitContent(b *testing.B, path, want string, within time.Duration) map[string]int {
	names := map[string]int{}
	deadline := time.Now().Add(within)
	for {
		for name := range r.wait(b, 1, time.Until(deadline)) {
			names[name]++
		}
		if got, _ := os.ReadFile(path); strings.Contains(string(got), want) {
			return names
		}
	}
}

// drain drops what arrives until 50 ms pass without an event.
func (r *renames) drain() {
	for {
		r.f.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, err := r.f.Read(r.buf); err != nil {
			return
		}
	}
}

func percentiles(d []time.Duration) (p50, p99 float64) {
	slices.Sort(d)
	ms := func(x time.Duration) float64 { return float64(x.Microseconds()) / 1000 }
	return ms(d[len(d)/2]), ms(d[min(len(d)-1, len(d)*99/100)])
}

// benchWatch starts etcd with keys, then herald watch over nRes resources built by
// tmpl(i), and measures put -> last of nRes files, changing key k0500 each iteration;
// then the same with confd on the same etcd when a confd binary is found (CONFD_BIN or
// `confd` on PATH; integration/scripts/build-confd.sh builds v0.16.0, and `make bench`
// does). confd writes no fsync, herald fsyncs every file.
func benchWatch(b *testing.B, nRes, nKeys int, tmpl func(i int) string) {
	e := harness.StartEtcd(b)
	cli := e.Client(b)
	for i := 0; i < nKeys; i += 100 {
		var ops []clientv3.Op
		for j := i; j < min(i+100, nKeys); j++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("/bench/k%04d", j), fmt.Sprintf("10.0.%d.%d:80", j/256, j%256)))
		}
		if _, err := cli.Txn(context.Background()).Then(ops...).Commit(); err != nil {
			b.Fatal(err)
		}
	}
	heraldCmd := func(confdir string) (string, []string) {
		return heraldBinary(b), []string{"watch", "--confdir", confdir, "--backend", "etcd://" + strings.TrimPrefix(e.Endpoints[0], "http://"), "--log-level", "warn"}
	}
	b.Run("herald", func(b *testing.B) {
		benchWatchTool(b, cli, nRes, tmpl, "", true, heraldCmd)
	})
	if nRes > 1 {
		b.Run("herald-spare_file", func(b *testing.B) {
			benchWatchTool(b, cli, nRes, tmpl, "spare_file = true\n", false, heraldCmd)
		})
	}
	// HERALD_BENCH_BASELINE names another herald binary (e.g. the previous release) to
	// measure in the same run, for before/after figures.
	if base := os.Getenv("HERALD_BENCH_BASELINE"); base != "" {
		b.Run("herald-baseline", func(b *testing.B) {
			benchWatchTool(b, cli, nRes, tmpl, "", false, func(confdir string) (string, []string) {
				return base, []string{"watch", "--confdir", confdir, "--backend", "etcd://" + strings.TrimPrefix(e.Endpoints[0], "http://"), "--log-level", "warn"}
			})
		})
	}
	confd := confdBinary()
	if confd == "" {
		b.Log("no confd binary (CONFD_BIN or PATH): herald only")
		return
	}
	b.Run("confd", func(b *testing.B) {
		benchWatchTool(b, cli, nRes, tmpl, "", false, func(confdir string) (string, []string) {
			return confd, []string{"-backend", "etcdv3", "-node", e.Endpoints[0], "-watch", "-confdir", confdir, "-log-level", "error"}
		})
	})
}

// benchWatchTool runs cmd(confdir) over nRes resources reading /bench, each with the
// extra TOML lines, and measures put -> the last of the nRes files renamed into place;
// herald: cmd runs herald, which HERALD_BENCH_CPUPROFILE may profile.
func benchWatchTool(b *testing.B, cli *clientv3.Client, nRes int, tmpl func(i int) string, extra string, herald bool, cmd func(confdir string) (string, []string)) {
	ctx := context.Background()
	dir := benchDir(b)
	out := filepath.Join(dir, "out")
	files := map[string]string{}
	for i := range nRes {
		name := fmt.Sprintf("r%04d", i)
		files["conf.d/"+name+".toml"] = "[template]\nsrc = \"" + name + ".tmpl\"\ndest = \"" + filepath.Join(out, name) + "\"\nkeys = [\"/bench\"]\n" + extra
		files["templates/"+name+".tmpl"] = tmpl(i)
	}
	writeTree(b, dir, files)
	os.MkdirAll(out, 0o755)
	rn := newRenames(b, out)
	bin, args := cmd(dir)
	prof := &benchProfile{done: make(chan error, 1)}
	if herald {
		prof, args = newBenchProfile(b, args)
	}
	p := startHeraldAs(b, bin, nil, nil, args...)
	rn.wait(b, nRes, 60*time.Second)
	rn.drain()
	pid := p.cmd.Process.Pid
	before := readProc(pid)
	prof.start()
	var lat []time.Duration
	start := time.Now()
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		// A value no earlier run put: the same value renders the same file, replaced by nothing.
		if _, err := cli.Put(ctx, "/bench/k0500", fmt.Sprintf("changed-%d-%d", i, t0.UnixNano())); err != nil {
			b.Fatal(err)
		}
		rn.wait(b, nRes, 30*time.Second)
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	elapsed := time.Since(start)
	after := readProc(pid)
	prof.wait(b)
	p50, p99 := percentiles(lat)
	b.ReportMetric(p50, "p50-ms")
	b.ReportMetric(p99, "p99-ms")
	b.ReportMetric(float64(after.rssKB)/1024, "rss-MB")
	b.ReportMetric(float64(after.hwmKB)/1024, "peak-rss-MB")
	b.ReportMetric(100*float64(after.cpuTicks-before.cpuTicks)/100/elapsed.Seconds(), "cpu-%")
}

// benchDir is where the resources and their files go: a fresh temporary directory,
// under HERALD_BENCH_DIR when set (to measure another file system than the one etcd
// keeps its data on, e.g. tmpfs or a journaled ext4).
func benchDir(b *testing.B) string {
	parent := os.Getenv("HERALD_BENCH_DIR")
	if parent == "" {
		return b.TempDir()
	}
	dir, err := os.MkdirTemp(parent, "herald-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// benchProfile is HERALD_BENCH_CPUPROFILE=file: a CPU profile of herald over the first
// 5 s of the measured loop (pick -benchtime so that the loop lasts that long).
type benchProfile struct {
	file, addr string
	done       chan error
}

// newBenchProfile returns herald's args with --listen and --pprof added when a profile
// is asked for.
func newBenchProfile(b *testing.B, args []string) (*benchProfile, []string) {
	p := &benchProfile{file: os.Getenv("HERALD_BENCH_CPUPROFILE"), done: make(chan error, 1)}
	if p.file != "" {
		p.addr = fmt.Sprintf("127.0.0.1:%d", harness.FreePort(b))
		args = append(args, "--listen", p.addr, "--pprof")
	}
	return p, args
}

// start begins the profile, where the measured loop starts.
func (p *benchProfile) start() {
	if p.file == "" {
		p.done <- nil
		return
	}
	go func() { p.done <- saveProfile("http://"+p.addr+"/debug/pprof/profile?seconds=5", p.file) }()
}

// wait waits for the profile to be saved.
func (p *benchProfile) wait(b *testing.B) {
	if err := <-p.done; err != nil {
		b.Fatal(err)
	}
}

func saveProfile(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// One resource reading one key.
func BenchmarkWatchEtcdOneResource(b *testing.B) {
	benchWatch(b, 1, 1000, func(int) string { return `{{getv "/bench/k0500"}}` + "\n" })
}

// 200 resources sharing a 1,000-key prefix; each reads the changed key and a few others
// (the common shape: a service's few settings under a shared tree).
func BenchmarkWatchEtcd200ResourcesSmall(b *testing.B) {
	benchWatch(b, 200, 1000, func(i int) string {
		return fmt.Sprintf("# %d\nbackend {{getv \"/bench/k0500\"}}\nself {{getv \"/bench/k%04d\"}}\ncount {{len (ls \"/bench\")}}\n", i, i)
	})
}

// 200 resources sharing a 1,000-key prefix, each listing all 1,000 keys (worst case:
// every resource re-renders 1,000 lines on every change).
func BenchmarkWatchEtcd200ResourcesFullPrefix(b *testing.B) {
	benchWatch(b, 200, 1000, func(i int) string {
		return fmt.Sprintf("# %d\n{{range gets \"/bench/*\"}}server {{base .Key}} {{.Value}}\n{{end}}", i)
	})
}

// Raw etcd: put -> watch event on a plain clientv3 watch, the floor for the figures above.
func BenchmarkWatchEtcdRawPutToEvent(b *testing.B) {
	e := harness.StartEtcd(b)
	cli := e.Client(b)
	benchRawPutToEvent(b, cli, cli)
}

// The same, with the watch on a connection of its own, as any watcher other than the
// writer has (herald's included): etcd then sends the event on a second stream.
func BenchmarkWatchEtcdRawPutToEventOtherConnection(b *testing.B) {
	e := harness.StartEtcd(b)
	benchRawPutToEvent(b, e.Client(b), e.Client(b))
}

func benchRawPutToEvent(b *testing.B, cli, watcher *clientv3.Client) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wc := watcher.Watch(ctx, "/bench/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	if resp := <-wc; !resp.Created {
		b.Fatalf("watch not created: %v", resp.Err())
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		if _, err := cli.Put(ctx, "/bench/k0500", strconv.Itoa(i)); err != nil {
			b.Fatal(err)
		}
		<-wc
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	p50, p99 := percentiles(lat)
	b.ReportMetric(p50, "p50-ms")
	b.ReportMetric(p99, "p99-ms")
}

// Idle cost: 1,000 resources watched, no changes, for 60 s.
func BenchmarkWatchEtcdIdle1000Resources(b *testing.B) {
	e := harness.StartEtcd(b)
	cli := e.Client(b)
	for i := range 1000 {
		cli.Put(context.Background(), fmt.Sprintf("/idle/r%04d/value", i), "v")
	}
	dir := b.TempDir()
	files := map[string]string{}
	for i := range 1000 {
		name := fmt.Sprintf("r%04d", i)
		files["conf.d/"+name+".toml"] = "[template]\nsrc = \"" + name + ".tmpl\"\ndest = \"out/" + name + "\"\n"
		files["templates/"+name+".tmpl"] = fmt.Sprintf(`{{getv "/idle/r%04d/value"}}`, i)
	}
	writeTree(b, dir, files)
	out := filepath.Join(dir, "out")
	os.MkdirAll(out, 0o755)
	rn := newRenames(b, out)
	p := startHerald(b, nil, "watch", "--confdir", dir, "--backend", "etcd://"+strings.TrimPrefix(e.Endpoints[0], "http://"), "--log-level", "warn")
	rn.wait(b, 1000, 60*time.Second)
	time.Sleep(2 * time.Second)
	pid := p.cmd.Process.Pid
	before := readProc(pid)
	const idle = 60 * time.Second
	b.ResetTimer()
	time.Sleep(idle)
	b.StopTimer()
	after := readProc(pid)
	b.ReportMetric(float64(after.cpuTicks-before.cpuTicks), "cpu-ticks")
	b.ReportMetric(float64(after.cpuTicks-before.cpuTicks)/100/idle.Seconds()*100, "idle-cpu-%")
	b.ReportMetric(float64(after.rssKB)/1024, "rss-MB")
}

// One `herald render` of 1,000 resources over 100,000 keys in etcd (each resource lists
// its own 100 keys): wall time of the whole run and the process's peak RSS.
func BenchmarkRenderEtcd1000Resources100kKeys(b *testing.B) {
	e := harness.StartEtcd(b)
	cli := e.Client(b)
	ctx := context.Background()
	for r := range 1000 {
		var ops []clientv3.Op
		for k := range 100 {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("/big/r%04d/k%03d", r, k), fmt.Sprintf("10.%d.%d.1:80", r%256, k)))
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			b.Fatal(err)
		}
	}
	dir := b.TempDir()
	files := map[string]string{}
	for i := range 1000 {
		name := fmt.Sprintf("r%04d", i)
		files["conf.d/"+name+".toml"] = fmt.Sprintf("[template]\nsrc = \"%s.tmpl\"\ndest = \"out/%s\"\nkeys = [\"/big/%s\"]\n", name, name, name)
		files["templates/"+name+".tmpl"] = fmt.Sprintf("# %s\n{{range gets \"/big/%s/*\"}}server {{base .Key}} {{.Value}}\n{{end}}", name, name)
	}
	writeTree(b, dir, files)
	os.MkdirAll(filepath.Join(dir, "out"), 0o755)
	var walls []time.Duration
	var peakKB int64
	var cpu time.Duration
	b.ResetTimer()
	for range b.N {
		os.RemoveAll(filepath.Join(dir, "out"))
		os.MkdirAll(filepath.Join(dir, "out"), 0o755)
		t0 := time.Now()
		p := startHerald(b, nil, "render", "--confdir", dir, "--backend", "etcd://"+strings.TrimPrefix(e.Endpoints[0], "http://"), "--log-level", "warn", "--timeout", "60s")
		<-p.done
		walls = append(walls, time.Since(t0))
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			b.Fatalf("render exit %d:\n%s", code, tail(p.Output(), 20))
		}
		if ru, ok := p.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			peakKB = max(peakKB, ru.Maxrss)
		}
		cpu += p.cmd.ProcessState.UserTime() + p.cmd.ProcessState.SystemTime()
	}
	b.StopTimer()
	p50, _ := percentiles(walls)
	b.ReportMetric(p50, "wall-ms")
	b.ReportMetric(float64(peakKB)/1024, "peak-rss-MB")
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms")
}
