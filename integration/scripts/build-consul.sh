#!/usr/bin/env bash
# Builds a real consul binary from the Go module proxy and caches it by version.
# Consul is not packaged by Debian, and `go install` refuses its module because its
# go.mod replaces nested modules with ./api etc. that the module zip leaves out; so we
# build inside a writable copy with those local replaces dropped.
set -euo pipefail
version="${CONSUL_VERSION:-v1.22.2}"
cache="${HERALD_TEST_CACHE:-$HOME/.cache/herald-test}"
out="$cache/consul-$version/consul"
if [ -x "$out" ]; then echo "$out"; exit 0; fi

export GOTOOLCHAIN=local GOFLAGS=-mod=mod GONOSUMDB=github.com/hashicorp/consul CGO_ENABLED=0
start=$(date +%s)
dir=$(go mod download -json "github.com/hashicorp/consul@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$dir" ] || { echo "build-consul: module download failed for consul $version" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/consul-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp -r "$dir/." "$work/"
chmod -R u+w "$work"
cd "$work"
for r in $(go mod edit -json | sed -n 's/.*"Path": "\(github.com\/hashicorp\/consul[^"]*\)".*/\1/p' | sort -u); do
  go mod edit -dropreplace="$r" 2>/dev/null || true
done
mkdir -p "$(dirname "$out")"
go build -trimpath -o "$out.tmp" . >&2
mv "$out.tmp" "$out"
echo "build-consul: built consul $version in $(( $(date +%s) - start ))s" >&2
echo "$out"
