#!/usr/bin/env bash
# run.sh: two iscsid as two ALUA gateways of one file image (portal group 1
# active/optimized on 127.0.0.1:PORT, group 2 active/non-optimized on
# PORT+1, each knowing the other's as remote), and the real Linux initiator
# (open-iscsi and the kernel's scsi_dh_alua, in a QEMU guest built by the
# shared kernel-initiator tool) logged in to both. Then a failover: both
# config.json swap the states and iscsid re-reads them (SIGHUP). Checks that
# the kernel sees one device (the same wwid) through both paths, attaches
# the alua handler, reports the configured access state of each path
# before and after the failover, and reads through the optimized path; and
# that multipath-tools makes one map of both paths, grouped by priority
# (the optimized gateway's first; after the failover, the standby path a
# "ghost").
# env: PORT (default 3410), SHARED (default ../shared from the repository
# root), KINIT_CACHE (default /var/tmp/kinit), OUT (default a new
# /tmp/twogateways.*). Prints "twogateways: N passed, N failed"; exit 0 when
# nothing failed. Takes about 30 s under TCG (the first run also downloads
# the Debian packages above, about 80 MB).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."
port=${PORT:-3410}
port2=$((port + 1))
shared=${SHARED:-../shared}
if [ ! -d "$shared/tools/kernel-initiator" ] && [ -d ../../shared ]; then shared=../../shared; fi
C=${KINIT_CACHE:-/var/tmp/kinit}
KINIT_CACHE=$C "$shared/tools/kernel-initiator/build.sh" || { echo "twogateways: image build failed" >&2; exit 2; }
out=${OUT:-$(mktemp -d /tmp/twogateways.XXXXXX)}
mkdir -p "$out/extra"

# What the shared image leaves out, from the same Debian release, cached
# in $C/twogateways-KERNEL: the kernel's scsi_dh_alua and device-mapper
# multipath modules, multipath-tools' multipath, udevadm (as udevd) and
# their libraries.
kv=$(zstd -dc "$C/base.cpio.zst" | cpio -i --quiet --to-stdout etc/kinit-kernel)
x=$C/twogateways-$kv
if [ ! -e "$x/.done" ]; then
  rm -rf "$x" && mkdir -p "$x"/{mods,etc,usr/bin,usr/sbin,usr/lib/multipath,usr/lib/systemd,usr/lib/x86_64-linux-gnu}
  dl=$(mktemp -d)
  ( cd "$dl" && apt-get download -qq "linux-image-$kv" multipath-tools libdevmapper1.02.1 libaio1 liburcu8 \
      libjson-c5 libedit2 libsystemd0 libudev1 libbsd0 libmd0 udev libkmod2 libacl1 libblkid1 >/dev/null 2>&1 ) ||
    { echo "twogateways: apt-get download failed" >&2; rm -rf "$dl"; exit 2; }
  for m in scsi/device_handler/scsi_dh_alua md/dm-mod md/dm-multipath md/dm-service-time md/dm-round-robin; do
    dpkg-deb --fsys-tarfile "$dl"/linux-image-"$kv"_*.deb | tar -x -O --wildcards "*/drivers/$m.ko" >"$x/mods/${m##*/}.ko"
  done
  mkdir "$dl/s"
  for d in "$dl"/*.deb; do case $d in */linux-image-*) ;; *) dpkg-deb -x "$d" "$dl/s" ;; esac; done
  cp "$dl/s/sbin/multipath" "$x/usr/sbin/"
  cp "$dl/s/bin/udevadm" "$x/usr/bin/"
  ln -s /usr/bin/udevadm "$x/usr/lib/systemd/systemd-udevd"
  cp -a "$dl"/s/lib/*.so* "$x/usr/lib/"
  cp -a "$dl"/s/lib/multipath/*.so "$x/usr/lib/multipath/"
  cp -a "$dl"/s/lib/x86_64-linux-gnu/*.so* "$dl"/s/usr/lib/x86_64-linux-gnu/*.so* "$x/usr/lib/x86_64-linux-gnu/"
  # the host's copies of what they link and neither package set has
  for f in "$x/usr/sbin/multipath" "$x/usr/bin/udevadm" "$x"/usr/lib/*.so.0 "$x"/usr/lib/multipath/*.so "$x"/usr/lib/x86_64-linux-gnu/*.so.*; do
    LD_LIBRARY_PATH=$x/usr/lib:$x/usr/lib/x86_64-linux-gnu ldd "$f" 2>/dev/null
  done | awk '/=>/ && $3 ~ /^\// {print $3}' | grep -v "^$x" | sort -u | while read -r lib; do
    case ${lib##*/} in libc.so.*|libm.so.*) ;; *) cp -L "$lib" "$x/usr/lib/x86_64-linux-gnu/" ;; esac
  done
  rm -rf "$dl"
  touch "$x/.done"
