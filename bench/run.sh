#!/usr/bin/env bash
# Side-by-side loopback benchmark: iscsid (this tree) against Linux tgt, both
# serving a 1 GiB sparse file from the same temporary directory, measured by
# ../shared/tools/qbench.sh (qemu-img bench over libiscsi) in one run.
#
# usage: bench/run.sh [ROUNDS]           (default 3)
# env:   PORT=3340      iscsid portal port
#        TGT_PORT=3360  tgt portal port
#        WORKDIR=DIR    where the images live (default: a new temporary directory)
#        URLOPTS=...    appended to both URLs, e.g. '?header_digest=crc32c' is NOT
#                       how libiscsi asks for digests; see README "Benchmarks"
#        PPROF=ADDR     start iscsid with --pprof ADDR (e.g. 127.0.0.1:6060)
#        SHARED=DIR     the shared tools directory (default ../shared, else ../../shared)
# Prints qbench's table (speedup = tgt/ours, above 1 means iscsid is faster)
# and iscsid's peak resident memory (VmHWM) over the whole run.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
port=${PORT:-3340}
tport=${TGT_PORT:-3360}
shared=${SHARED:-../shared}
if [ ! -x "$shared/tools/qbench.sh" ] && [ -d ../../shared ]; then shared=../../shared; fi
[ -f "$shared/tools/qbench.sh" ] || { echo "bench: qbench.sh not found under $shared/tools" >&2; exit 2; }
shared=$(cd "$shared" && pwd)

own=0
work=${WORKDIR:-}
if [ -z "$work" ]; then work=$(mktemp -d); own=1; fi
pid=; tpid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  [ -n "$tpid" ] && kill "$tpid" 2>/dev/null
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
bash "$shared/tools/qbench.sh" "$ours${URLOPTS:-}" "$peer${URLOPTS:-}" "$rounds"
echo "# iscsid $(grep VmHWM /proc/$pid/status | tr -s ' \t' ' '), load $(cut -d' ' -f1-3 /proc/loadavg)"
