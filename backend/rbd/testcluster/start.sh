#!/usr/bin/env bash
# start.sh [DIR]: starts a throw-away one-node Ceph cluster on 127.0.0.1 for
# the ceph-tagged tests: one monitor, one bluestore OSD on a sparse file and
# a pool "rbd" of size 1, everything (config, keys, data, logs, sockets)
# under DIR (default: a new temporary directory). No ceph-mgr unless
# CEPH_MGR=1: librbd and the rbd CLI need only the monitor and the OSD,
# and the mgr costs memory; only pool statistics (ceph df) need it.
#
# It installs Debian's packages when they are missing, and prints the
# environment the tests read (also written to DIR/env):
#   ISCSIKIT_CEPH_CONF  the cluster's ceph.conf (names the admin keyring)
#   ISCSIKIT_CEPH_POOL  the pool for test images
#   ISCSIKIT_CEPH_DIR   DIR, for stop.sh
#   ISCSIKIT_CEPH_MGR   1 when a ceph-mgr runs (CEPH_MGR=1), else 0
# Memory: the OSD is held to osd_memory_target (768 MiB) with a small
# bluestore cache; the monitor's rocksdb cache is cut to 64 MiB.
set -euo pipefail

need=()
for p in ceph-mon:ceph-mon ceph-osd:ceph-osd ceph:ceph-common rbd:ceph-common; do
  command -v "${p%%:*}" >/dev/null || need+=("${p#*:}")
done
dpkg -s librbd-dev librados-dev >/dev/null 2>&1 || need+=(librbd-dev librados-dev)
if [ "${CEPH_MGR:-0}" = 1 ]; then command -v ceph-mgr >/dev/null || need+=(ceph-mgr); fi
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
fi

dir=${1:-$(mktemp -d /tmp/iscsikit-ceph.XXXXXX)}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [ -e "$dir/ceph.conf" ]; then
  echo "start.sh: $dir already holds a cluster; run stop.sh $dir first" >&2
  exit 1
fi
MON_V2=${CEPH_MON_V2_PORT:-3300}
MON_V1=${CEPH_MON_V1_PORT:-6789}
OSD_SIZE=${CEPH_OSD_SIZE:-10G}
mkdir -p "$dir"/{run,log,mon/a,osd/0}
fsid=$(uuidgen)
conf=$dir/ceph.conf
cat >"$conf" <<CONF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$MON_V2,v1:127.0.0.1:$MON_V1]
public addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $dir/admin.keyring
run dir = $dir/run
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
mon cluster log file = $dir/log/cluster.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
# The tests and the backend must see a lost OSD as an error, not a hang.
rados osd op timeout = 30
rados mon op timeout = 30

[mon]
admin socket = $dir/run/\$name.asok
mon data = $dir/mon/\$cluster-\$id
mon rocksdb options = write_buffer_size=16777216,compression=kNoCompression
mon data avail warn = 1
mon data avail crit = 1

[mgr]
admin socket = $dir/run/\$name.asok
mgr data = $dir/mgr/\$cluster-\$id
keyring = $dir/mgr/\$cluster-\$id/keyring
mgr stats period = 1

[osd]
admin socket = $dir/run/\$name.asok
osd data = $dir/osd/\$id
keyring = $dir/osd/\$id/keyring
osd objectstore = bluestore
bluestore block create = true
bluestore block size = $(numfmt --from=iec "$OSD_SIZE")
bluestore block db create = false
bluestore block wal create = false
osd memory target = 805306368
osd memory base = 268435456
osd memory cache min = 134217728
bluestore cache autotune = false
bluestore cache size = 134217728
bluestore fsck on mkfs = false
bluestore fsck on mount = false
osd op num shards = 2
osd op num threads per shard = 2
osd max object name len = 256
osd max object namespace len = 64
CONF

ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool --create-keyring "$dir/admin.keyring" --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/admin.keyring" >/dev/null
monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$MON_V2,v1:127.0.0.1:$MON_V1]" "$dir/monmap" >/dev/null
ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring"
ceph-mon -c "$conf" -i a </dev/null >>"$dir/log/daemons.out" 2>&1

c() { timeout 60 ceph -c "$conf" "$@"; }
c -s >/dev/null

osd_uuid=$(uuidgen)
id=$(c osd new "$osd_uuid")
c auth get-or-create "osd.$id" mon 'allow profile osd' osd 'allow *' mgr 'allow profile osd' \
  -o "$dir/osd/$id/keyring" >/dev/null
ceph-osd -c "$conf" -i "$id" --mkfs --osd-uuid "$osd_uuid" 2>"$dir/log/osd-mkfs.log" ||
  { cat "$dir/log/osd-mkfs.log" >&2; exit 1; }
ceph-osd -c "$conf" -i "$id" </dev/null >>"$dir/log/daemons.out" 2>&1

# CEPH_MGR=1 adds a ceph-mgr: the pool statistics ceph df shows (which an
# RBD pool's size in pool_list comes from) are the manager's. It costs
# about 150 MiB and a few seconds.
if [ "${CEPH_MGR:-0}" = 1 ]; then
  mkdir -p "$dir/mgr/ceph-x"
  c auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' -o "$dir/mgr/ceph-x/keyring" >/dev/null
  ceph-mgr -c "$conf" -i x </dev/null >>"$dir/log/daemons.out" 2>&1
fi

c osd pool create rbd 16 16 replicated >/dev/null
c osd pool set rbd size 1 --yes-i-really-mean-it >/dev/null
timeout 60 rbd -c "$conf" pool init rbd

# Wait until the pool takes a write: only then are its placement groups
# active. (ceph pg stat would need a ceph-mgr, which this cluster does
# without.)
ok=
for _ in $(seq 120); do
  if timeout 10 rados -c "$conf" -p rbd put start-probe "$conf" 2>/dev/null; then ok=1; break; fi
  sleep 0.5
done
[ -n "$ok" ] || { c -s >&2; echo "start.sh: pool rbd never took a write" >&2; exit 1; }
rados -c "$conf" -p rbd rm start-probe

if [ "${CEPH_MGR:-0}" = 1 ]; then
  # The manager reports the pool once it has the OSD's statistics.
  ok=
  for _ in $(seq 120); do
    if c df -f json 2>/dev/null | grep -q '"name":"rbd"'; then ok=1; break; fi
    sleep 0.5
  done
  [ -n "$ok" ] || { echo "start.sh: ceph df never reported pool rbd" >&2; exit 1; }
fi

cat >"$dir/env" <<ENV
export ISCSIKIT_CEPH_DIR=$dir
export ISCSIKIT_CEPH_CONF=$conf
export ISCSIKIT_CEPH_POOL=rbd
export ISCSIKIT_CEPH_MGR=${CEPH_MGR:-0}
ENV
cat "$dir/env"
