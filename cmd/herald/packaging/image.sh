#!/usr/bin/env bash
# make image: herald's container image (cmd/herald/packaging/Containerfile) built with podman from a
# rootfs made here: a static, stamped herald, the build host's CA bundle (Debian's
# ca-certificates), /etc/passwd and /etc/group with herald (65532), /etc/herald and /tmp.
# FROM scratch: nothing is pulled. IMAGE names the result (default herald:<version>).
set -euo pipefail
: "${VERSION:?}" "${LDFLAGS:?}" "${SOURCE_DATE_EPOCH:?}"
GO=${GO:-go}
IMAGE=${IMAGE:-herald:${VERSION#v}}
ca=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca" ] || { echo "image: $ca missing: apt-get install ca-certificates" >&2; exit 1; }
ctx=dist/image
rm -rf "$ctx"
mkdir -p "$ctx/rootfs/usr/bin" "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/etc/herald/conf.d" \
  "$ctx/rootfs/etc/herald/templates" "$ctx/rootfs/tmp"
CGO_ENABLED=0 "$GO" build -trimpath -buildvcs=false -ldflags "-s -w -buildid= $LDFLAGS" \
  -o "$ctx/rootfs/usr/bin/herald" ./cmd/herald
cp "$ca" "$ctx/rootfs/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nherald:x:65532:65532:herald:/nonexistent:/sbin/nologin\n' >"$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nherald:x:65532:\n' >"$ctx/rootfs/etc/group"
chmod 1777 "$ctx/rootfs/tmp"
chmod 0755 "$ctx/rootfs/etc/herald" "$ctx/rootfs/etc/herald/conf.d" "$ctx/rootfs/etc/herald/templates"
find "$ctx/rootfs" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
cp cmd/herald/packaging/Containerfile "$ctx/"
podman build --network none --pull=never --timestamp "$SOURCE_DATE_EPOCH" \
  -f "$ctx/Containerfile" -t "$IMAGE" "$ctx" >&2
rm -rf "$ctx"
echo "$IMAGE"
