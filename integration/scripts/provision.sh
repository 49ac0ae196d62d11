#!/usr/bin/env bash
# Installs the real servers herald's integration tests run, on Debian 12: etcd, ZooKeeper,
# HAProxy and nginx from Debian, and consul built from source (build-consul.sh, cached).
# Idempotent: a second run checks, finds everything in place and takes well under a second
# (plus nothing for consul once its binary is cached). Needs root only when a package is
# missing. Prints how long each step took.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
# Registrant client libraries for the service-discovery tests (issue 16): kazoo, python-consul,
# python-etcd3 (for /usr/bin/python3) and Curator (jars under /usr/share/java).
packages=(etcd-server etcd-client zookeeper haproxy nginx libslf4j-java
  python3-kazoo python3-consul python3-etcd3 libcurator-discovery-java libcurator-recipes-java
  dnsutils) # dig: the Consul DNS test reads herald's registrations as SRV records
# make package-test: podman builds and runs the image (runc: crun refuses hybrid cgroups),
# busybox-static is the image test's child, ca-certificates go into the image, and
# systemd-analyze checks the packaged unit.
packages+=(podman runc busybox-static ca-certificates systemd)
only_packages=
# `provision.sh --packages haproxy nginx` installs just those (make demo), no consul.
if [ "${1:-}" = --packages ]; then
  shift
  packages=("$@")
  only_packages=1
fi

now() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }
log() { echo "provision: $*" >&2; }

total_start=$(now)

# --- Debian packages ----------------------------------------------------------------
step_start=$(now)
missing=()
for p in "${packages[@]}"; do
  status="$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)"
  [ "$status" = installed ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  log "packages: all installed (${packages[*]}), checked in $(took "$step_start")"
else
  if [ "$(id -u)" -ne 0 ]; then
    log "missing Debian packages: ${missing[*]}"
    log "run as root (e.g. 'sudo make test-deps'), or install them yourself:"
    log "  apt-get install -y --no-install-recommends ${missing[*]}"
    exit 1
  fi
  command -v apt-get >/dev/null || { log "apt-get not found: this script provisions Debian 12 only"; exit 1; }

  # Debian starts services on install (nginx on 0.0.0.0:80, zookeeper, etcd...). Tests run
  # their own loopback instances only, so forbid that while we install -- with our own
  # policy-rc.d if there is none, removed again only if we created it.
  guard=/usr/sbin/policy-rc.d
  created_guard=0
  if [ ! -e "$guard" ]; then
    printf '#!/bin/sh\n# herald provision.sh: do not start services during apt-get install\nexit 101\n' >"$guard"
    chmod 0755 "$guard"
    created_guard=1
    trap '[ "$created_guard" = 1 ] && rm -f "$guard"' EXIT
  fi

  export DEBIAN_FRONTEND=noninteractive
  t0=$(now)
  apt-get update -qq
  log "apt-get update took $(took "$t0")"
  t0=$(now)
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  log "apt-get install ${missing[*]} took $(took "$t0")"

  if [ "$created_guard" = 1 ]; then
    rm -f "$guard"
    created_guard=0
  fi
  log "packages: done in $(took "$step_start")"
fi

# --- consul (not packaged by Debian) ----------------------------------------------------
if [ -n "$only_packages" ]; then
  log "all done in $(took "$total_start")"
  exit 0
fi
step_start=$(now)
build=("$here/build-consul.sh")
# Under sudo, build into the invoking user's cache: that is where their tests look.
if [ "$(id -u)" -eq 0 ] && [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
  user_home="$(getent passwd "$SUDO_USER" | cut -d: -f6)"
  build=(runuser -u "$SUDO_USER" -- env "PATH=$PATH" "HOME=$user_home"
    ${HERALD_TEST_CACHE:+"HERALD_TEST_CACHE=$HERALD_TEST_CACHE"}
    ${CONSUL_VERSION:+"CONSUL_VERSION=$CONSUL_VERSION"} "$here/build-consul.sh")
fi
command -v go >/dev/null || { log "go not found on PATH: consul is built from source with Go"; exit 1; }
consul="$("${build[@]}")"
"$consul" version | sed -n '1s/^/provision: /p' >&2
log "consul: $consul ($(took "$step_start"))"

# --- npm etcd3 (the node-etcd-style registrant of the service-discovery tests) ------------
# Into the test cache, never the repository: integration tests find it by HERALD_TEST_CACHE.
step_start=$(now)
npm_dir="${HERALD_TEST_CACHE:-$HOME/.cache/herald-test}/npm"
if [ -f "$npm_dir/node_modules/etcd3/package.json" ]; then
  log "npm etcd3: present in $npm_dir"
elif command -v npm >/dev/null; then
  mkdir -p "$npm_dir"
  npm install --no-audit --no-fund --silent --prefix "$npm_dir" etcd3@1 >&2
  log "npm etcd3: installed in $npm_dir ($(took "$step_start"))"
else
  log "npm not found: apt-get install -y npm (the etcd3 registrant test needs it)"
  exit 1
fi

log "all done in $(took "$total_start")"
