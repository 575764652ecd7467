#!/usr/bin/env bash
# gateways.sh PORT: two iscsid (built with -tags ceph) as two ALUA gateways
# of one RBD image, under one target name: gateway A on 127.0.0.1:PORT is
# portal group 1, active/optimized, gateway B on PORT+1 is group 2,
# active/non-optimized, each with the other's group as a remote portal and
# the same extent serial and NAA. Runs libiscsi's iscsi-test-cu with URL1 =
# gateway A and URL2 = gateway B (TESTS, default ALL.MultipathIO: the suite
# that uses the second path as a second path of one LU; it skips when the
# two paths do not report the same LU identity) and prints the score.
# Exits 1 when a test fails other than those a single gateway fails too,
# or when one of the MultipathIO tests (Simple, CompareAndWrite,
# CompareAndWriteAsync, Reset) did not pass: the reservations (persistent
# and SPC-2) and LUN resets cross the gateways through the image's RADOS
# object, so the tests whose second initiator logs in through URL2 must
# pass like the others.
# Needs a running test cluster (start.sh; its env sourced).
set -euo pipefail
cd "$(dirname "$0")/../../.."
port=${1:?usage: gateways.sh PORT}
port2=$((port + 1))
: "${ISCSIKIT_CEPH_CONF:?source the env start.sh printed}" "${ISCSIKIT_CEPH_POOL:?}"
shared=${SHARED:-../shared}
if [ ! -f "$shared/tools/conformance.sh" ] && [ -d ../../shared ]; then shared=../../shared; fi
work=$(mktemp -d)
image=gateways-$$
trap 'kill ${pids:-} 2>/dev/null; wait ${pids:-} 2>/dev/null; rbd -c "$ISCSIKIT_CEPH_CONF" rm -p "$ISCSIKIT_CEPH_POOL" "$image" >/dev/null 2>&1; rm -rf "$work"' EXIT
go build -tags ceph -o "$work/iscsid" ./examples/iscsid
rbd -c "$ISCSIKIT_CEPH_CONF" create -p "$ISCSIKIT_CEPH_POOL" --size 256M "$image"
# gateway NAME LOCALTAG LOCALPORT LOCALSTATE REMOTETAG REMOTESTATE
gateway() {
  mkdir -p "$work/$1"
  cat >"$work/$1/config.json" <<CONFIG
{
  "version": 1,
  "global": {"basename": "iqn.2026-11.io.iscsikit", "alua": true},
  "portals": [
    {"id": 1, "tag": $2, "listen": [{"ip": "127.0.0.1", "port": $3}], "alua_state": "$4"},
    {"id": 2, "tag": $5, "remote": true, "alua_state": "$6"}
  ],
  "targets": [{"id": 1, "name": "ha", "groups": [{"portal": 1}, {"portal": 2}]}],
  "extents": [{"id": 1, "name": "ha0", "type": "RBD", "thin": true,
    "serial": "ha0serial0000001", "naa": "0x6001405a1b2c3d4e5f60718293a4b5c6",
    "params": {"pool": "$ISCSIKIT_CEPH_POOL", "image": "$image", "conf": "$ISCSIKIT_CEPH_CONF", "timeout": "30", "cache": "false"}}],
  "targetextents": [{"id": 1, "target": 1, "extent": 1, "lunid": 0}]
}
CONFIG
  "$work/iscsid" --state "$work/$1" 2>"$work/$1.log" &
  pids="${pids:-} $!"
  for _ in $(seq 200); do iscsi-ls "iscsi://127.0.0.1:$3" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "gateways.sh: gateway $1 does not answer on $3" >&2
  cat "$work/$1.log" >&2
  exit 1
}
gateway a 1 "$port" ACTIVE_OPTIMIZED 2 ACTIVE_NON_OPTIMIZED
gateway b 2 "$port2" ACTIVE_NON_OPTIMIZED 1 ACTIVE_OPTIMIZED
iqn=iqn.2026-11.io.iscsikit:ha
LOG="$work/cu.log" LIST=1 TESTS=${TESTS:-ALL.MultipathIO} bash "$shared/tools/conformance.sh" \
  "iscsi://127.0.0.1:$port/$iqn/0" "iscsi://127.0.0.1:$port2/$iqn/0" >"$work/cu.txt" || true
grep '^conformance:' "$work/cu.txt"
[ -n "${KEEP:-}" ] && cp "$work/cu.log" "$work/cu.txt" "$KEEP"/
bad=0
for t in Simple CompareAndWrite CompareAndWriteAsync Reset; do
  case ${TESTS:-ALL.MultipathIO} in ALL | ALL.MultipathIO | "ALL.MultipathIO.$t") ;; *) continue ;; esac
  grep -qx "pass MultipathIO.$t" "$work/cu.txt" || { echo "MultipathIO.$t did not pass through two gateways"; bad=1; }
done
# The failures of a single gateway (GetLBAStatus.UnmapSingle,
# iSCSIdatasn.iSCSIDataSnInvalid: see "Conformance and limits today") are
# not the two gateways' doing.
single='^(GetLBAStatus\.UnmapSingle|iSCSIdatasn\.iSCSIDataSnInvalid)$'
for t in $(sed -n 's/^fail //p' "$work/cu.txt"); do
  if [[ $t =~ $single ]]; then
    echo "fails on one gateway too: $t"
  else
    echo "fails through two gateways: $t"
    bad=1
  fi
done
exit $bad
