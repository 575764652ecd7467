#!/usr/bin/env bash
# Side-by-side loopback benchmark: iscsid (this tree) against Linux tgt, both
# serving a 1 GiB sparse file from the same temporary directory, measured by
# ../shared/tools/qbench.sh (qemu-img bench over libiscsi) in one run.
#
# usage: bench/run.sh [ROUNDS]           (default 3)
# env:   PORT=3340      iscsid portal port
#        TGT_PORT=3360  tgt portal port
#        WORKDIR=DIR    where the images live (default: a new temporary directory)
#        DIGEST_ROUNDS=5  rounds of the digest comparison (0 skips it)
#        PPROF=ADDR     start iscsid with --pprof ADDR (e.g. 127.0.0.1:6060)
#        SHARED=DIR     the shared tools directory (default ../shared, else ../../shared)
#        RBD=1          also the RBD rows: iscsid built with -tags ceph on an RBD
#                       extent against tgt's bs_rbd (Debian tgt-rbd), each on a
#                       1 GiB image of the same Ceph cluster, named by
#                       ISCSIKIT_CEPH_CONF and ISCSIKIT_CEPH_POOL (source the env
#                       of backend/rbd/testcluster/start.sh); RBD_PORT=PORT+2 and
#                       RBD_TGT_PORT=TGT_PORT+2 are their portals
# Prints qbench's table (speedup = tgt/ours, above 1 means iscsid is faster),
# then 64 KiB reads at queue depth 32 with and without a CRC32C header digest
# (libiscsi, hence qemu, negotiates HeaderDigest only: it never offers
# DataDigest; data digests are covered by BenchmarkLoopback in package
# iscsi), and iscsid's peak resident memory (VmHWM) over the whole run.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
port=${PORT:-3340}
tport=${TGT_PORT:-3360}
shared=${SHARED:-../shared}
if [ ! -f "$shared/tools/qbench.sh" ] && [ -d ../../shared ]; then shared=../../shared; fi
[ -f "$shared/tools/qbench.sh" ] || { echo "bench: qbench.sh not found under $shared/tools" >&2; exit 2; }
shared=$(cd "$shared" && pwd)

own=0
work=${WORKDIR:-}
if [ -z "$work" ]; then work=$(mktemp -d); own=1; fi
pid=; tpid=; rpid=; rtpid=; rimages=()
stop_tgt() { # tgtd may ignore SIGTERM while it has targets
  kill "$1" 2>/dev/null
  for _ in $(seq 20); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null
}
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  [ -n "$tpid" ] && stop_tgt "$tpid"
  [ -n "$rpid" ] && kill "$rpid" 2>/dev/null && wait "$rpid" 2>/dev/null
  [ -n "$rtpid" ] && stop_tgt "$rtpid"
  for i in "${rimages[@]}"; do rbd -c "$ISCSIKIT_CEPH_CONF" rm -p "$ISCSIKIT_CEPH_POOL" "$i" >/dev/null 2>&1; done
  [ "$own" = 1 ] && rm -rf "$work"
  return 0
}
trap cleanup EXIT

go build -o "$work/iscsid" ./examples/iscsid
args=(--state "$work/state" --portal "127.0.0.1:$port")
[ -n "${PPROF:-}" ] && args+=(--pprof "$PPROF")
"$work/iscsid" "${args[@]}" 2>"$work/iscsid.log" &
pid=$!
ours="iscsi://127.0.0.1:$port/iqn.2026-11.io.iscsikit:default/0"
for _ in $(seq 100); do iscsi-ls "iscsi://127.0.0.1:$port" >/dev/null 2>&1 && break; sleep 0.1; done
peer=$(bash "$shared/tools/tgt-peer.sh" "$tport" "$work/tgt.img" 1G)
tpid=$(cat "$work/tgt.img.pid")

echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
bash "$shared/tools/qbench.sh" "$ours" "$peer" "$rounds"

# Header digest cost: qemu's iscsi driver takes header-digest only as an
# option, so the digest run names the LUN with a json: filename.
drounds=${DIGEST_ROUNDS:-5}
if [ "$drounds" -gt 0 ]; then
  dig='json:{"driver":"raw","file":{"driver":"iscsi","transport":"tcp","portal":"127.0.0.1:'$port'","target":"iqn.2026-11.io.iscsikit:default","lun":0,"header-digest":"crc32c"}}'
  once() {
    local s
    s=$(timeout 120 qemu-img bench -f raw -t none -c 16000 -d 32 -s 65536 "$1" 2>&1 | sed -n 's/Run completed in \([0-9.]*\) seconds./\1/p') || true
    echo "${s:-999}"
  }
  median() { sort -g | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }
  plain=(); digest=()
  for _ in $(seq "$drounds"); do plain+=("$(once "$ours")"); digest+=("$(once "$dig")"); done
  mp=$(printf '%s\n' "${plain[@]}" | median); md=$(printf '%s\n' "${digest[@]}" | median)
  printf '%-14s %9s %9s %8.2f   (plain_s digest_s plain/digest)\n' read64k-hdig "$mp" "$md" "$(awk -v a="$md" -v b="$mp" 'BEGIN{print b/a}')"