fi
cp -a "$x/." "$out/extra/"
rm -f "$out/extra/.done"
cat >"$out/extra/etc/multipath.conf" <<'CONF'
defaults {
	find_multipaths no
	user_friendly_names no
}
devices {
	device {
		vendor "ISCSIKIT"
		product "VIRTUAL-DISK"
		hardware_handler "1 alua"
		prio alua
		path_grouping_policy group_by_prio
		path_checker tur
		failback immediate
	}
}
CONF

go build -o "$out/iscsid" ./examples/iscsid || exit 2
ext="\"type\": \"FILE\", \"path\": \"$out/ha0.img\", \"filesize\": 268435456, \"thin\": true, \"direct\": true, \"write_cache\": false"
# gateway NAME LOCALTAG LOCALPORT LOCALSTATE REMOTETAG REMOTESTATE
gateway() {
  mkdir -p "$out/$1"
  cat >"$out/$1/config.json" <<CONFIG
{
  "version": 1,
  "global": {"basename": "iqn.2026-11.io.example", "alua": true},
  "portals": [
    {"id": 1, "tag": $2, "listen": [{"ip": "127.0.0.1", "port": $3}], "alua_state": "$4"},
    {"id": 2, "tag": $5, "remote": true, "alua_state": "$6"}
  ],
  "targets": [{"id": 1, "name": "ha", "groups": [{"portal": 1}, {"portal": 2}]}],
  "extents": [{"id": 1, "name": "ha0", "serial": "ha0serial0000001", "naa": "0x6001405a1b2c3d4e5f60718293a4b5c6", $ext}],
  "targetextents": [{"id": 1, "target": 1, "extent": 1, "lunid": 0}]
}
CONFIG
}
gateway a 1 "$port" ACTIVE_OPTIMIZED 2 ACTIVE_NON_OPTIMIZED
gateway b 2 "$port2" ACTIVE_NON_OPTIMIZED 1 ACTIVE_OPTIMIZED
"$out/iscsid" --state "$out/a" --extent-dirs "$out" 2>"$out/a.log" & apid=$!
"$out/iscsid" --state "$out/b" --extent-dirs "$out" 2>"$out/b.log" & bpid=$!
trap 'kill $apid $bpid ${qpid:-} 2>/dev/null' EXIT
for p in "$port" "$port2"; do
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break; sleep 0.1; done
done

cp "$here/init.sh" "$out/extra/init"; chmod 755 "$out/extra/init"
printf 'PORTA=%s\nPORTB=%s\nIQN=iqn.2026-11.io.example:ha\n' "$port" "$port2" >"$out/extra/kinit.env"
( cd "$out/extra" && find . | cpio -o -H newc --quiet ) >"$out/initrd.img"
cat "$C/base.cpio.zst" >>"$out/initrd.img"
if [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ]; then acc=(-enable-kvm -cpu host); else acc=(-accel tcg,thread=multi -cpu max); fi
timeout 300 qemu-system-x86_64 "${acc[@]}" -smp 2 -m 1024 -nographic -monitor none -no-reboot \
  -kernel "$C/vmlinuz" -initrd "$out/initrd.img" -append "console=ttyS0 quiet panic=-1 rdinit=/init" \
  -nic user,model=virtio-net-pci </dev/null >"$out/console.log" 2>&1 & qpid=$!
