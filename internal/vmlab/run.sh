#!/bin/sh
# Boots one Debian kernel under QEMU (TCG: nested KVM hangs on these
# machines; single-threaded TCG, because with one host thread per vCPU a
# guest patching its own code (static keys, when an XDP program is
# attached) was seen to hit a half-written int3 on the other vCPU and
# oops in __netif_receive_skb_core, 6.12 in a CI run) and runs a plan of steps in it (see guest.sh). The guest gets the
# host's root filesystem read-only over 9p, OUT read-write for results, and
# three pairs of virtio-net NICs, each pair wired to itself:
#   nic0/nic1  transitional virtio-net (QEMU's default), one queue, QEMU hub
#   mq0/mq1    transitional virtio-net, 4 queue pairs (mq=on) over
#              multi-queue taps bridged in a namespace of the host's own
#              (no address; removed afterwards)
#   zc0/zc1    modern-only virtio-net with iommu_platform=on (DMA API, so
#              the driver can bind AF_XDP zero-copy from 6.x on), QEMU hub
# Usage: run.sh KERNEL STEPS OUT, KERNEL as fetch.sh takes it, STEPS lines
# "<name> <timeout-seconds> <dir> <command...>". VMLAB_TIMEOUT (seconds,
# default 3600) bounds the whole guest; VMLAB_MEM (MiB, default 3072). The
# console (console.txt) shows every kernel message (loglevel=7), and a soft
# lockup panics the guest (softlockup_panic=1, panic=-1: QEMU exits), so a
# stuck kernel leaves its stack there instead of idling to the timeout.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
kernel=$1 steps=$2 out=$3
cache=${VMLAB_CACHE:-/var/cache/virtif-xdp}
set -- $(sh "$here/fetch.sh" "$kernel")
rel=$2 kdir=$3
initrd=$cache/initramfs/$rel.cpio.gz
mkdir -p "$cache/initramfs" "$out"
if [ ! -f "$initrd" ] || [ "$here/init.sh" -nt "$initrd" ] || [ "$here/initramfs.sh" -nt "$initrd" ] || [ "$kdir/.done" -nt "$initrd" ]; then
	sh "$here/initramfs.sh" "$kdir" "$rel" "$initrd.new"
	mv "$initrd.new" "$initrd"
fi
rm -f "$out"/*.out "$out"/*.rc "$out"/guest.txt "$out"/console.txt
{
	echo "KDIR=$kdir"
	echo "NIC nic0 52:54:00:5a:00:01"
	echo "NIC nic1 52:54:00:5a:00:02"
	echo "NIC mq0 52:54:00:5a:01:01"
	echo "NIC mq1 52:54:00:5a:01:02"
	echo "NIC zc0 52:54:00:5a:02:01"
	echo "NIC zc1 52:54:00:5a:02:02"
	cat "$steps"
} > "$out/plan"

ns=vmlab-$$
ip netns add "$ns"
trap 'ip netns del "$ns" 2>/dev/null' EXIT INT TERM
inns() { ip netns exec "$ns" "$@"; }
inns ip link add vmlbr type bridge
for t in vmlm0 vmlm1; do
	inns ip tuntap add dev "$t" mode tap multi_queue
	inns ip link set "$t" master vmlbr up
done
inns ip link set vmlbr up

echo "vmlab: booting $rel (console in $out/console.txt)" >&2
start=$(date +%s)
rc=0
inns timeout -k 10 "${VMLAB_TIMEOUT:-3600}" qemu-system-x86_64 \
	-accel tcg,thread=single -smp 2 -m "${VMLAB_MEM:-3072}" -nographic -no-reboot -nodefaults \
	-serial stdio -kernel "$kdir/boot/vmlinuz-$rel" -initrd "$initrd" \
	-append "console=ttyS0 panic=-1 loglevel=7 softlockup_panic=1 vmlab.script=$here/guest.sh" \
	-virtfs local,path=/,mount_tag=root,security_model=none,readonly=on,multidevs=remap \
	-virtfs "local,path=$out,mount_tag=out,security_model=none" \
	-netdev hubport,id=n0,hubid=0 -device virtio-net-pci,netdev=n0,mac=52:54:00:5a:00:01 \
	-netdev hubport,id=n1,hubid=0 -device virtio-net-pci,netdev=n1,mac=52:54:00:5a:00:02 \
	-netdev tap,id=m0,ifname=vmlm0,script=no,downscript=no,vhost=off,queues=4 \
	-device virtio-net-pci,netdev=m0,mac=52:54:00:5a:01:01,mq=on,vectors=10 \
	-netdev tap,id=m1,ifname=vmlm1,script=no,downscript=no,vhost=off,queues=4 \
	-device virtio-net-pci,netdev=m1,mac=52:54:00:5a:01:02,mq=on,vectors=10 \
	-netdev hubport,id=z0,hubid=1 \
	-device virtio-net-pci,netdev=z0,mac=52:54:00:5a:02:01,iommu_platform=on,disable-legacy=on \
	-netdev hubport,id=z1,hubid=1 \
	-device virtio-net-pci,netdev=z1,mac=52:54:00:5a:02:02,iommu_platform=on,disable-legacy=on \
	> "$out/console.txt" 2>&1 < /dev/null || rc=$?
echo "vmlab: $rel powered off after $(($(date +%s) - start)) s (qemu exit $rc)" >&2
[ "$rc" -eq 0 ] || { tail -n 30 "$out/console.txt" >&2; exit 1; }