fi
echo "# iscsid $(grep VmHWM /proc/$pid/status | tr -s ' \t' ' '), load $(cut -d' ' -f1-3 /proc/loadavg)"

# RBD rows: the same workloads on Ceph. iscsid serves an RBD extent (librbd
# asynchronous I/O through backend/rbd), tgt serves its own image through
# bs_rbd; both images are 1 GiB in the same pool of the same cluster, and
# the two run in turn as above, so the cluster's speed cancels out.
if [ -n "${RBD:-}" ]; then
  : "${ISCSIKIT_CEPH_CONF:?RBD=1 needs ISCSIKIT_CEPH_CONF (backend/rbd/testcluster/start.sh)}" "${ISCSIKIT_CEPH_POOL:?}"
  [ -e /usr/lib/tgt/backing-store/bs_rbd.so ] || { echo "bench: tgt's bs_rbd is missing (apt-get install tgt-rbd)" >&2; exit 2; }
  rport=${RBD_PORT:-$((port + 2))}
  rtport=${RBD_TGT_PORT:-$((tport + 2))}
  ours_img=bench-iscsid-$$ tgt_img=bench-tgt-$$
  for i in "$ours_img" "$tgt_img"; do
    rbd -c "$ISCSIKIT_CEPH_CONF" create -p "$ISCSIKIT_CEPH_POOL" -s 1G "$i"
    rimages+=("$i")
  done
  go build -tags ceph -o "$work/iscsid-rbd" ./examples/iscsid
  mkdir -p "$work/rbdstate"
  cat >"$work/rbdstate/config.json" <<CONFIG
{
  "version": 1,
  "global": {"basename": "iqn.2026-11.io.iscsikit"},
  "portals": [{"id": 1, "tag": 1, "listen": [{"ip": "127.0.0.1", "port": $rport}]}],
  "targets": [{"id": 1, "name": "default", "groups": [{"portal": 1}]}],
  "extents": [{"id": 1, "name": "rbd0", "type": "RBD", "blocksize": 512, "thin": true, "write_cache": true,
    "params": {"pool": "$ISCSIKIT_CEPH_POOL", "image": "$ours_img", "conf": "$ISCSIKIT_CEPH_CONF"}}],
  "targetextents": [{"id": 1, "target": 1, "extent": 1, "lunid": 0}]
}
CONFIG
  "$work/iscsid-rbd" --state "$work/rbdstate" 2>"$work/iscsid-rbd.log" &
  rpid=$!
  rours="iscsi://127.0.0.1:$rport/iqn.2026-11.io.iscsikit:default/0"
  for _ in $(seq 100); do iscsi-ls "iscsi://127.0.0.1:$rport" >/dev/null 2>&1 && break; sleep 0.1; done
  ctl=$((rtport % 32000 + 500))
  tgtd -f -C "$ctl" --iscsi portal=127.0.0.1:"$rtport" >"$work/tgt-rbd.log" 2>&1 &
  rtpid=$!
  for _ in $(seq 50); do tgtadm -C "$ctl" --lld iscsi --mode target --op show >/dev/null 2>&1 && break; sleep 0.1; done
  tgtadm -C "$ctl" --lld iscsi --mode target --op new --tid 1 -T iqn.2026-11.peer.tgt:rbd
  tgtadm -C "$ctl" --lld iscsi --mode logicalunit --op new --tid 1 --lun 1 --bstype rbd \
    --backing-store "$ISCSIKIT_CEPH_POOL/$tgt_img" --bsopts "conf=$ISCSIKIT_CEPH_CONF;id=admin"
  tgtadm -C "$ctl" --lld iscsi --mode target --op bind --tid 1 -I ALL
  rpeer="iscsi://127.0.0.1:$rtport/iqn.2026-11.peer.tgt:rbd/1"
  echo "# RBD: iscsid+RBD (ours) against tgt bs_rbd (peer), one Ceph cluster; load $(cut -d' ' -f1-3 /proc/loadavg)"
  bash "$shared/tools/qbench.sh" "$rours" "$rpeer" "${RBD_ROUNDS:-$rounds}" | sed '2,$s/^/rbd-/'
  echo "# iscsid+RBD $(grep VmHWM /proc/$rpid/status | tr -s ' \t' ' ')"
fi
