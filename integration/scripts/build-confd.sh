#!/usr/bin/env bash
# Builds confd (a benchmark peer, not a dependency of herald) from the Go module proxy
# and caches it by version. confd v0.16.0 predates Go modules (no go.mod, deps pinned
# in dep's Gopkg.lock), so `go install ...@v0.16.0` cannot build it: we build inside a
# writable copy with a go.mod that requires each Gopkg.lock revision.
set -euo pipefail
version="${CONFD_VERSION:-v0.16.0}"
cache="${HERALD_TEST_CACHE:-$HOME/.cache/herald-test}"
out="$cache/confd-$version/confd"
if [ -x "$out" ]; then echo "$out"; exit 0; fi

export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
start=$(date +%s)
dir=$(go mod download -json "github.com/kelseyhightower/confd@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$dir" ] || { echo "build-confd: module download failed for confd $version" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/confd-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp -r "$dir/." "$work/"
chmod -R u+w "$work"
cd "$work"
go mod init github.com/kelseyhightower/confd >&2
pins=$(awk '/^\[\[projects\]\]/{n=""} /^  name = /{gsub(/"/,"",$3); n=$3}
  /^  revision = /{gsub(/"/,"",$3); print n "@" $3}' Gopkg.lock)
# One at a time: the proxy no longer serves some revisions (gopkg.in/yaml.v2's), which
# then resolve to what the others need.
for pin in $pins; do go get "$pin" >&2 || echo "build-confd: $pin unavailable, left to go mod tidy" >&2; done
# consul/api is its own module today; its latest needs a newer Go than confd's era, and
# the 2018 consul revision pinned above already provides the package.
go mod edit -exclude=github.com/hashicorp/consul/api@v1.35.0
go mod tidy -e >&2 || true
mkdir -p "$(dirname "$out")"
go build -trimpath -o "$out.tmp" . >&2
mv "$out.tmp" "$out"
echo "build-confd: built confd $version in $(( $(date +%s) - start ))s" >&2
echo "$out"
