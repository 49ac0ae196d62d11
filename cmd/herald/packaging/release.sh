#!/usr/bin/env bash
# make release: into dist/, one reproducible static herald per platform of RELEASE_TARGETS
# (os/arch; linux/arm is ARMv7) in herald_<version>_<os>_<arch>.tar.gz with README.md and
# LICENSE, and SHA256SUMS. Reproducible: -trimpath, an empty build ID, CGO_ENABLED=0, the
# commit's date as build date and as every tar entry's time, sorted entries, numeric
# owner 0, gzip without name or time. Two runs on one commit give the same bytes.
set -euo pipefail
: "${VERSION:?}" "${LDFLAGS:?}" "${SOURCE_DATE_EPOCH:?}" "${RELEASE_TARGETS:?}"
GO=${GO:-go}
out=dist
rm -rf "$out"
mkdir -p "$out"
for t in $RELEASE_TARGETS; do
  os=${t%/*} arch=${t#*/}
  name=herald_${VERSION#v}_${os}_${arch}
  [ "$arch" = arm ] && name+=v7
  exe=herald
  [ "$os" = windows ] && exe=herald.exe
  echo "release: $name" >&2
  mkdir -p "$out/$name"
  CGO_ENABLED=0 GOOS=$os GOARCH=$arch GOARM=7 "$GO" build -trimpath -buildvcs=false \
    -ldflags "-s -w -buildid= $LDFLAGS" -o "$out/$name/$exe" ./cmd/herald
  cp README.md LICENSE "$out/$name/"
  tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
    --mode=u+rw,go+r,go-w -C "$out" -cf - "$name" | gzip -9 -n >"$out/$name.tar.gz"
  rm -rf "${out:?}/$name"
done
(cd "$out" && sha256sum -- *.tar.gz >SHA256SUMS)
cat "$out/SHA256SUMS"
