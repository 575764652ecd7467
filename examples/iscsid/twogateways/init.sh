#!/bin/sh
# /init of the kernel-ALUA guest (busybox ash; run.sh packs it with
# /kinit.env and scsi_dh_alua.ko over the kernel-initiator image). It logs
# in to two gateways of one LU (10.0.2.2:PORTA, portal group 1, and
# 10.0.2.2:PORTB, group 2) with open-iscsi, reports what the kernel's
# scsi_dh_alua makes of each path (KINIT before/after lines: tpgt, wwid,
# dh_state, access_state), prints RTPG and VPD 0x83 as sg3-utils decode
# them, lets multipath (multipath-tools, with udevd and dm-multipath) make
# its map of the paths, says "KINIT failover-now" for the host to swap the
# groups' states, waits (TEST UNIT READY on both paths each second) until
# the kernel reports group 1 standby and group 2 active/optimized, and
# shows multipath's map again. No multipathd: `multipath -ll` shows the
# path groups and priorities the daemon would act on.
export PATH=/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/lock/iscsi
. /kinit.env
emit() { echo "KINIT $*"; }
finish() { dmesg | grep -iE 'alua|sd |scsi|iscsi' | sed 's/^/KDMESG /'; emit done; sync; poweroff -f; sleep 10; }
( sleep 200; emit watchdog; finish ) &
while read -r ko; do insmod "$ko" 2>/dev/null; done </etc/kinit-modules
for m in scsi_dh_alua dm-mod dm-multipath dm-service-time dm-round-robin; do insmod /mods/$m.ko || emit "insmod $m failed"; done
# libdevmapper makes its own /dev/mapper nodes: udevd here has no rules.
mkdir -p /dev/mapper /etc/multipath; export DM_DISABLE_UDEV=1
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up && ip route add default via 10.0.2.2
printf 'InitiatorName=iqn.2026-11.io.kinit:guest\n' >/etc/iscsi/initiatorname.iscsi
sed -i 's|^iscsid.startup = .*|iscsid.startup = /bin/true|' /etc/iscsi/iscsid.conf
/usr/lib/systemd/systemd-udevd --daemon 2>&1 | sed 's/^/KINIT udevd: /'
iscsid -f >/tmp/iscsid.log 2>&1 &
sleep 1
iscsiadm -m node -o new -T "$IQN" -p "10.0.2.2:$PORTA,1" >/dev/null
iscsiadm -m node -o new -T "$IQN" -p "10.0.2.2:$PORTB,2" >/dev/null
iscsiadm -m node -T "$IQN" -L all 2>&1 | sed 's/^/KINIT login: /'
i=0; while [ "$(ls -d /sys/block/sd* 2>/dev/null | wc -l)" -lt 2 ] && [ $i -lt 100 ]; do sleep 0.2; i=$((i+1)); done
sleep 2
tpgt_of() { s=$(readlink -f "/sys/block/$1/device" | grep -o 'session[0-9]*' | head -1); cat "/sys/class/iscsi_session/$s/tpgt"; }
report() {
  for d in /sys/block/sd*; do
    n=${d##*/}
    emit "$1 dev=$n tpgt=$(tpgt_of $n) wwid=$(cat $d/device/wwid) dh_state=$(cat $d/device/dh_state) access_state=$(cat $d/device/access_state) preferred_path=$(cat $d/device/preferred_path 2>/dev/null) vendor=$(cat $d/device/vendor | tr -d ' ') model=$(cat $d/device/model | tr -d ' ')"
  done
}
report before
for d in /sys/block/sd*; do
  n=${d##*/}
  sg_rtpg -d /dev/$n 2>&1 | sed "s/^/KINIT rtpg $n: /"
done
n=$(ls /sys/block | grep sd | head -1)
sg_vpd -p di /dev/$n 2>&1 | sed "s/^/KINIT vpd83 $n: /"
# multipath takes only devices udev has seen; the WWID comes from sysfs
# (VPD 0x83), since no rule sets ID_SERIAL.
udevadm trigger --action=add; udevadm settle -t 20
multipath -v2 >/tmp/mp.log 2>&1; emit "multipath rc=$?"
multipath -ll 2>&1 | sed 's/^/KINIT mpll-before: /'
emit failover-now
want=0; i=0
while [ $i -lt 90 ]; do
  sleep 1; i=$((i+1))
  for d in /sys/block/sd*; do
    n=${d##*/}
    sg_turs /dev/$n >/dev/null 2>&1
  done
  ok=1
  for d in /sys/block/sd*; do
    n=${d##*/}; t=$(tpgt_of $n); a=$(cat $d/device/access_state)
    case "$t:$a" in 1:standby|2:active/optimized) ;; *) ok=0 ;; esac
  done
  [ $ok = 1 ] && { emit "failover seen after ${i}s"; break; }
done
report after
sleep 1; multipath -ll 2>&1 | sed 's/^/KINIT mpll-after: /'

for d in /sys/block/sd*; do
  n=${d##*/}; t=$(tpgt_of $n)
  if dd if=/dev/$n of=/dev/null bs=4096 count=16 iflag=direct 2>/dev/null; then r=ok; else r=error; fi
  emit "read tpgt=$t dev=$n result=$r"
done
iscsiadm -m node -U all >/dev/null 2>&1
finish
