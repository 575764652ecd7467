#!/usr/bin/env bash
# run.sh: two iscsid as two ALUA gateways of one file image (portal group 1
# active/optimized on 127.0.0.1:PORT, group 2 active/non-optimized on
# PORT+1, each knowing the other's as remote), and the real Linux initiator
# (open-iscsi and the kernel's scsi_dh_alua, in a QEMU guest built by the
# shared kernel-initiator tool) logged in to both. Then a failover: both
# config.json swap the states and iscsid re-reads them (SIGHUP). Checks that
# the kernel sees one device (the same wwid) through both paths, attaches
# the alua handler, reports the configured access state of each path
# before and after the failover, and reads through the optimized path.
# env: PORT (default 3410), SHARED (default ../shared from the repository
# root), KINIT_CACHE (default /var/tmp/kinit), OUT (default a new
# /tmp/twogateways.*). Prints "twogateways: N passed, N failed"; exit 0 when
# nothing failed. Takes about 20 s under TCG.
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

# scsi_dh_alua is a module of the image's kernel that the shared image
# leaves out: take it from the same Debian kernel package.
kv=$(zstd -dc "$C/base.cpio.zst" | cpio -i --quiet --to-stdout etc/kinit-kernel)
ko=$C/scsi_dh_alua-$kv.ko
if [ ! -s "$ko" ]; then
  ( cd "$out" && apt-get download -qq "linux-image-$kv" >/dev/null 2>&1 ) || { echo "twogateways: cannot download linux-image-$kv" >&2; exit 2; }
  dpkg-deb --fsys-tarfile "$out"/linux-image-"$kv"_*.deb | tar -x -O --wildcards '*/scsi_dh_alua.ko' >"$ko.tmp" && mv "$ko.tmp" "$ko"
  rm -f "$out"/linux-image-*.deb
fi
cp "$ko" "$out/extra/scsi_dh_alua.ko"

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
grep -E 'alua:|Asymmetric' "$out/kinit.txt" | sed 's/^KDMESG /  kernel: /'
echo "  log: $out/kinit.txt"
echo "twogateways: $pass passed, $fail failed"
[ $fail -eq 0 ]
