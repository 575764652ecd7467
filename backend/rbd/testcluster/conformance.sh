#!/usr/bin/env bash
# conformance.sh PORT: libiscsi's conformance suite on an RBD LUN and on a
# file LUN with the same settings (thin, 512-byte blocks, 256 MiB), served
# side by side by one iscsid built with -tags ceph, and the tests that fail
# on RBD only. Needs a running test cluster (start.sh; its env sourced) and
# PORT and PORT+1 free on 127.0.0.1. Prints both scores and the difference;
# exits 1 when RBD fails a test the file LUN passes.
set -euo pipefail
cd "$(dirname "$0")/../../.."
port=${1:?usage: conformance.sh PORT}
port2=$((port + 1))
: "${ISCSIKIT_CEPH_CONF:?source the env start.sh printed}" "${ISCSIKIT_CEPH_POOL:?}"
shared=${SHARED:-../shared}
if [ ! -f "$shared/tools/conformance.sh" ] && [ -d ../../shared ]; then shared=../../shared; fi
work=$(mktemp -d)
image=conformance-$$
trap 'kill "${pid:-0}" 2>/dev/null; wait "${pid:-0}" 2>/dev/null; rbd -c "$ISCSIKIT_CEPH_CONF" rm -p "$ISCSIKIT_CEPH_POOL" "$image" >/dev/null 2>&1; rm -rf "$work"' EXIT
go build -tags ceph -o "$work/iscsid" ./examples/iscsid
mkdir -p "$work/state"
cat >"$work/state/config.json" <<CONFIG
{
  "version": 1,
  "global": {"basename": "iqn.2026-11.io.iscsikit"},
  "portals": [
    {"id": 1, "tag": 1, "listen": [{"ip": "127.0.0.1", "port": $port}]},
    {"id": 2, "tag": 2, "listen": [{"ip": "127.0.0.1", "port": $port2}]}
  ],
  "targets": [
    {"id": 1, "name": "file", "groups": [{"portal": 1}, {"portal": 2}]},
    {"id": 2, "name": "rbd", "groups": [{"portal": 1}, {"portal": 2}]}
  ],
  "extents": [
    {"id": 1, "name": "file0", "type": "FILE", "path": "$work/state/file0.img", "filesize": 268435456, "thin": true, "sanitize_rate_mibps": 32},
    {"id": 2, "name": "rbd0", "type": "RBD", "filesize": 268435456, "thin": true, "sanitize_rate_mibps": 32,
     "params": {"pool": "$ISCSIKIT_CEPH_POOL", "image": "$image", "conf": "$ISCSIKIT_CEPH_CONF", "timeout": "30"}}
  ],
  "targetextents": [
    {"id": 1, "target": 1, "extent": 1, "lunid": 0},
    {"id": 2, "target": 2, "extent": 2, "lunid": 0}
  ]
}
CONFIG
"$work/iscsid" --state "$work/state" 2>"$work/iscsid.log" &
pid=$!
for _ in $(seq 200); do iscsi-ls iscsi://127.0.0.1:$port >/dev/null 2>&1 && break; sleep 0.1; done
for name in file rbd; do
  iqn=iqn.2026-11.io.iscsikit:$name
  LOG="$work/$name.log" LIST=1 EXTRA=-S bash "$shared/tools/conformance.sh" \
    "iscsi://127.0.0.1:$port/$iqn/0" "iscsi://127.0.0.1:$port2/$iqn/0" >"$work/$name.txt" || true
  echo "$name: $(grep '^conformance:' "$work/$name.txt")"
done
sed -n 's/^fail //p' "$work/file.txt" | sort >"$work/file.fail"
sed -n 's/^fail //p' "$work/rbd.txt" | sort >"$work/rbd.fail"
extra=$(comm -13 "$work/file.fail" "$work/rbd.fail")
echo "failing on both: $(tr '\n' ' ' <"$work/file.fail")"
if [ -n "$extra" ]; then
  echo "failing on RBD only:"
  for t in $extra; do
    echo "  $t"
    grep -A12 "Test: $t\b\|$t\.\.\." "$work/rbd.log" | grep -iE 'fail|expected|got|sense|status' | head -4 | sed 's/^/    /' || true
  done
  [ -n "${KEEP:-}" ] && cp "$work/rbd.log" "$work/file.log" "$KEEP"/
  exit 1
fi
[ -n "${KEEP:-}" ] && cp "$work/rbd.log" "$work/file.log" "$KEEP"/
echo "RBD fails no test the file LUN passes"
