#!/usr/bin/env bash
# Builds consul-template, the peer BenchmarkWatchConsul measures herald against, into the
# test cache (never a dependency of herald's go.mod: `go install pkg@version` builds it in
# its own module) and prints its path. Cached by version.
set -euo pipefail
version="${CONSUL_TEMPLATE_VERSION:-v0.41.1}"
cache="${HERALD_TEST_CACHE:-$HOME/.cache/herald-test}"
bin="$cache/consul-template-$version"
out="$bin/consul-template"
if [ -x "$out" ]; then echo "$out"; exit 0; fi
export GOTOOLCHAIN=local CGO_ENABLED=0
mkdir -p "$bin"
start=$(date +%s)
GOBIN="$bin" go install -trimpath "github.com/hashicorp/consul-template@$version" >&2
echo "build-consul-template: built consul-template $version in $(( $(date +%s) - start ))s" >&2
echo "$out"
