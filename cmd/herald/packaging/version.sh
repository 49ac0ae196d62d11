#!/bin/sh
# Prints herald's version: `git describe` of the latest v* tag (v1.2.3, v1.2.3-4-gabcdef123456,
# with -dirty for uncommitted changes). Before the first tag, the same shape from v0.0.0:
# v0.0.0-<commits>-g<hash>. Outside a git checkout: v0.0.0-unknown.
set -eu
if d=$(git describe --tags --match 'v[0-9]*' --dirty --abbrev=12 2>/dev/null); then
  echo "$d"
  exit 0
fi
h=$(git rev-parse --short=12 HEAD 2>/dev/null) || { echo v0.0.0-unknown; exit 0; }
n=$(git rev-list --count HEAD)
dirty=
git diff --quiet HEAD -- 2>/dev/null || dirty=-dirty
echo "v0.0.0-$n-g$h$dirty"
