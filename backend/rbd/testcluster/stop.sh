#!/usr/bin/env bash
# stop.sh [DIR]: stops the cluster start.sh started in DIR (default:
# $ISCSIKIT_CEPH_DIR) and removes DIR. Safe to run twice.
set -uo pipefail
dir=${1:-${ISCSIKIT_CEPH_DIR:-}}
[ -n "$dir" ] || { echo "usage: stop.sh DIR" >&2; exit 2; }
[ -d "$dir" ] || exit 0
pids=()
for f in "$dir"/run/*.pid; do
  [ -e "$f" ] || continue
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null && pids+=("$pid")
done
for pid in "${pids[@]}"; do
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
done
case $dir in
  /tmp/iscsikit-ceph.*|*/ceph-cluster) rm -rf "$dir" ;;
  *) [ -f "$dir/ceph.conf" ] && rm -rf "$dir" ;;
esac
