#!/usr/bin/env bash
# Tests herald's container image with podman (rootful, no network): its file tree and user,
# `podman run IMAGE version`, and `exec` as PID 1 reaping an orphan. The exec child is
# Debian's static busybox, mounted read-only: the image itself has no shell.
set -euo pipefail
image=${1:?usage: test-image.sh IMAGE}
# On this kind of VM (Firecracker, hybrid cgroup v1/v2, RLIMIT_NOFILE hard limit 20000),
# podman's defaults fail: crun says "cgroups in hybrid mode not supported, drop all
# controllers from cgroupv2", and podman's default ulimits above the hard limit fail with
# "setrlimit `RLIMIT_NOFILE`: Operation not permitted". runc with explicit ulimits works.
# PODMAN_RUN overrides these flags.
read -r -a run <<<"${PODMAN_RUN:---runtime runc run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024}"
fail() { echo "test-image: FAIL: $*" >&2; exit 1; }
passed=0
ok() { echo "test-image: ok: $*"; passed=$((passed + 1)); }

user=$(podman image inspect -f '{{.Config.User}}' "$image")
[ "$user" = 65532:65532 ] || fail "image user is '$user', want 65532:65532"
ep=$(podman image inspect -f '{{json .Config.Entrypoint}}' "$image")
[ "$ep" = '["herald"]' ] || fail "entrypoint is $ep"
ok "runs as 65532:65532, ENTRYPOINT [\"herald\"]"

ctr=$(podman create "$image")
tree=$(podman export "$ctr" | tar -tvf -)
podman rm "$ctr" >/dev/null
for f in usr/bin/herald etc/ssl/certs/ca-certificates.crt etc/passwd etc/group; do
  grep -q " $f\$" <<<"$tree" || fail "image lacks /$f:"$'\n'"$tree"
done
[ "$(grep -c '' <<<"$tree")" -le 16 ] || fail "image holds more than herald needs:"$'\n'"$tree"
ok "file tree: herald, CA certificates, passwd, group and nothing else of note"

out=$(podman "${run[@]}" "$image" version)
grep -q '^herald v\?[0-9]' <<<"$out" || fail "podman run $image version: $out"
ok "podman run $image version: $(head -1 <<<"$out")"

# The child leaves an orphan (the subshell's sleep), which the kernel re-parents to PID 1:
# herald. Once it ends, herald must reap it; the child then finds no zombie in /proc.
script='(/bin/busybox sleep 0.1 &); /bin/busybox sleep 0.8
echo "child sees x=$x"
for f in /proc/[0-9]*/stat; do
  read -r l < "$f" 2>/dev/null || continue
  case "$l" in *") Z "*) echo "zombie: $l"; exit 3;; esac
done
exit 0'
set +e
out=$(podman "${run[@]}" -e APP_X=1 -v /bin/busybox:/bin/busybox:ro "$image" \
  exec --backend env:// --prefix /app --log-level debug -- /bin/busybox sh -c "$script" 2>&1)
code=$?
set -e
[ $code = 0 ] || fail "exec as PID 1 exited $code (a zombie was left, or herald failed):"$'\n'"$out"
grep -q 'reap=true' <<<"$out" && grep -q 'reaped an orphan' <<<"$out" && grep -q 'child sees x=1' <<<"$out" ||
  fail "herald was not PID 1, reaped nothing, or passed no key:"$'\n'"$out"
ok "exec as PID 1 passes keys and reaps an orphan"
echo "$passed passed, 0 failed"
