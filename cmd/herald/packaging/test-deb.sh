#!/usr/bin/env bash
# Installs herald's .deb on this machine, checks it, and removes it again (dpkg -r, then
# dpkg -P) whatever happens: nothing of it is left behind. Needs root.
set -euo pipefail
deb=${1:?usage: test-deb.sh herald_<version>_<arch>.deb}
[ -f "$deb" ] || { echo "test-deb: no such file: $deb" >&2; exit 1; }
fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }
passed=0
ok() { echo "test-deb: ok: $*"; passed=$((passed + 1)); }
if dpkg-query -W -f='${db:Status-Status}' herald 2>/dev/null | grep -q installed; then
  fail "a herald package is installed already; not touching it"
fi
cleanup() { dpkg -P herald >/dev/null 2>&1 || true; }
trap cleanup EXIT

dpkg -i "$deb" >/dev/null
ok "dpkg -i $deb"
out=$(herald version)
grep -q "^herald v\?[0-9]" <<<"$out" && grep -q '^commit: [0-9a-f]\{40\}' <<<"$out" || fail "herald version: $out"
ok "herald version: $(head -1 <<<"$out")"
[ "$(stat -c %U:%G /etc/herald/herald.toml)" = root:herald ] || fail "/etc/herald/herald.toml is $(stat -c %U:%G /etc/herald/herald.toml)"
getent passwd herald | grep -q ':/usr/sbin/nologin$' || fail "no system user herald"
[ -d /etc/herald/conf.d ] && [ -d /etc/herald/templates ] || fail "no /etc/herald/conf.d or templates"
ok "user herald, /etc/herald/{herald.toml,conf.d,templates}, /etc/default/herald"
zcat /usr/share/man/man1/herald.1.gz | grep -q '^\.TH HERALD 1' || fail "man page"
[ -s /usr/share/bash-completion/completions/herald ] || fail "bash completion"
ok "man page and completions"
# The packaged herald.toml (all comments) parses: check fails only for want of resources.
msg=$(herald check 2>&1 || true)
grep -q 'no resources in /etc/herald/conf.d' <<<"$msg" || fail "herald check with the packaged settings: $msg"
ok "packaged herald.toml parses"
verify=$(systemd-analyze verify /lib/systemd/system/herald.service 2>&1) || fail "systemd-analyze verify: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify warns: $verify"
ok "systemd-analyze verify herald.service"

dpkg -r herald >/dev/null
[ ! -e /usr/bin/herald ] || fail "dpkg -r left /usr/bin/herald"
[ -e /etc/herald/herald.toml ] || fail "dpkg -r removed a conffile"
ok "dpkg -r (conffiles kept)"
dpkg -P herald >/dev/null
for p in /etc/herald /etc/default/herald /lib/systemd/system/herald.service /usr/share/man/man1/herald.1.gz; do
  [ ! -e "$p" ] || fail "dpkg -P left $p"
done
! getent passwd herald >/dev/null || fail "dpkg -P left the user herald"
ok "dpkg -P (nothing left)"
echo "$passed passed, 0 failed"
