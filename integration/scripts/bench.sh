#!/bin/sh
# Runs herald's watch benchmarks against real etcd with the rendered files on three file
# systems: the machine's disk (wherever TMPDIR is), tmpfs (/dev/shm), and a journaled
# ext4 (Debian's default) made for the run in a loop-mounted image, which needs root;
# without root that third set is left out, and said so.
#   BENCHTIME (default 200x), BENCH (default BenchmarkWatchEtcd) pick what runs;
#   BENCH=BenchmarkWatchConsul BENCHTIME=60x compares with consul-template; the etcd
#   benchmarks run confd v0.16.0 side by side (integration/scripts/build-confd.sh).
set -eu
cd "$(dirname "$0")/../.."
GO=${GO:-go}
BENCHTIME=${BENCHTIME:-200x}
BENCH=${BENCH:-BenchmarkWatchEtcd}
bin=$(mktemp -d)
mnt=""
cleanup() {
	if [ -n "$mnt" ]; then
		umount "$mnt" 2>/dev/null || true
	fi
	rm -rf "$bin"
}
trap cleanup EXIT INT TERM
$GO test -c -o "$bin/integration.test" ./integration
case "$BENCH" in
*Consul*)
	# BenchmarkWatchConsul measures consul-template side by side: built into the test
	# cache by its own `go install`, never a dependency of herald's go.mod.
	if ct=$(integration/scripts/build-consul-template.sh); then
		export CONSUL_TEMPLATE_BIN="$ct"
	else
		echo "== consul-template could not be built: herald's figures only"
	fi
	;;
*Etcd*|*ZooKeeper*)
	# The etcd watch, fleet and ZooKeeper benchmarks run confd v0.16.0 side by side.
	if [ -z "${CONFD_BIN:-}" ] && cb=$(integration/scripts/build-confd.sh); then
		export CONFD_BIN="$cb"
	elif [ -z "${CONFD_BIN:-}" ]; then
		echo "== confd could not be built: herald's figures only"
	fi
	;;
esac
run() {
	fs=$(findmnt -n -o FSTYPE,OPTIONS -T "$2" 2>/dev/null | head -n 1)
	echo "== rendered files on $1 (${fs:-$(stat -f -c %T "$2")})"
	(cd integration && HERALD_BENCH_DIR="$2" "$bin/integration.test" -test.run XXX -test.timeout 60m \
		-test.bench "$BENCH" -test.benchtime "$BENCHTIME" | grep -E '^(Benchmark|ok|FAIL|---)')
}
run "the disk" "${TMPDIR:-/tmp}"
run tmpfs /dev/shm
if [ "$(id -u)" = 0 ] && command -v mkfs.ext4 >/dev/null; then
	truncate -s 2G "$bin/ext4.img"
	# Inode tables and journal initialized now, not by a kernel thread during the run.
	mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$bin/ext4.img"
	sync "$bin/ext4.img" # not flushed to the disk under the benchmark
	mnt="$bin/ext4"
	mkdir "$mnt"
	mount -o loop "$bin/ext4.img" "$mnt"
	run "a journaled ext4 (loop image on the disk)" "$mnt"
else
	echo "== journaled ext4 left out: it needs root (mount) and mkfs.ext4"
fi