for _ in $(seq 240); do grep -q 'KINIT failover-now' "$out/console.log" && break; sleep 1; done
gateway a 1 "$port" STANDBY 2 ACTIVE_OPTIMIZED
gateway b 2 "$port2" ACTIVE_OPTIMIZED 1 STANDBY
kill -HUP $apid $bpid
wait $qpid
rm -f "$out/initrd.img"
tr -d '\r' <"$out/console.log" | grep -E '^(KINIT|KDMESG)' >"$out/kinit.txt"

pass=0 fail=0
check() { # description grep-pattern
  if grep -qE "$2" "$out/kinit.txt"; then pass=$((pass + 1)); echo "  ok   $1"; else fail=$((fail + 1)); echo "  FAIL $1"; fi
}
check "scsi_dh_alua sees implicit TPGS" 'alua: supports implicit TPGS'
check "one wwid through both paths" "^KINIT before dev=sd. tpgt=1 wwid=naa.6001405a1b2c3d4e5f60718293a4b5c6 dh_state=alua"
check "path 2: same wwid, alua handler" "^KINIT before dev=sd. tpgt=2 wwid=naa.6001405a1b2c3d4e5f60718293a4b5c6 dh_state=alua"
check "before: group 1 active/optimized" '^KINIT before dev=sd. tpgt=1 .* access_state=active/optimized '
check "before: group 2 active/non-optimized" '^KINIT before dev=sd. tpgt=2 .* access_state=active/non-optimized '
check "the failover reaches the kernel" '^KINIT failover seen after'
check "after: group 1 standby" '^KINIT after dev=sd. tpgt=1 .* access_state=standby '
check "after: group 2 active/optimized" '^KINIT after dev=sd. tpgt=2 .* access_state=active/optimized '
check "reads through group 2" '^KINIT read tpgt=2 dev=sd. result=ok'
dev1=$(sed -n 's/^KINIT before dev=\(sd.\) tpgt=1 .*/\1/p' "$out/kinit.txt")
dev2=$(sed -n 's/^KINIT before dev=\(sd.\) tpgt=2 .*/\1/p' "$out/kinit.txt")
check "multipath: one map over both paths" '^KINIT mpll-before: 36001405a1b2c3d4e5f60718293a4b5c6 dm-[0-9]+ ISCSIKIT,VIRTUAL-DISK'
check "multipath before: group 1's path first, prio 50" "^KINIT mpll-before: \|-\+- policy=.* prio=50 .*"
check "multipath before: group 1's path is $dev1" "^KINIT mpll-before: \| \`- [0-9:]+ $dev1 .* active ready"
check "multipath before: group 2's path prio 10" "^KINIT mpll-before: \`-\+- policy=.* prio=10 "
check "multipath after: group 1's path a ghost (standby)" "^KINIT mpll-after: .* $dev1 .* ghost"
check "multipath after: group 2's path prio 50" "^KINIT mpll-after: .*prio=50"
check "multipath after: group 2's path $dev2 ready" "^KINIT mpll-after: .* $dev2 .* active ready"
grep '^KINIT mpll-' "$out/kinit.txt" | grep -vE '[0-9]+\.[0-9]+ \| ' | sed 's/^KINIT /  /'
grep -E 'alua:|Asymmetric' "$out/kinit.txt" | sed 's/^KDMESG /  kernel: /'
echo "  log: $out/kinit.txt"
echo "twogateways: $pass passed, $fail failed"
[ $fail -eq 0 ]
